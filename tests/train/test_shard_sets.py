"""pipelines.train on several shard sets (the DAG's batch partitions): the rows of every finished
set are trained on, an unfinished one is skipped and logged, a set of another time base is
refused before Ray starts."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from preprocess_support import good_clip
from train_support import CLIP_SEC, REPO, shard_overrides, train_config

from assynch.config import load_config
from assynch.errors import UserError
from pipelines.train import run


@pytest.fixture(scope="module")
def batches(ray_local: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`batches/b1`: a second finished set made by the real preprocessing job (2 clips, both
    in the train split); `batches/b2`: a set still being written (no manifest)."""
    from pipelines.preprocess import run as preprocess

    root = tmp_path_factory.mktemp("batch_sets")
    clips = root / "clips"
    clips.mkdir()
    for index in range(2):
        good_clip(clips / f"batchclip{index}.mp4", seed=100 + index, duration_sec=CLIP_SEC)
    preprocess(load_config(REPO / "configs" / "quickstart.yaml",
                           shard_overrides(clips, root / "batches" / "b1")))
    (root / "batches" / "b2" / "train").mkdir(parents=True)
    return root / "batches"


def _train_ids(shards: Path) -> list[str]:
    return [i for f in sorted((shards / "train").glob("*.parquet"))
            for i in pq.read_table(f, columns=["sample_id"]).column("sample_id").to_pylist()]


def test_training_reads_every_finished_set_and_skips_an_unfinished_one(
    train_shards: dict[str, Any], batches: Path, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    audit = tmp_path / "audit"
    audit.mkdir()
    shards = json.dumps([train_shards["shards"], f"{batches}/*"])
    config = train_config(train_shards["shards"], str(tmp_path / "runs"), f"train.shards={shards}",
                          "train.epochs=1", "train.num_workers=1", "train.run_name=two-sets")
    with caplog.at_level(logging.INFO):
        result = run(config, audit_dir=str(audit))
    assert result.error is None
    first, second = _train_ids(Path(train_shards["shards"])), _train_ids(batches / "b1")
    assert first and second
    (record,) = [json.loads(line) for line in (audit / "rank0.jsonl").read_text().splitlines()]
    assert sorted(record["sample_ids"]) == sorted(first + second)  # every row of both sets once
    assert f"skipping {batches / 'b2'}" in caplog.text


def test_a_set_of_another_time_base_is_refused_naming_it(
    train_shards: dict[str, Any], batches: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    shutil.copytree(batches / "b1", other)
    manifest = json.loads((other / "_manifest.json").read_text())
    manifest["config"]["time"]["stream_hop_sec"] = 2.0
    (other / "_manifest.json").write_text(json.dumps(manifest))
    shards = json.dumps([train_shards["shards"], str(other)])
    config = train_config(train_shards["shards"], str(tmp_path / "runs"), f"train.shards={shards}")
    with pytest.raises(UserError) as error:
        run(config)
    message = str(error.value)
    assert str(other) in message and "time.stream_hop_sec=2.0" in message
    assert "preprocess" in message and message.count("\n") == 0  # one line, with the fix
