"""The compaction step: copy the rows of per-video parts into shards of `rows_per_shard` rows.

Rows move as Arrow tables, one row group at a time, so memory holds one row group. This module
imports no torch or PyAV, so the Ray tasks that run it start fast.
"""

from __future__ import annotations

from typing import Any

import pyarrow.parquet as pq

from assynch.config import AssynchConfig
from assynch.errors import AssynchError
from assynch.preprocess.plan import DURATION_KEY, RESULT_KEY, ShardPlan
from assynch.shards.format import ShardLayout
from assynch.shards.writer import ShardWriter
from assynch.storage import filesystem


class CompactionError(AssynchError, RuntimeError):
    """A shard plan that cannot be carried out."""


def write_shard(plan: ShardPlan, config: AssynchConfig) -> int:
    """Copy the planned rows of the parts into one shard; returns its row count."""
    fs, path = filesystem(plan.path, config.storage)
    writer: ShardWriter | None = None
    try:
        for source in plan.sources:
            part_fs, part_path = filesystem(source.part_path, config.storage)
            with part_fs.open(part_path, "rb") as handle:
                parquet = pq.ParquetFile(handle)
                if writer is None:
                    schema = parquet.schema_arrow
                    metadata = {
                        key: value for key, value in (schema.metadata or {}).items()
                        if key not in (RESULT_KEY.encode(), DURATION_KEY.encode())
                    }
                    writer = ShardWriter(
                        fs, path, schema.with_metadata(metadata), _layout_placeholder(),
                        config.preprocess.rows_per_row_group,
                    )
                _copy_rows(parquet, source.first_row, source.rows, writer)
        if writer is None:
            raise CompactionError(f"shard {plan.path} has no rows planned")
        rows = writer.close()
    except BaseException as exc:
        if writer is not None:
            writer.abort(exc)
        raise
    return rows


def _copy_rows(parquet: pq.ParquetFile, first: int, count: int, writer: ShardWriter) -> None:
    offset = 0
    stop = first + count
    for group in range(parquet.num_row_groups):
        group_rows = parquet.metadata.row_group(group).num_rows
        group_stop = offset + group_rows
        if group_stop > first and offset < stop:
            table = parquet.read_row_group(group)
            begin = max(first - offset, 0)
            end = min(stop, group_stop) - offset
            writer.write_table(table.slice(begin, end - begin))
        offset = group_stop
        if offset >= stop:
            break


def _layout_placeholder() -> ShardLayout:
    # Compaction writes whole Arrow tables, so the row-level layout checks are never used.
    return ShardLayout(frames_shape=(0, 0, 0, 3), mel_shape=(0, 0), windows_per_sample=0)


def write_shard_row(row: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """`write_shard` for a row {"plan": ShardPlan JSON} (a Ray Data map function)."""
    plan = ShardPlan.from_json(row["plan"])
    rows = write_shard(plan, AssynchConfig.model_validate(config))
    return {"plan": row["plan"], "rows": rows}
