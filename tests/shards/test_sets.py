"""Several shard sets read as one (`assynch.shards.sets`): lists, `ROOT/*`, unfinished sets
skipped, one contract (no Ray; manifests written by hand, shard files by ShardWriter)."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assynch.config import StorageConfig
from assynch.shards.dataset import ShardDataset
from assynch.shards.format import MANIFEST_NAME, SampleRow, ShardError, ShardLayout, shard_schema
from assynch.shards.sets import contract_of, resolve_shard_sets
from assynch.shards.writer import ShardWriter
from assynch.storage import filesystem

MANIFEST: dict[str, Any] = {
    "format": 1,
    "config_hash": "abc",
    "config": {"time": {"fps": 25.0, "stream_hop_sec": 2.4}, "video": {"crop": 32},
               "audio": {"n_mels": 128}, "preprocess": {"samples_per_video": 1}},
    "layout": {"frames_shape": [6, 8, 8, 3], "frames_dtype": "uint8", "frame_format": "raw",
               "mel_shape": [4, 11], "mel_dtype": "float16", "mel_hop_sec": 0.01, "fps": 25.0,
               "sample_rate": 16000, "windows_per_sample": 2, "audio_margin_sec": 2.0},
    "splits": {"train": {"samples": 2}, "val": {"samples": 0}, "test": {"samples": 0}},
}


def make_set(folder: Path, manifest: dict[str, Any] | None = None, rows: int = 2,
             video: str = "vid") -> Path:
    """A finished shard set: one train file of `rows` rows and `manifest`."""
    layout = ShardLayout(frames_shape=(6, 8, 8, 3), mel_shape=(4, 11), windows_per_sample=2)
    fs, path = filesystem(str(folder / "train" / "part-0.parquet"), StorageConfig())
    with ShardWriter(fs, path, shard_schema(layout), layout, 2) as writer:
        for index in range(rows):
            writer.write_row(SampleRow(
                video_uid=video, sample_id=f"{video}-{index}", split="train", offset_sec=0.0,
                offset_class=10, start_sec=1.0, window_starts_sec=[1.0, 3.4],
                audio_start_sec=1.0, audio_margin_sec=2.0,
                frames=np.zeros(layout.frames_shape, np.uint8),
                mel=np.zeros(layout.mel_shape, np.float16), config_hash="abc",
            ))
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest or MANIFEST))
    return folder


def test_a_list_and_a_root_star_give_every_finished_set_and_skip_unfinished_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = make_set(tmp_path / "shards", video="a")
    make_set(tmp_path / "shards" / "batches" / "b1", video="b1")
    make_set(tmp_path / "shards" / "batches" / "b2", video="b2")
    (tmp_path / "shards" / "batches" / "b3" / "train").mkdir(parents=True)  # still running
    (tmp_path / "shards" / "batches" / ".hidden").mkdir()
    root = f"{tmp_path / 'shards' / 'batches'}/*"
    with caplog.at_level(logging.WARNING, logger="assynch.shards.sets"):
        sets = resolve_shard_sets([str(first), root, str(tmp_path / "shards" / "batches" / "b1")])
    assert [Path(u).name for u in sets.urls] == ["shards", "b1", "b2"]  # b1 once, b3 skipped
    assert sets.samples("train") == 6
    assert len(sets.files("train")) == 3
    assert "b3" in caplog.text and "not finished" in caplog.text and ".hidden" not in caplog.text
    ids = [i for batch in ShardDataset(sets.urls, "train", batch_size=4)
           for i in batch["sample_id"]]
    assert sorted({i.split("-")[0] for i in ids}) == ["a", "b1", "b2"]
    assert ShardDataset(sets.urls, "train").num_rows() == 6


def test_no_finished_set_and_a_root_without_star_are_refused_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "batches" / "b1" / "train").mkdir(parents=True)
    with pytest.raises(ShardError, match="no finished shard set under"):
        resolve_shard_sets(f"{tmp_path / 'batches'}/*")
    make_set(tmp_path / "batches" / "b2")
    with pytest.raises(ShardError, match=r"batches/\*"):  # the hint: ROOT/*
        resolve_shard_sets(str(tmp_path / "batches"))
    with pytest.raises(ShardError, match="mixes storages"):
        resolve_shard_sets([str(tmp_path / "batches" / "b2"), "s3://bucket/shards"])


@pytest.mark.parametrize(("path", "value", "named"), [
    (("config", "time", "stream_hop_sec"), 2.0, "time.stream_hop_sec=2.0"),
    (("layout", "frame_format"), "jpeg", "layout.frame_format='jpeg'"),
])
def test_sets_of_another_contract_are_refused_naming_the_set_and_the_fix(
    tmp_path: Path, path: tuple[str, ...], value: Any, named: str
) -> None:
    other = copy.deepcopy(MANIFEST)
    target = other
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    good = make_set(tmp_path / "good")
    bad = make_set(tmp_path / "bad", other)
    with pytest.raises(ShardError) as error:
        resolve_shard_sets([str(good), str(bad)])
    message = str(error.value)
    assert str(bad) in message and named in message and "preprocess" in message
    # sampling settings may differ: not part of the contract
    relaxed = copy.deepcopy(MANIFEST)
    relaxed["config"]["preprocess"]["samples_per_video"] = 4
    relaxed["layout"]["audio_margin_sec"] = 3.0
    assert contract_of(relaxed) == contract_of(MANIFEST)
