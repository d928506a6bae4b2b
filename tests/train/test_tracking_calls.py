"""The loop's side of the tracking contract (assynch.tracking is built in parallel): a stand-in
module records what rank 0 calls, with which arguments."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from train_support import train_config

from assynch.models import load_model_checkpoint
from assynch.train.local import run_local


class RecordingRun:
    calls: list[tuple[str, Any]] = []

    def __init__(self, config: Any, run_name: str | None = None,
                 tags: dict[str, str] | None = None) -> None:
        self.run_id = "run-123"
        RecordingRun.calls.append(("init", {"run_name": run_name, "tags": tags}))

    def __enter__(self) -> RecordingRun:
        return self

    def __exit__(self, *exc: Any) -> None:
        RecordingRun.calls.append(("exit", exc[0]))

    def log_shard_dataset(self, shards_url: str, split: str, manifest: dict) -> None:
        RecordingRun.calls.append(("dataset", (shards_url, split, manifest["config_hash"])))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        RecordingRun.calls.append(("metrics", (dict(metrics), step)))

    def log_epoch_metrics(self, metrics: dict[str, float], epoch: int) -> None:
        RecordingRun.calls.append(("epoch", (dict(metrics), epoch)))

    def log_artifact(self, local_path: str, artifact_path: str | None = None) -> None:
        RecordingRun.calls.append(("artifact", (Path(local_path).read_text(), artifact_path)))

    def log_curves_and_confusion(self, history: list[dict], confusion: np.ndarray,
                                 best_epoch: int) -> None:
        RecordingRun.calls.append(("curves", (len(history), confusion.copy(), best_epoch)))

    def log_and_register_model(self, model_checkpoint_path: str, config: Any,
                               metrics: dict[str, float]) -> str:
        model, _ = load_model_checkpoint(model_checkpoint_path)
        RecordingRun.calls.append(("model", (model.state_dict(), dict(metrics))))
        return "registered as-synchformer v1"


def test_rank0_logs_datasets_metrics_curves_and_the_best_model(
    train_shards: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = types.ModuleType("assynch.tracking")
    fake.TrainingRun = RecordingRun  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "assynch.tracking", fake)
    RecordingRun.calls = []
    config = train_config(train_shards["shards"], str(tmp_path), "train.tracking=true",
                          "train.epochs=2", "train.max_steps_per_epoch=2")
    progress = run_local(config, tmp_path / "run")
    kinds = [kind for kind, _ in RecordingRun.calls]
    assert kinds[0] == "init" and kinds[-1] == "exit" and RecordingRun.calls[-1][1] is None
    assert progress.tracking_run_id == "run-123"
    datasets = [args for kind, args in RecordingRun.calls if kind == "dataset"]
    manifest_hash = train_shards["manifest"]["config_hash"]
    assert datasets == [(train_shards["shards"], "train", manifest_hash),
                        (train_shards["shards"], "val", manifest_hash)]
    (config_text, folder), = [args for kind, args in RecordingRun.calls if kind == "artifact"]
    assert folder == "config" and "\nstorage:" not in config_text and "\ntrain:" in config_text
    steps = [args for kind, args in RecordingRun.calls if kind == "metrics"]
    assert [step for _, step in steps] == [1, 2, 3, 4]  # log_every_steps=1
    assert {"step/cross_entropy", "step/emd", "step/samples_per_sec",
            "step/data_wait_share", "lr/heads"} <= set(steps[0][0])
    epochs = [args for kind, args in RecordingRun.calls if kind == "epoch"]
    assert [epoch for _, epoch in epochs] == [1, 2]
    assert all("@" not in name for metrics, _ in epochs for name in metrics)
    (count, confusion, best_epoch), = [a for kind, a in RecordingRun.calls if kind == "curves"]
    assert count == 2 and best_epoch == progress.best_epoch
    assert confusion.shape == (21, 21) and confusion.dtype == np.int64
    assert confusion.sum() == train_shards["manifest"]["splits"]["val"]["samples"]
    (state, metrics), = [args for kind, args in RecordingRun.calls if kind == "model"]
    assert metrics["epoch"] == progress.best_epoch
    best = torch.load(tmp_path / "run" / f"checkpoint_{progress.best_epoch:06d}" / "model.pt",
                      weights_only=True)["state_dict"]
    assert all(torch.equal(best[k], v) for k, v in state.items())
