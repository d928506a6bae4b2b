"""The shard format: schema, atomic writer, and the torch reader (no Ray involved)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from assynch.config import StorageConfig
from assynch.shards.dataset import ShardDataset
from assynch.shards.format import MANIFEST_NAME, SampleRow, ShardError, ShardLayout, shard_schema
from assynch.shards.reader import frames_to_numpy, list_shards
from assynch.shards.writer import ShardWriter
from assynch.storage import filesystem

LAYOUT = ShardLayout(frames_shape=(6, 8, 8, 3), mel_shape=(4, 11), windows_per_sample=2)


def make_row(index: int, layout: ShardLayout = LAYOUT, video: str = "vid") -> SampleRow:
    rng = np.random.default_rng(index)
    return SampleRow(
        video_uid=video,
        sample_id=f"{video}-{index:03d}",
        split="train",
        offset_sec=round((index % 21 - 10) * 0.2, 6),
        offset_class=index % 21,
        start_sec=1.0 + index,
        window_starts_sec=[1.0 + index, 3.4 + index],
        audio_start_sec=index - 1.0,
        audio_margin_sec=2.0,
        frames=rng.integers(0, 256, layout.frames_shape, dtype=np.uint8),
        mel=rng.normal(size=layout.mel_shape).astype(np.float16),
        config_hash="abc",
    )


def write(path: Path, rows: list[SampleRow], layout: ShardLayout = LAYOUT, group: int = 2) -> None:
    fs, fs_path = filesystem(str(path), StorageConfig())
    with ShardWriter(fs, fs_path, shard_schema(layout), layout, group) as writer:
        for row in rows:
            writer.write_row(row)


def finished_set(root: Path, files: dict[str, list[list[SampleRow]]]) -> Path:
    for split, shards in files.items():
        for index, rows in enumerate(shards):
            write(root / split / f"shard-{index:05d}.parquet", rows)
    (root / MANIFEST_NAME).write_text(json.dumps({"splits": {}}))
    return root


def test_raw_shard_holds_one_binary_value_per_frame(tmp_path: Path) -> None:
    rows = [make_row(i) for i in range(5)]
    path = tmp_path / "s.parquet"
    write(path, rows, group=2)
    parquet = pq.ParquetFile(path)
    assert parquet.metadata.num_row_groups == 3
    table = parquet.read()
    assert table.schema.field("frames").type == pa.list_(pa.binary(8 * 8 * 3), 6)
    assert table.schema.metadata[b"assynch.frame_format"] == b"raw"
    group = parquet.metadata.row_group(0)
    codecs = {group.column(i).path_in_schema: group.column(i).compression
              for i in range(group.num_columns)}
    assert codecs["frames.list.element"] == "LZ4"
    assert codecs["mel.list.element"] == codecs["video_uid"] == "ZSTD"
    frames = frames_to_numpy(table.column("frames"), (8, 8, 3))
    mel = table.column("mel").combine_chunks().to_numpy_ndarray()
    assert frames.shape == (5, 6, 8, 8, 3) and frames.dtype == np.uint8
    assert isinstance(table.schema.field("mel").type, pa.FixedShapeTensorType)
    assert mel.dtype == np.float16
    for i, row in enumerate(rows):
        assert np.array_equal(frames[i], row.frames)
        assert np.array_equal(mel[i], row.mel)
    sliced = table.slice(3, 2)  # offsets inside the buffers must be honoured
    assert np.array_equal(frames_to_numpy(sliced.column("frames"), (8, 8, 3))[1], rows[4].frames)
    assert table.column("sample_id").to_pylist() == [r.sample_id for r in rows]
    assert table.column("window_starts_sec").to_pylist()[3] == [4.0, 6.4]


def test_tensor_shard_opens_with_plain_pyarrow_as_canonical_tensors(tmp_path: Path) -> None:
    layout = ShardLayout(frames_shape=(6, 8, 8, 3), mel_shape=(4, 11), windows_per_sample=2,
                         frame_format="tensor")
    rows = [make_row(i, layout) for i in range(3)]
    write(tmp_path / "s.parquet", rows, layout)
    table = pq.read_table(tmp_path / "s.parquet")
    frames_type = table.schema.field("frames").type
    assert isinstance(frames_type, pa.FixedShapeTensorType)
    assert frames_type.extension_name == "arrow.fixed_shape_tensor"
    assert list(frames_type.shape) == [6, 8, 8, 3]
    frames = table.column("frames").combine_chunks().to_numpy_ndarray()
    assert np.array_equal(frames, np.stack([r.frames for r in rows]))
    assert np.array_equal(frames_to_numpy(table.column("frames")), frames)


def test_jpeg_frames_decode_close_to_the_originals(tmp_path: Path) -> None:
    layout = ShardLayout(frames_shape=(3, 32, 32, 3), mel_shape=(4, 11), windows_per_sample=2,
                         frame_format="jpeg", jpeg_quality=95)
    smooth = np.tile(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], (32, 1, 3))
    row = make_row(0, layout)
    row.frames = np.stack([smooth, smooth[::-1], np.roll(smooth, 5, axis=1)])
    write(tmp_path / "train" / "shard-00000.parquet", [row], layout)
    (tmp_path / MANIFEST_NAME).write_text("{}")
    table = pq.read_table(tmp_path / "train" / "shard-00000.parquet")
    assert pa.types.is_fixed_size_list(table.schema.field("frames").type)
    batch = next(iter(ShardDataset(str(tmp_path), "train", batch_size=1)))
    assert batch["frames"].shape == (1, 3, 32, 32, 3)
    error = (batch["frames"][0].float() - torch.from_numpy(row.frames).float()).abs().mean()
    assert error < 3.0


def test_writer_rejects_wrong_shapes_and_leaves_nothing_behind(tmp_path: Path) -> None:
    bad = make_row(0)
    bad.frames = bad.frames[:5]
    target = tmp_path / "s.parquet"
    with pytest.raises(ShardError, match=r"frames are uint8 \(5, 8, 8, 3\)"):
        write(target, [make_row(1), make_row(2), bad])
    assert list(tmp_path.iterdir()) == []


def test_shard_is_invisible_until_closed(tmp_path: Path) -> None:
    fs, path = filesystem(str(tmp_path / "train" / "s.parquet"), StorageConfig())
    writer = ShardWriter(fs, path, shard_schema(LAYOUT), LAYOUT, 1)
    writer.write_row(make_row(0))
    writer.write_row(make_row(1))
    assert list_shards(str(tmp_path), "train") == []
    assert not (tmp_path / "train" / "s.parquet").exists()
    assert writer.close() == 2
    assert list_shards(str(tmp_path), "train") == [str(tmp_path / "train" / "s.parquet")]
    assert [p.name for p in (tmp_path / "train").iterdir()] == ["s.parquet"]


def test_dataset_batches_all_rows_and_divides_files_between_ranks(tmp_path: Path) -> None:
    rows = [make_row(i) for i in range(7)]
    root = finished_set(tmp_path, {"train": [rows[:3], rows[3:6], rows[6:]]})
    dataset = ShardDataset(str(root), "train", batch_size=2)
    batches = list(dataset)
    assert [len(b["sample_id"]) for b in batches] == [2, 2, 2, 1]
    first = batches[0]
    assert first["frames"].dtype == torch.uint8 and first["frames"].shape == (2, 6, 8, 8, 3)
    assert first["mel"].dtype == torch.float32 and first["mel"].shape == (2, 4, 11)
    assert first["offset_class"].dtype == torch.int64
    assert torch.equal(first["frames"][1], torch.from_numpy(rows[1].frames))
    assert torch.allclose(first["mel"][0], torch.from_numpy(rows[0].mel.astype(np.float32)))
    seen = [s for b in batches for s in b["sample_id"]]
    assert seen == [r.sample_id for r in rows]

    rank_ids = []
    for rank in range(2):
        part = ShardDataset(str(root), "train", batch_size=4, rank=rank, world_size=2)
        rank_ids.append([s for b in part for s in b["sample_id"]])
    assert sorted(rank_ids[0] + rank_ids[1]) == sorted(seen)
    assert not set(rank_ids[0]) & set(rank_ids[1])

    shuffled = ShardDataset(str(root), "train", batch_size=3, shuffle=True, seed=1)
    first_epoch = [s for b in shuffled for s in b["sample_id"]]
    shuffled.set_epoch(1)
    second_epoch = [s for b in shuffled for s in b["sample_id"]]
    assert sorted(first_epoch) == sorted(seen) == sorted(second_epoch)
    assert first_epoch != seen or second_epoch != seen


def test_dataset_refuses_unfinished_or_missing_shards(tmp_path: Path) -> None:
    write(tmp_path / "train" / "shard-00000.parquet", [make_row(0)])
    with pytest.raises(ShardError, match="has no _manifest.json"):
        ShardDataset(str(tmp_path), "train")
    (tmp_path / MANIFEST_NAME).write_text("{}")
    with pytest.raises(ShardError, match="no shards for split 'val'"):
        ShardDataset(str(tmp_path), "val")
    with pytest.raises(ShardError, match="unknown split"):
        ShardDataset(str(tmp_path), "dev")
