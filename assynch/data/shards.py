"""The Parquet shard format: schema, atomic writer, and a reader that yields torch batches.

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
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec import AbstractFileSystem

from assynch.config import StorageConfig
from assynch.storage import atomic_local_file, filesystem, is_temp_name, join

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MANIFEST_NAME = "_manifest.json"
SCALAR_COLUMNS = (
    "video_uid", "sample_id", "split", "offset_sec", "offset_class", "start_sec",
    "audio_start_sec", "audio_margin_sec", "config_hash",
)
FrameFormat = Literal["raw", "tensor", "jpeg"]


class ShardError(ValueError):
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


# ---------------------------------------------------------------------------------------------
# Writing


def column_compression(
    schema: pa.Schema, compression: str, frames_compression: str
) -> dict[str, str]:
    """Codec per Parquet leaf column (nested columns are named `frames.list.element`; a
    codec keyed by the top-level name alone is silently not applied). Frames are most of the
    bytes a training worker reads, so they get their own (fast) codec."""
    codecs: dict[str, str] = {}
    for field in schema:
        codec = frames_compression if field.name == "frames" else compression
        for path in _leaf_paths(field.name, field.type):
            codecs[path] = codec
    return codecs


def _leaf_paths(name: str, data_type: pa.DataType) -> list[str]:
    if isinstance(data_type, pa.BaseExtensionType):
        data_type = data_type.storage_type
    if (pa.types.is_list(data_type) or pa.types.is_large_list(data_type)
            or pa.types.is_fixed_size_list(data_type)):
        return [f"{name}.list.{path}" for path in _leaf_paths("element", data_type.value_type)]
    return [name]


class ShardWriter:
    """Write one Parquet file that appears at `path` only when `close()` succeeds.

    Rows are written in row groups of `rows_per_row_group` as they arrive, so memory holds at
    most one row group. Leaving the `with` block through an exception discards everything.
    """

    def __init__(
        self,
        fs: AbstractFileSystem,
        path: str,
        schema: pa.Schema,
        layout: ShardLayout,
        rows_per_row_group: int,
        *,
        temp_path: str | None = None,
        compression: str = "zstd",
        frames_compression: str = "lz4",
    ) -> None:
        self.fs = fs
        self.path = path
        self.schema = schema
        self.layout = layout
        self.rows_per_row_group = rows_per_row_group
        self.rows_written = 0
        self._pending_tables: list[pa.Table] = []
        self._pending_table_rows = 0
        self._atomic = atomic_local_file(fs, path, temp_path)
        self._local = self._atomic.__enter__()
        self._writer = pq.ParquetWriter(
            self._local,
            schema,
            compression=column_compression(schema, compression, frames_compression),
            use_dictionary=["video_uid", "split", "config_hash"],
            write_statistics=list(SCALAR_COLUMNS),
        )
        self._closed = False

    def write_row(self, row: SampleRow) -> None:
        """Append one sample. It becomes Arrow data at once (JPEG-encoded with `jpeg`), so a
        pending row group holds encoded rows only. Raw frames are referenced, not copied:
        do not modify `row.frames` afterwards."""
        self.write_table(rows_to_table([row], self.schema, self.layout))

    def write_table(self, table: pa.Table) -> None:
        """Append rows that are already an Arrow table of this schema (used by compaction)."""
        self._pending_tables.append(table)
        self._pending_table_rows += table.num_rows
        while self._pending_table_rows >= self.rows_per_row_group:
            combined = pa.concat_tables(self._pending_tables)
            self._writer.write_table(combined.slice(0, self.rows_per_row_group))
            self.rows_written += self.rows_per_row_group
            rest = combined.slice(self.rows_per_row_group)
            self._pending_tables = [rest] if rest.num_rows else []
            self._pending_table_rows = rest.num_rows

    def add_metadata(self, metadata: dict[str, str]) -> None:
        """Key-value metadata for the file footer (e.g. facts known only at the end)."""
        self._writer.add_key_value_metadata(metadata)

    def close(self) -> int:
        """Finish the file and make it visible at `path`; returns the number of rows."""
        if self._closed:
            return self.rows_written
        if self._pending_tables:
            combined = pa.concat_tables(self._pending_tables)
            self._writer.write_table(combined)
            self.rows_written += combined.num_rows
            self._pending_tables = []
        self._writer.close()
        self._closed = True
        self._atomic.__exit__(None, None, None)
        return self.rows_written

    def abort(self, exc: BaseException | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._writer.close()
        finally:
            error = exc or RuntimeError("shard write aborted")
            try:
                self._atomic.__exit__(type(error), error, error.__traceback__)
            except type(error):
                pass

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
        else:
            self.abort(exc)


# ---------------------------------------------------------------------------------------------
# Reading


def read_manifest(url: str, storage: StorageConfig | None = None) -> dict[str, Any]:
    """The `_manifest.json` of a finished shard set; ShardError when it is missing."""
    fs, path = filesystem(url, storage or StorageConfig())
    manifest_path = join(path, MANIFEST_NAME)
    if not fs.exists(manifest_path):
        raise ShardError(
            f"{url} has no {MANIFEST_NAME}: preprocessing has not finished there. Run "
            "`assynch preprocess` with this output (it resumes) or point at finished shards."
        )
    with fs.open(manifest_path, "rb") as handle:
        manifest: dict[str, Any] = json.loads(handle.read())
    return manifest


def list_shards(url: str, split: str, storage: StorageConfig | None = None) -> list[str]:
    """The shard files of one split, in order (paths on the filesystem of `url`)."""
    if split not in SPLITS:
        raise ShardError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    fs, path = filesystem(url, storage or StorageConfig())
    folder = join(path, split)
    if not fs.isdir(folder):
        return []
    return sorted(
        p for p in fs.ls(folder, detail=False)
        if p.endswith(".parquet") and not is_temp_name(p)
    )


def table_to_batch(
    table: pa.Table, mel_dtype: torch.dtype | None = None
) -> dict[str, Any]:
    """Arrow rows -> a dict of torch tensors (strings stay lists; mel float32 unless
    `mel_dtype`). Frames share Arrow's memory when it is writable (Parquet reads) and are
    copied once otherwise: a training step may write to its batch."""
    import torch

    mel_dtype = mel_dtype or torch.float32
    batch: dict[str, Any] = {}
    for name in table.column_names:
        column = table.column(name)
        if name == "frames":
            batch[name] = torch.from_numpy(
                frames_to_numpy(column, frame_shape_of(table.schema), writable=True)
            )
        elif name == "mel":
            mel = np.concatenate([chunk.to_numpy_ndarray() for chunk in column.chunks])
            batch[name] = torch.from_numpy(mel).to(mel_dtype)
        elif name == "window_starts_sec":
            starts = np.asarray(column.to_pylist(), dtype=np.float64)
            batch[name] = torch.from_numpy(starts)
        elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            batch[name] = column.to_pylist()
        elif name == "offset_class":
            batch[name] = torch.from_numpy(column.to_numpy().astype(np.int64))
        else:
            batch[name] = torch.from_numpy(np.array(column.to_numpy(), copy=True))
    return batch


def frames_to_numpy(
    column: pa.Array | pa.ChunkedArray,
    frame_shape: Sequence[int] | None = None,
    *,
    writable: bool = False,
) -> np.ndarray:
    """A `frames` column in any frame format -> uint8 (N, T, H, W, 3).

    `raw` and `tensor` frames of a one-chunk column come back as a view of Arrow's buffer
    (writable when Arrow allocated it, e.g. read from Parquet); with `writable` a read-only
    view, and several chunks, are copied once into a new array.
    `frame_shape` (H, W, 3) is needed for `raw` only when the schema metadata is gone
    (otherwise square RGB frames are assumed).
    """
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    views = [_frames_view(chunk, frame_shape) for chunk in chunks if len(chunk)]
    if not views:
        return np.zeros((0, 0, 0, 0, 3), np.uint8)
    if len(views) == 1 and (not writable or views[0].flags.writeable):
        return views[0]  # buffers read from Parquet are mutable: no copy needed
    if len(views) == 1:
        return np.array(views[0], copy=True)
    out = np.empty((sum(v.shape[0] for v in views), *views[0].shape[1:]), np.uint8)
    row = 0
    for view in views:
        out[row : row + view.shape[0]] = view
        row += view.shape[0]
    return out


def _frames_view(chunk: pa.Array, frame_shape: Sequence[int] | None) -> np.ndarray:
    if isinstance(chunk, pa.FixedShapeTensorArray):
        return chunk.to_numpy_ndarray()
    count = chunk.type.list_size
    images = chunk.flatten()
    if pa.types.is_fixed_size_binary(images.type):
        frame_bytes = images.type.byte_width
        if frame_shape is None:
            side = int(round((frame_bytes / 3) ** 0.5))
            frame_shape = (side, side, 3)
        data = np.frombuffer(
            images.buffers()[1], dtype=np.uint8, count=len(images) * frame_bytes,
            offset=images.offset * frame_bytes,
        )
        return data.reshape(len(chunk), count, *frame_shape)
    first = decode_jpeg(images[0].as_py())
    out = np.empty((len(chunk), count, *first.shape), np.uint8)
    for index, image in enumerate(images.to_pylist()):
        out[index // count, index % count] = first if index == 0 else decode_jpeg(image)
    return out


def frame_shape_of(schema: pa.Schema) -> tuple[int, int, int] | None:
    shape = (schema.metadata or {}).get(b"assynch.frames_shape")
    if shape is None:
        return None
    _, height, width, channels = json.loads(shape)
    return height, width, channels


def __getattr__(name: str) -> Any:
    # ShardDataset needs torch at class creation; import it only when someone asks for it, so
    # that writing shards (Ray workers, the compaction) does not pay for importing torch.
    if name == "ShardDataset":
        from assynch.data.shard_dataset import ShardDataset

        return ShardDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
