"""How every job module connects to Ray: the cluster of RAY_ADDRESS (as under `ray job submit`,
which also hands the job its token when the head uses token auth), or a fresh local one.

    connect(num_cpus, progress_bars=True)   # pipelines/preprocess.py, pipelines/evaluate.py
    connect(num_cpus, progress_bars=False)  # pipelines/train.py (its loop logs progress itself)

Workers' output goes to the driver's stderr (`log_to_driver`): the DAG runner writes a local
job's stderr to a log file and keeps the screen for the job's summary (docs/DAG.md).
"""

from __future__ import annotations

import os

import ray
import ray.data


def connect(num_cpus: int | None = None, *, progress_bars: bool = True) -> None:
    """Join RAY_ADDRESS's cluster or start a local one (`num_cpus` only applies to a local
    one); a no-op for the Ray connection when this process is already connected. Sets Ray
    Data's progress bars either way."""
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(log_to_driver=True)
        else:  # "local": a fresh cluster, even where a stale `ray start` left its address
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                     log_to_driver=True)
    ray.data.DataContext.get_current().enable_progress_bars = progress_bars


def cluster_cpus() -> float:
    """The CPUs of the connected cluster."""
    return float(ray.cluster_resources().get("CPU", 0.0))
