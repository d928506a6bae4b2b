"""Start a job module of `pipelines/` (preprocess, train, evaluate) as its own process.

The library never imports the Ray pipelines: the CLI and the quickstart run the very module that
`ray job submit -- python -m pipelines.<job>` runs, with the same arguments, so there is one way
to start each job and one parser of its flags.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence


def run_job_module(job: str, args: Sequence[str]) -> int:
    """Run `python -m pipelines.<job> ARGS` in this Python; returns its exit code."""
    return subprocess.call([sys.executable, "-m", f"pipelines.{job}", *args])
