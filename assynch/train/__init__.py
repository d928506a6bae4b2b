"""Training: the per-worker loop (plain torch, no Ray) and its helpers. Ray Train runs it from
pipelines/train.py; `assynch.train.local.run_local` runs it in-process. See docs/TRAINING.md."""
