"""What a preprocessing run decides before and after the decoding: the config hash, the split
of each video, the output layout, the shard plan, `_manifest.json` and the summary table.

Output layout (local folder or s3:// prefix):

    _config.json               written first: config hash + config; a rerun must match it
    _parts/<uid>.parquet       one per finished video (its samples), removed at the end
    _parts/<uid>.error.json    one per failed video, removed at the end
    train|val|test/shard-NNNNN.parquet   rows_per_shard rows each, sorted by (video_uid, sample)
    errors.parquet             video_uid, path, stage, reason
    _manifest.json             written last: the set is complete when this exists
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import subprocess
import time as wall_time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from assynch.config import AssynchConfig, SplitFractions
from assynch.preprocess.inputs import safe_name
from assynch.shards.format import SPLITS

CONFIG_NAME = "_config.json"
ERRORS_NAME = "errors.parquet"
PARTS_DIR = "_parts"
FORMAT_VERSION = "assynch-shards-1"
# Fields that change how the job runs, not what it writes.
OPERATIONAL_FIELDS = frozenset(
    {"input", "output", "ego4d_root", "num_workers", "cpus_per_worker", "video_timeout_sec"}
)
# Footer metadata of a part file: its VideoResult, and the media duration (known before rows).
RESULT_KEY = "assynch.video_result"
DURATION_KEY = "assynch.duration_sec"


def preprocess_config_hash(config: AssynchConfig) -> str:
    """A hash of everything that decides the rows: time base, features, preprocess settings
    (without paths and worker counts), the shard format and the PyAV version."""
    return hashlib.sha256(
        json.dumps(hashed_config(config), sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()[:16]


def hashed_config(config: AssynchConfig) -> dict[str, Any]:
    dumped = config.model_dump(mode="json", include={"time", "video", "audio", "preprocess"})
    dumped["preprocess"] = {
        key: value for key, value in dumped["preprocess"].items()
        if key not in OPERATIONAL_FIELDS
    }
    dumped["format"] = FORMAT_VERSION
    dumped["av_version"] = _version("av")
    return dumped


def assign_split(video_uid: str, fractions: SplitFractions, given: str | None = None) -> str:
    """The metadata's split when it names one, else a stable hash of the video_uid.

    The seed is not part of the hash: changing the offset seed must not move videos between
    train and test.
    """
    if given in SPLITS:
        return given
    digest = hashlib.sha256(video_uid.encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    if position < fractions.train:
        return "train"
    if position < fractions.train + fractions.val:
        return "val"
    return "test"


def part_stem(video_uid: str) -> str:
    """A file name for a video's part: the uid when it is safe, else a cleaned form + hash."""
    cleaned = safe_name(video_uid)
    if cleaned == video_uid:
        return cleaned
    return f"{cleaned}-{hashlib.sha1(video_uid.encode()).hexdigest()[:8]}"


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.parquet"


# ---------------------------------------------------------------------------------------------
# Per-video results


@dataclass
class VideoTask:
    """One video to process, as sent to a worker."""

    video_uid: str
    url: str
    split: str
    part_path: str
    error_path: str

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> VideoTask:
        return cls(**json.loads(text))


@dataclass
class VideoResult:
    """What happened to one video: its samples, or the stage and reason it failed."""

    video_uid: str
    url: str
    split: str
    ok: bool
    samples: int = 0
    offset_classes: list[int] = field(default_factory=list)
    duration_sec: float = 0.0
    stage: str = ""
    reason: str = ""
    part_path: str = ""
    wall_sec: float = 0.0
    peak_rss_mb: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> VideoResult:
        return cls(**json.loads(text))

    @classmethod
    def failure(cls, task: VideoTask, stage: str, reason: str, **extra: Any) -> VideoResult:
        return cls(task.video_uid, task.url, task.split, False, stage=stage, reason=reason,
                   **extra)


# ---------------------------------------------------------------------------------------------
# Shard plan


@dataclass
class ShardSource:
    part_path: str
    first_row: int
    rows: int


@dataclass
class ShardPlan:
    split: str
    index: int
    path: str
    sources: list[ShardSource]

    @property
    def rows(self) -> int:
        return sum(source.rows for source in self.sources)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ShardPlan:
        data = json.loads(text)
        data["sources"] = [ShardSource(**source) for source in data["sources"]]
        return cls(**data)


def plan_shards(
    results: Iterable[VideoResult], output_path: str, rows_per_shard: int
) -> list[ShardPlan]:
    """Cut the finished videos of each split, sorted by video_uid, into shards of
    `rows_per_shard` rows (the last shard of a split may be shorter)."""
    plans: list[ShardPlan] = []
    ok = sorted((r for r in results if r.ok and r.samples), key=lambda r: r.video_uid)
    for split in SPLITS:
        current: list[ShardSource] = []
        filled = 0
        index = 0

        def close_shard(split: str = split) -> None:
            nonlocal current, filled, index
            path = f"{output_path.rstrip('/')}/{split}/{shard_name(index)}"
            plans.append(ShardPlan(split, index, path, current))
            current, filled, index = [], 0, index + 1

        for result in (r for r in ok if r.split == split):
            row = 0
            while row < result.samples:
                take = min(result.samples - row, rows_per_shard - filled)
                current.append(ShardSource(result.part_path, row, take))
                row += take
                filled += take
                if filled == rows_per_shard:
                    close_shard()
        if current:
            close_shard()
    return plans


# ---------------------------------------------------------------------------------------------
# Manifest and summary


def code_version() -> dict[str, str]:
    versions = {
        name: _version(name) for name in ("assynch", "av", "torch", "torchaudio", "pyarrow")
    }
    versions["python"] = platform.python_version()
    commit = _git_commit()
    if commit:
        versions["git_commit"] = commit
    return versions


def _version(package: str) -> str:
    """A package's installed version, without importing it (workers stay light)."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _git_commit() -> str | None:
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return completed.stdout.strip() or None if completed.returncode == 0 else None


def build_manifest(
    config: AssynchConfig,
    config_hash: str,
    results: Sequence[VideoResult],
    errors: Sequence[VideoResult],
    shards: Sequence[tuple[ShardPlan, int]],
    layout: dict[str, Any],
    started_at: float,
) -> dict[str, Any]:
    """The `_manifest.json` document (no credentials: the storage section is never included)."""
    ok = [r for r in results if r.ok]
    classes = config.time.num_offset_classes
    splits: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        in_split = [r for r in ok if r.split == split]
        histogram = Counter(c for r in in_split for c in r.offset_classes)
        split_shards = [(plan, rows) for plan, rows in shards if plan.split == split]
        splits[split] = {
            "videos": len(in_split),
            "samples": sum(r.samples for r in in_split),
            "seconds_of_video": round(sum(r.duration_sec for r in in_split), 3),
            "offset_histogram": [histogram.get(k, 0) for k in range(classes)],
            "shards": [
                {"path": f"{split}/{plan.path.rsplit('/', 1)[-1]}", "rows": rows}
                for plan, rows in split_shards
            ],
        }
    histogram = Counter(c for r in ok for c in r.offset_classes)
    error_stages = Counter(e.stage for e in errors)
    audio = config.audio
    return {
        "format": FORMAT_VERSION,
        "config_hash": config_hash,
        "config": config.model_dump(mode="json", include={"time", "video", "audio", "preprocess"}),
        "code_version": code_version(),
        "created_at": wall_time.strftime("%Y-%m-%dT%H:%M:%SZ", wall_time.gmtime()),
        "wall_sec": round(wall_time.time() - started_at, 3),
        "splits": splits,
        "videos": len(ok),
        "samples": sum(r.samples for r in ok),
        "seconds_of_video": round(sum(r.duration_sec for r in ok), 3),
        "offset_histogram": [histogram.get(k, 0) for k in range(classes)],
        "errors": len(errors),
        "errors_by_stage": dict(sorted(error_stages.items())),
        "layout": layout,
        "mel_normalisation": {
            "formula": "(log(mel + log_eps) - norm_mean) / (2 * norm_std)",
            "norm_mean": audio.norm_mean,
            "norm_std": audio.norm_std,
            "log_eps": audio.log_eps,
            "stored_dtype": "float16",
        },
    }
