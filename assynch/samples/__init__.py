"""Stream samples: offsets, the sample plan (numpy), the streaming cutter, and model inputs."""
