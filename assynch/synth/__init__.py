"""Synthetic egocentric clips with known events (quickstart, tests, benchmarks)."""
