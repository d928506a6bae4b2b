"""Fixtures of the evaluation tests: real shard sets made by the preprocessing job, tiny model
checkpoints (the real `mlflow server` is tests/conftest.py's session fixture)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from eval_support import SAMPLES_PER_VIDEO, VIDEOS, EvalShards, save_tiny_model
from preprocess_support import preprocess_config, write_inputs

from assynch.preprocess.job import run_local


@pytest.fixture(scope="session")
def eval_shards(tmp_path_factory: pytest.TempPathFactory) -> EvalShards:
    root = tmp_path_factory.mktemp("eval_shards")
    write_inputs(root / "videos", good=VIDEOS, bad=False)
    splits = "{train: 0.0, val: 0.0, test: 1.0}"
    config = preprocess_config(str(root / "videos"), str(root / "shards"), splits=splits,
                               samples_per_video=SAMPLES_PER_VIDEO)
    run_local(config, isolate=False)
    (root / "one").mkdir()
    shutil.copy(root / "videos" / "good0.mp4", root / "one" / "good0.mp4")
    other = preprocess_config(str(root / "one"), str(root / "other"), splits=splits,
                              samples_per_video=1)
    other = other.model_copy(update={"time": other.time.model_copy(
        update={"stream_hop_sec": 2.0})})
    run_local(other, isolate=False)
    return EvalShards(url=str(root / "shards"), config=config, other_time_base=str(root / "other"))


@pytest.fixture(scope="session")
def tiny_checkpoint(eval_shards: EvalShards, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(eval_shards, tmp_path_factory.mktemp("model") / "model.pt")
