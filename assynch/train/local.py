"""Run the training loop in this process without Ray: one worker, shards read with
`ShardDataset`, checkpoints in a local folder. For tests, notebooks and debugging; production
runs go through pipelines/train.py (Ray Train), which calls the same `train_worker`."""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from assynch.config import AssynchConfig
from assynch.shards.dataset import ShardDataset
from assynch.shards.sets import resolve_shard_sets
from assynch.train.checkpoint import TrainProgress
from assynch.train.env import Batches, WorkerEnv
from assynch.train.inputs import BATCH_COLUMNS
from assynch.train.loop import train_worker

CHECKPOINT_PATTERN = re.compile(r"^checkpoint_(\d{6})$")


def local_checkpoints(run_folder: Path) -> list[Path]:
    if not run_folder.is_dir():
        return []
    found = [p for p in run_folder.iterdir() if CHECKPOINT_PATTERN.match(p.name)]
    return sorted(found)


def run_local(
    config: AssynchConfig,
    run_folder: str | Path,
    *,
    sample_log: Callable[[dict[str, Any]], None] | None = None,
) -> TrainProgress:
    """Train in-process on the shard sets of `train.shards` (checked like the Ray job does);
    continues from the latest checkpoint in `run_folder` if there is one."""
    sets = resolve_shard_sets(config.train.shards, config.storage)
    config = config.model_copy(update={"train": config.train.model_copy(update={
        "shards": sets.as_value()})})
    train = config.train
    run_folder = Path(run_folder)
    run_folder.mkdir(parents=True, exist_ok=True)

    def dataset(split: str, shuffle: bool) -> ShardDataset:
        return ShardDataset(sets.urls, split, batch_size=train.batch_size,
                            storage=config.storage, columns=list(BATCH_COLUMNS),
                            shuffle=shuffle, seed=train.seed)

    train_set = dataset(train.train_split, shuffle=True)
    val_set = dataset(train.val_split, shuffle=False) if train.val_split else None

    def batches(data: ShardDataset) -> Callable[[int], Batches]:
        def for_epoch(epoch: int) -> Batches:
            data.set_epoch(epoch)
            return iter(data)
        return for_epoch

    def report(metrics: dict[str, Any], checkpoint: str | None) -> None:
        if checkpoint is None:
            return
        target = run_folder / f"checkpoint_{int(metrics['epoch']):06d}"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(checkpoint, target)
        for old in local_checkpoints(run_folder)[: -train.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)

    @contextlib.contextmanager
    def latest() -> Iterator[str | None]:
        found = local_checkpoints(run_folder)
        yield str(found[-1]) if found else None

    env = WorkerEnv(
        rank=0, world_size=1, device=torch.device("cpu"),
        train_batches=batches(train_set),
        val_batches=batches(val_set) if val_set is not None else None,
        report=report, latest_checkpoint=latest, train_samples=train_set.num_rows(),
        sample_log=sample_log,
    )
    return train_worker(config, env)
