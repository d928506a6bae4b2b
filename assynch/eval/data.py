"""The shard set an evaluation reads: its manifest, its files, its digest, and the check that it
was made with the model's time base and features."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from assynch.config import AssynchConfig, StorageConfig
from assynch.errors import UserError
from assynch.shards.format import MANIFEST_NAME, SPLITS
from assynch.shards.reader import list_shards, read_manifest
from assynch.storage import join

# Sections of the config that decide what a model sees. Every field of these must match between
# the shard set (its manifest's config) and the model (the config saved with its weights).
MATCHED_SECTIONS = ("time", "video", "audio")


class TimeBaseMismatchError(UserError, ValueError):
    """Shards made with another time base or other features than the model expects."""


class EmptySplitError(UserError, ValueError):
    """The chosen split of a shard set holds no samples."""


@dataclass(frozen=True)
class EvaluationData:
    """One split of a finished shard set."""

    url: str
    split: str
    manifest: dict[str, Any]
    files: tuple[str, ...]

    @property
    def digest(self) -> str:
        """16 hex digits identifying the shard set's content: a hash of its manifest (config
        hash, splits, shard files and row counts). Equal digests = the same shard set."""
        text = json.dumps(
            {k: v for k, v in self.manifest.items() if k not in ("created_at", "wall_sec")},
            sort_keys=True, separators=(",", ":"),
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def manifest_url(self) -> str:
        return join(self.url, MANIFEST_NAME)

    @property
    def samples(self) -> int:
        return int(self.manifest.get("splits", {}).get(self.split, {}).get("samples", 0))

    @property
    def videos(self) -> int:
        return int(self.manifest.get("splits", {}).get(self.split, {}).get("videos", 0))


def open_evaluation_data(
    url: str, split: str, storage: StorageConfig | None = None
) -> EvaluationData:
    """The split's files of a finished shard set; UserError when unfinished or empty."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    manifest = read_manifest(url, storage)
    files = tuple(list_shards(url, split, storage))
    counts = {name: manifest.get("splits", {}).get(name, {}).get("samples", 0) for name in SPLITS}
    if not files or not counts.get(split):
        listed = ", ".join(f"{name} {count}" for name, count in counts.items())
        raise EmptySplitError(
            f"shards {url} have no samples in split {split!r} (samples per split: {listed}); "
            f"pass --split with a split that has samples, or preprocess more videos"
        )
    return EvaluationData(url=url, split=split, manifest=manifest, files=files)


def time_base_differences(manifest: dict[str, Any], config: AssynchConfig) -> list[str]:
    """'section.field: shards X, model Y' for every matched field that differs."""
    recorded = manifest.get("config")
    if not isinstance(recorded, dict):
        return ["manifest: records no config (not written by the preprocessing job?)"]
    expected = config.model_dump(mode="json", include=set(MATCHED_SECTIONS))
    differences = []
    for section in MATCHED_SECTIONS:
        theirs = recorded.get(section, {})
        for field, ours in expected[section].items():
            value = theirs.get(field, "<missing>")
            same = (
                abs(float(value) - float(ours)) <= 1e-9 * max(1.0, abs(float(ours)))
                if isinstance(value, int | float) and isinstance(ours, int | float)
                else value == ours
            )
            if not same:
                differences.append(f"{section}.{field}: shards {value}, model {ours}")
    return differences


def check_time_base(data: EvaluationData, config: AssynchConfig, model_uri: str) -> None:
    """Refuse shards whose time base or features differ from the model's config."""
    differences = time_base_differences(data.manifest, config)
    if differences:
        raise TimeBaseMismatchError(
            f"shards {data.url} were made with another time base or features than model "
            f"{model_uri} expects ({'; '.join(differences)}); evaluate it on shards preprocessed "
            f"with the model's time/video/audio settings (assynch preprocess --set ...)"
        )
