"""Media in: PyAV decoding and torchaudio log-mel features (the only av/torchaudio importers)."""
