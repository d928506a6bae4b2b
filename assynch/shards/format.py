"""The Parquet shard contract: layout, schema, and rows as Arrow (the writer is `writer.py`,
the reader `reader.py`, torch batches `dataset.py`).

One row per stream sample. The `frames` column holds T frames of uint8 (H, W, 3), stored by
`frame_format`:

- `raw` (default): a fixed-size list of T fixed-size binary values, each one frame's H*W*3
  bytes. Parquet writes one value per frame, so this reads and writes ~10x faster than
  `tensor` (docs/BENCHMARKS.md); `frames_to_numpy` turns it into (N, T, H, W, 3) without a copy.
- `tensor`: pyarrow's canonical fixed-shape tensor (`arrow.fixed_shape_tensor`, uint8,
  [T, H, W, 3]), which pyarrow, pandas and Ray turn into ndarrays by themselves; Parquet stores
  it as a list of H*W*3*T single bytes, each with its own repetition/definition level.
- `jpeg`: a fixed-size list of T JPEG images (DESIGN.md's choice for Ego4D-scale sets).

The log-mel is a canonical fixed-shape float16 tensor (n_mels, F). Every form opens with plain
pyarrow. The schema metadata records the frame format and shapes; `_manifest.json` beside the
splits records the rest.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from assynch.config import AssynchConfig
from assynch.errors import UserError
from assynch.samples.plan import sample_audio_samples, sample_frames

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MANIFEST_NAME = "_manifest.json"
SCALAR_COLUMNS = (
    "video_uid", "sample_id", "split", "offset_sec", "offset_class", "start_sec",
    "audio_start_sec", "audio_margin_sec", "config_hash",
)
FrameFormat = Literal["raw", "tensor", "jpeg"]


class ShardError(UserError, ValueError):
    """Shards that are missing, incomplete, or not in the expected format."""


@dataclass(frozen=True)
class ShardLayout:
    """The fixed shapes of one shard set (all rows of a config share them)."""

    frames_shape: tuple[int, int, int, int]
    mel_shape: tuple[int, int]
    windows_per_sample: int
    frame_format: FrameFormat = "raw"
    jpeg_quality: int = 90


@dataclass
class SampleRow:
    """One stream sample, ready to be written."""

    video_uid: str
    sample_id: str
    split: str
    offset_sec: float
    offset_class: int
    start_sec: float
    window_starts_sec: Sequence[float]
    audio_start_sec: float
    audio_margin_sec: float
    frames: np.ndarray
    mel: np.ndarray
    config_hash: str


def frames_type(layout: ShardLayout) -> pa.DataType:
    count, height, width, channels = layout.frames_shape
    if layout.frame_format == "jpeg":
        return pa.list_(pa.binary(), count)
    if layout.frame_format == "tensor":
        return pa.fixed_shape_tensor(pa.uint8(), list(layout.frames_shape))
    return pa.list_(pa.binary(height * width * channels), count)


def shard_schema(layout: ShardLayout, metadata: dict[str, str] | None = None) -> pa.Schema:
    fields = [
        pa.field("video_uid", pa.string(), nullable=False),
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("offset_sec", pa.float32(), nullable=False),
        pa.field("offset_class", pa.int32(), nullable=False),
        pa.field("start_sec", pa.float64(), nullable=False),
        pa.field(
            "window_starts_sec", pa.list_(pa.float64(), layout.windows_per_sample), nullable=False
        ),
        pa.field("audio_start_sec", pa.float64(), nullable=False),
        pa.field("audio_margin_sec", pa.float32(), nullable=False),
        pa.field("frames", frames_type(layout), nullable=False),
        pa.field("mel", pa.fixed_shape_tensor(pa.float16(), list(layout.mel_shape)),
                 nullable=False),
        pa.field("config_hash", pa.string(), nullable=False),
    ]
    full_metadata = {
        "assynch.frame_format": layout.frame_format,
        "assynch.frames_shape": json.dumps(list(layout.frames_shape)),
        "assynch.mel_shape": json.dumps(list(layout.mel_shape)),
        **(metadata or {}),
    }
    return pa.schema(fields, metadata=full_metadata)


def rows_to_table(rows: Sequence[SampleRow], schema: pa.Schema, layout: ShardLayout) -> pa.Table:
    """Build one Arrow table from sample rows, checking every array's shape and dtype."""
    for row in rows:
        _check_row(row, layout)
    frames = frames_array([row.frames for row in rows], layout)
    mel = _tensor_array([row.mel for row in rows], layout.mel_shape, np.float16)
    columns: dict[str, pa.Array] = {}
    for name in schema.names:
        if name == "frames":
            columns[name] = frames
        elif name == "mel":
            columns[name] = mel
        elif name == "window_starts_sec":
            columns[name] = pa.array(
                [[float(s) for s in row.window_starts_sec] for row in rows],
                schema.field(name).type,
            )
        else:
            columns[name] = pa.array([getattr(row, name) for row in rows],
                                     schema.field(name).type)
    return pa.Table.from_pydict(columns, schema=schema)


def frames_array(samples: Sequence[np.ndarray], layout: ShardLayout) -> pa.Array:
    """The `frames` column for samples of uint8 (T, H, W, 3), in the layout's frame format."""
    if layout.frame_format == "jpeg":
        return pa.array(
            [[encode_jpeg(frame, layout.jpeg_quality) for frame in frames] for frames in samples],
            frames_type(layout),
        )
    if layout.frame_format == "tensor":
        return _tensor_array(samples, layout.frames_shape, np.uint8)
    count, height, width, channels = layout.frames_shape
    if len(samples) == 1:  # the usual case (rows are written one by one): no copy
        stacked = np.ascontiguousarray(samples[0]).reshape(1, *layout.frames_shape)
    else:
        stacked = np.ascontiguousarray(
            np.stack(samples) if samples else np.zeros((0, *layout.frames_shape), np.uint8)
        )
    frame_bytes = height * width * channels
    values = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(frame_bytes), len(samples) * count, [None, pa.py_buffer(stacked)]
    )
    return pa.FixedSizeListArray.from_arrays(values, count)


def _tensor_array(
    arrays: Sequence[np.ndarray], shape: Sequence[int], dtype: type[np.generic]
) -> pa.Array:
    stacked = np.stack(arrays).astype(dtype, copy=False) if arrays else np.zeros(
        (0, *shape), dtype
    )
    return pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(stacked))


def _check_row(row: SampleRow, layout: ShardLayout) -> None:
    if tuple(row.frames.shape) != layout.frames_shape or row.frames.dtype != np.uint8:
        raise ShardError(
            f"sample {row.video_uid}/{row.sample_id}: frames are {row.frames.dtype} "
            f"{tuple(row.frames.shape)}, the shard layout needs uint8 {layout.frames_shape}"
        )
    if tuple(row.mel.shape) != layout.mel_shape:
        raise ShardError(
            f"sample {row.video_uid}/{row.sample_id}: mel is {tuple(row.mel.shape)}, the shard "
            f"layout needs {layout.mel_shape}"
        )
    if len(row.window_starts_sec) != layout.windows_per_sample:
        raise ShardError(
            f"sample {row.video_uid}/{row.sample_id}: {len(row.window_starts_sec)} window "
            f"starts, the shard layout needs {layout.windows_per_sample}"
        )


def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def shard_layout(config: AssynchConfig) -> ShardLayout:
    """The shapes every row of a config's shard set has."""
    time, audio, pre = config.time, config.audio, config.preprocess
    mel_frames = 1 + sample_audio_samples(time, pre.audio_margin_sec) // audio.hop_length
    crop = config.video.crop
    return ShardLayout(
        frames_shape=(sample_frames(time), crop, crop, 3),
        mel_shape=(audio.n_mels, mel_frames),
        windows_per_sample=time.windows_per_sample,
        frame_format=pre.frame_format,
        jpeg_quality=pre.jpeg_quality,
    )


def layout_description(config: AssynchConfig) -> dict[str, Any]:
    """The layout as the manifest records it (JSON-friendly)."""
    layout = shard_layout(config)
    return {
        "frames_shape": list(layout.frames_shape),
        "frames_dtype": "uint8",
        "frame_format": layout.frame_format,
        "mel_shape": list(layout.mel_shape),
        "mel_dtype": "float16",
        "mel_hop_sec": config.audio.hop_length / config.time.sample_rate,
        "fps": config.time.fps,
        "sample_rate": config.time.sample_rate,
        "windows_per_sample": config.time.windows_per_sample,
        "audio_margin_sec": config.preprocess.audio_margin_sec,
    }
