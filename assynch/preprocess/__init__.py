"""The preprocessing job's logic: inputs (Ego4D, folders, s3://), plan, worker, compaction
and report, all free of torch and PyAV, and the per-video step (`video.py`) that runs in the
decoding child."""
