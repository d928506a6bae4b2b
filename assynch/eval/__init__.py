"""Metrics (one implementation) and the evaluation job's logic (docs/EVALUATION.md)."""
