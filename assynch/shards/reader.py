"""Read finished shard sets with plain pyarrow: the manifest, the shard files, the frames."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from assynch.config import StorageConfig
from assynch.shards.format import MANIFEST_NAME, SPLITS, ShardError, decode_jpeg
from assynch.storage import filesystem, is_temp_name, join


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
