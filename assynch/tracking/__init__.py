"""MLflow helpers: runs, model logging, registry, aliases, loading (evaluation.py: evaluation runs,
promotion and comparison)."""
