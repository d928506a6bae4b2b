"""What a preprocessing run reports: the errors table and the summary a person reads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from assynch.preprocess.plan import ERRORS_NAME, VideoResult
from assynch.shards.format import SPLITS

ERRORS_SCHEMA = pa.schema([
    pa.field("video_uid", pa.string(), nullable=False),
    pa.field("path", pa.string(), nullable=False),
    pa.field("stage", pa.string(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),
])


def errors_table(errors: Sequence[VideoResult]) -> pa.Table:
    ordered = sorted(errors, key=lambda e: e.video_uid)
    return pa.table(
        {
            "video_uid": [e.video_uid for e in ordered],
            "path": [e.url for e in ordered],
            "stage": [e.stage for e in ordered],
            "reason": [e.reason for e in ordered],
        },
        schema=ERRORS_SCHEMA,
    )


def read_errors(path_or_file: Any) -> pa.Table:
    return pq.read_table(path_or_file)


def format_summary(manifest: dict[str, Any], errors: Sequence[VideoResult] = ()) -> str:
    """A plain-text table of what a run produced."""
    header = f"{'split':<8}{'videos':>8}{'samples':>9}{'shards':>8}{'video hours':>13}"
    lines = [header, "-" * len(header)]
    for split in SPLITS:
        info = manifest["splits"][split]
        lines.append(
            f"{split:<8}{info['videos']:>8}{info['samples']:>9}{len(info['shards']):>8}"
            f"{info['seconds_of_video'] / 3600:>13.3f}"
        )
    lines.append("-" * len(header))
    lines.append(
        f"{'total':<8}{manifest['videos']:>8}{manifest['samples']:>9}"
        f"{sum(len(s['shards']) for s in manifest['splits'].values()):>8}"
        f"{manifest['seconds_of_video'] / 3600:>13.3f}"
    )
    stages = ", ".join(f"{k}: {v}" for k, v in manifest["errors_by_stage"].items())
    lines.append(f"errors: {manifest['errors']}" + (f" ({stages})" if stages else ""))
    for error in list(errors)[:10]:
        lines.append(f"  {error.video_uid} [{error.stage}] {error.reason}")
    if len(errors) > 10:
        lines.append(f"  ... and {len(errors) - 10} more in {ERRORS_NAME}")
    wall = manifest.get("wall_sec") or 0.0
    if wall > 0:
        lines.append(
            f"wall time {wall:.1f} s, {manifest['seconds_of_video'] / wall:.2f} s of video per s"
        )
    return "\n".join(lines)


@dataclass
class PreprocessReport:
    manifest: dict[str, Any]
    errors: list[VideoResult] = field(default_factory=list)
    reused_videos: int = 0
    processed_videos: int = 0
    already_complete: bool = False

    def summary(self) -> str:
        text = format_summary(self.manifest, self.errors)
        if self.already_complete:
            return "output already complete with this config; nothing to do\n" + text
        if self.reused_videos:
            text += f"\nresumed: {self.reused_videos} video(s) reused from an earlier run"
        return text
