"""The training loop's side of MLflow tracking: `assynch.tracking` (rank 0 only), behind a small
protocol so the loop runs with tracking off (`train.tracking: false`) and in tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

from assynch.config import AssynchConfig
from assynch.tracking import TrainingRun, check_tracking_server, resolve_tracking_uri


class Tracker(Protocol):
    """The subset of `assynch.tracking.TrainingRun` the loop uses."""

    run_id: str

    def log_shard_dataset(self, shards_url: str, split: str, manifest: dict) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def log_epoch_metrics(self, metrics: dict[str, float], epoch: int) -> None: ...

    def log_artifact(self, local_path: str, artifact_path: str | None = None) -> None: ...

    def log_curves_and_confusion(
        self, history: list[dict], confusion: np.ndarray, best_epoch: int
    ) -> None: ...

    def log_and_register_model(
        self, model_checkpoint_path: str, config: AssynchConfig, metrics: dict[str, float]
    ) -> Any: ...


def check_tracking(config: AssynchConfig) -> str | None:
    """Before any worker starts: the tracking URI, checked to be reachable (None when off)."""
    if not config.train.tracking:
        return None
    uri = resolve_tracking_uri(config)
    check_tracking_server(uri)
    return uri


@contextlib.contextmanager
def open_tracker(
    config: AssynchConfig, *, rank: int, run_id: str | None, tags: dict[str, str]
) -> Iterator[Tracker | None]:
    """rank 0 with tracking on: a TrainingRun (after a restart or --resume, the same MLflow run
    again: `run_id` comes from the checkpoint); otherwise None."""
    if rank != 0 or not config.train.tracking:
        yield None
        return
    with TrainingRun(config, run_name=config.train.run_name, tags=tags, run_id=run_id) as run:
        yield run
