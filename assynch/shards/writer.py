"""Write one Parquet shard atomically: it appears at its path only when complete."""

from __future__ import annotations

from types import TracebackType

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec import AbstractFileSystem

from assynch.shards.format import SCALAR_COLUMNS, SampleRow, ShardLayout, rows_to_table
from assynch.storage import atomic_local_file


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


