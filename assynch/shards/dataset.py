"""`ShardDataset`: batches of stream samples from a finished shard set, as torch tensors,
without Ray (the training worker, tests, notebooks). The only torch module of `assynch.shards`."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from assynch.config import StorageConfig
from assynch.shards.format import ShardError
from assynch.shards.reader import frame_shape_of, frames_to_numpy, list_shards, read_manifest
from assynch.storage import filesystem


class ShardDataset(torch.utils.data.IterableDataset[dict[str, Any]]):
    """Batches of stream samples from one split of a finished shard set, without Ray.

    `url` may also be several finished sets on one storage (e.g. `ShardSets.urls`): their
    files are read as one list.

    Files are divided between DDP ranks (`rank`/`world_size`) and DataLoader workers; with
    `shuffle`, file order and rows within each row group are shuffled by `seed` and the epoch
    (`set_epoch`). Only one row group per file is held in memory at a time.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        split: str,
        *,
        batch_size: int = 4,
        storage: StorageConfig | None = None,
        columns: Sequence[str] | None = None,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        mel_dtype: torch.dtype = torch.float32,
        rank: int = 0,
        world_size: int = 1,
        require_manifest: bool = True,
    ) -> None:
        super().__init__()
        if batch_size <= 0:
            raise ShardError(f"batch_size must be positive, got {batch_size}")
        self.urls = [url] if isinstance(url, str) else list(url)
        if not self.urls:
            raise ShardError("ShardDataset needs at least one shard set")
        self.url = self.urls[0]  # the filesystem of every set (they share one storage)
        self.split = split
        self.batch_size = batch_size
        self.storage = storage or StorageConfig()
        self.columns = list(columns) if columns is not None else None
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.mel_dtype = mel_dtype
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.manifests = ([read_manifest(u, self.storage) for u in self.urls]
                          if require_manifest else [])
        self.manifest = self.manifests[0] if self.manifests else {}
        self.files = [path for u in self.urls for path in list_shards(u, split, self.storage)]
        if not self.files:
            raise ShardError(f"{', '.join(self.urls)} has no shards for split {split!r}")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def num_rows(self) -> int:
        counts = [m.get("splits", {}).get(self.split, {}) for m in self.manifests]
        if counts and all("samples" in c for c in counts):
            return sum(int(c["samples"]) for c in counts)
        fs, _ = filesystem(self.url, self.storage)
        return sum(pq.ParquetFile(fs.open(p, "rb")).metadata.num_rows for p in self.files)

    def _my_files(self) -> list[str]:
        files = list(self.files)
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        if self.shuffle:
            rng.shuffle(files)
        info = torch.utils.data.get_worker_info()
        workers = info.num_workers if info else 1
        worker = info.id if info else 0
        parts = self.world_size * workers
        index = self.rank * workers + worker
        return files[index::parts]

    def iter_tables(self) -> Iterator[pa.Table]:
        """Row groups of this rank's/worker's files (shuffled within each when asked)."""
        fs, _ = filesystem(self.url, self.storage)
        rng = np.random.default_rng(self.seed * 1_000_003 + self.epoch + 7 * self.rank)
        for file_path in self._my_files():
            with fs.open(file_path, "rb") as handle:
                parquet = pq.ParquetFile(handle)
                for group in range(parquet.num_row_groups):
                    table = parquet.read_row_group(group, columns=self.columns)
                    if self.shuffle and table.num_rows > 1:
                        table = table.take(pa.array(rng.permutation(table.num_rows)))
                    yield table

    def __iter__(self) -> Iterator[dict[str, Any]]:
        buffered: list[pa.Table] = []
        count = 0
        for table in self.iter_tables():
            buffered.append(table)
            count += table.num_rows
            while count >= self.batch_size:
                combined = pa.concat_tables(buffered)
                yield table_to_batch(combined.slice(0, self.batch_size), self.mel_dtype)
                rest = combined.slice(self.batch_size)
                buffered = [rest] if rest.num_rows else []
                count = rest.num_rows
        if count and not self.drop_last:
            yield table_to_batch(pa.concat_tables(buffered), self.mel_dtype)


def table_to_batch(
    table: pa.Table, mel_dtype: torch.dtype = torch.float32
) -> dict[str, Any]:
    """Arrow rows -> a dict of torch tensors (strings stay lists; mel float32 unless
    `mel_dtype`). Frames share Arrow's memory when it is writable (Parquet reads) and are
    copied once otherwise: a training step may write to its batch."""
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
