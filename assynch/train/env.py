"""What a training worker gets from whoever runs it (Ray Train in pipelines/train.py, or the plain
local runner in assynch/train/local.py). The loop itself never imports Ray."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

Batches = Iterable[Mapping[str, Any]]


@dataclass
class WorkerEnv:
    """One worker's view of the run.

    train_batches(epoch) / val_batches(epoch): this rank's share of the split for that epoch
      (columns as numpy arrays or tensors; see assynch.train.inputs.BATCH_COLUMNS). Together the
      ranks see every sample exactly once; the shares may differ in size.
    report(metrics, checkpoint_folder): called by every rank once per epoch (a barrier under Ray
      Train); rank 0 passes the local folder of the checkpoint it just wrote, the others None.
    latest_checkpoint(): a context manager giving the local folder of the checkpoint to continue
      from (after a restart or with --resume), or None for a fresh run.
    sample_log(record): optional audit hook, called by every rank after each epoch with the
      sample ids it trained on and a digest of its parameters.
    """

    rank: int
    world_size: int
    device: torch.device
    train_batches: Callable[[int], Batches]
    val_batches: Callable[[int], Batches] | None
    report: Callable[[dict[str, Any], str | None], None]
    latest_checkpoint: Callable[[], contextlib.AbstractContextManager[str | None]]
    train_samples: int
    sample_log: Callable[[dict[str, Any]], None] | None = None


@contextlib.contextmanager
def no_checkpoint() -> Iterator[str | None]:
    yield None
