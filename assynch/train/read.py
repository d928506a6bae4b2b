"""Shard rows -> numpy columns for the training step, on the data side (Ray Data tasks or the
local reader): JPEG decoding and float16 -> float32 happen here, not in the training worker.

Imports no torch, so the Ray Data tasks that run it start fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from assynch.shards.reader import frames_to_numpy

# What a step needs (assynch.train.inputs.BATCH_COLUMNS); read only these from the shards.
READ_COLUMNS = ("sample_id", "offset_sec", "offset_class", "audio_margin_sec", "frames", "mel")


def mel_to_numpy(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A `mel` column (canonical fixed-shape tensor, or Ray's own tensor type) -> (N, M, F)."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    arrays = []
    for chunk in chunks:
        if hasattr(chunk, "to_numpy_ndarray"):
            arrays.append(chunk.to_numpy_ndarray())
        else:  # Ray's ArrowTensorArray
            arrays.append(np.asarray(chunk.to_numpy()))
    return np.concatenate(arrays).astype(np.float32)


def rows_to_columns(table: pa.Table, frame_shape: Sequence[int]) -> dict[str, Any]:
    """One Arrow batch of shard rows -> numpy columns: frames uint8 (N, T, H, W, 3) (JPEG
    decoded), mel float32 (N, M, F), the scalars, sample ids as str."""
    return {
        "sample_id": np.asarray(table.column("sample_id").to_pylist(), dtype=object),
        "offset_sec": table.column("offset_sec").to_numpy().astype(np.float64),
        "offset_class": table.column("offset_class").to_numpy().astype(np.int64),
        "audio_margin_sec": table.column("audio_margin_sec").to_numpy().astype(np.float64),
        "frames": frames_to_numpy(table.column("frames"), tuple(frame_shape), writable=True),
        "mel": mel_to_numpy(table.column("mel")),
    }
