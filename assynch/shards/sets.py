"""Several finished shard sets read as one: `train.shards` as a list, and `ROOT/*` for every
finished shard set directly under ROOT (e.g. the DAG's `<preprocess.output>/batches/*`).

A set is finished when its `_manifest.json` exists (the preprocessing job writes it last). An
entry `ROOT/*` takes the finished sub-folders and skips the others with a warning (a batch still
being preprocessed); a plain entry must be finished. All sets must share one contract — shard
format version, time base, video and audio features, and the shard layout (frame format and
shapes) — because their rows are read as one dataset by one model; sampling settings (samples
per video, seeds, splits, audio margin) may differ. Plain pyarrow/fsspec: no Ray, no torch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from assynch.config import StorageConfig
from assynch.shards.format import MANIFEST_NAME, ShardError
from assynch.shards.reader import list_shards, read_manifest
from assynch.storage import filesystem, join

log = logging.getLogger(__name__)

ALL_UNDER = "/*"  # `ROOT/*`: every finished shard set directly under ROOT
CONTRACT_SECTIONS = ("time", "video", "audio")
CONTRACT_LAYOUT = ("frames_shape", "frames_dtype", "frame_format", "mel_shape", "mel_dtype",
                   "mel_hop_sec", "fps", "sample_rate", "windows_per_sample")


@dataclass(frozen=True)
class ShardSet:
    url: str
    manifest: dict[str, Any]

    def samples(self, split: str) -> int:
        return int(self.manifest.get("splits", {}).get(split, {}).get("samples", 0))


@dataclass(frozen=True)
class ShardSets:
    """The finished shard sets one run reads, in order (the first is the reference)."""

    sets: tuple[ShardSet, ...]

    @property
    def urls(self) -> list[str]:
        return [shard_set.url for shard_set in self.sets]

    @property
    def first(self) -> ShardSet:
        return self.sets[0]

    @property
    def layout(self) -> dict[str, Any] | None:
        layout: dict[str, Any] | None = self.first.manifest.get("layout")
        return layout

    def as_value(self) -> str | tuple[str, ...]:
        """These sets as a `train.shards` value (one URL, or a tuple), no `ROOT/*` left."""
        return self.urls[0] if len(self.sets) == 1 else tuple(self.urls)

    def samples(self, split: str) -> int:
        return sum(shard_set.samples(split) for shard_set in self.sets)

    def files(self, split: str, storage: StorageConfig | None = None) -> list[str]:
        """Every set's shard files of `split` (paths on their common filesystem), set by set."""
        return [path for url in self.urls for path in list_shards(url, split, storage)]

    def describe(self) -> str:
        if len(self.sets) == 1:
            return self.first.url
        return f"{len(self.sets)} shard sets ({', '.join(self.urls)})"


def shard_entries(value: str | Sequence[str]) -> list[str]:
    """`train.shards` as a list of entries (a single URL is a list of one)."""
    return [value] if isinstance(value, str) else list(value)


def resolve_shard_sets(
    value: str | Sequence[str], storage: StorageConfig | None = None, *,
    field: str = "train.shards",
) -> ShardSets:
    """The finished shard sets that `value` names, checked to share one contract.

    Entries: a shard set's URL (it must be finished), or `ROOT/*` (the finished sets directly
    under ROOT; unfinished ones are skipped and logged; none finished is an error). Local paths
    and s3:// URLs both work, but not mixed in one run. A set named twice is read once."""
    storage = storage or StorageConfig()
    entries = shard_entries(value)
    if not entries:
        raise ShardError(f"{field} is an empty list; name at least one finished shard set")
    _check_one_storage(entries, field)
    found: list[ShardSet] = []
    for entry in entries:
        if entry.endswith(ALL_UNDER):
            found += _finished_under(entry[: -len(ALL_UNDER)], storage, field)
        else:
            found.append(ShardSet(entry, _manifest_of(entry, storage, field)))
    unique: dict[str, ShardSet] = {}
    for shard_set in found:
        unique.setdefault(shard_set.url.rstrip("/"), shard_set)
    sets = ShardSets(tuple(unique.values()))
    check_same_contract(sets, field)
    return sets


def contract_of(manifest: dict[str, Any]) -> dict[str, Any]:
    """What every set read together must agree on (see the module docstring)."""
    config = manifest.get("config", {})
    layout = manifest.get("layout", {})
    contract: dict[str, Any] = {"format": manifest.get("format")}
    for section in CONTRACT_SECTIONS:
        for key, value in sorted(config.get(section, {}).items()):
            contract[f"{section}.{key}"] = value
    for key in CONTRACT_LAYOUT:
        contract[f"layout.{key}"] = layout.get(key)
    return contract


def check_same_contract(sets: ShardSets, field: str = "train.shards") -> None:
    """One ShardError naming the first set that disagrees with the first set, the differing
    fields with both values, and the fix."""
    reference = contract_of(sets.first.manifest)
    for other in sets.sets[1:]:
        theirs = contract_of(other.manifest)
        differences = [
            f"{key}={theirs.get(key)!r} (vs {reference.get(key)!r})"
            for key in sorted(set(reference) | set(theirs)) if theirs.get(key) != reference.get(key)
        ]
        if differences:
            raise ShardError(
                f"{field}: the shard set {other.url} was made with another time base or shard "
                f"layout than {sets.first.url}: {', '.join(differences)}. Sets read together must "
                f"share the format, time.*, video.* and audio.* settings and the frame format: "
                f"preprocess {other.url} again with the config {sets.first.url} was made with, "
                f"or leave it out of {field}."
            )


def _manifest_of(url: str, storage: StorageConfig, field: str) -> dict[str, Any]:
    try:
        return read_manifest(url, storage)
    except ShardError:
        fs, path = filesystem(url, storage)
        finished = [child for child in _children(fs, path) if fs.exists(join(child, MANIFEST_NAME))]
        if finished:
            raise ShardError(
                f"{field}: {url} has no {MANIFEST_NAME}, but {len(finished)} finished shard "
                f"set(s) under it; to read all of them write {url.rstrip('/')}{ALL_UNDER}"
            ) from None
        raise


def _finished_under(root: str, storage: StorageConfig, field: str) -> list[ShardSet]:
    fs, path = filesystem(root, storage)
    base = root.rstrip("/")
    sets: list[ShardSet] = []
    skipped: list[str] = []
    for child in _children(fs, path):
        url = f"{base}/{child.rstrip('/').rsplit('/', 1)[-1]}"
        if fs.exists(join(child, MANIFEST_NAME)):
            sets.append(ShardSet(url, read_manifest(url, storage)))
        else:
            skipped.append(url)
    for url in skipped:
        log.warning("%s: skipping %s: no %s yet (preprocessing has not finished there)",
                    field, url, MANIFEST_NAME)
    if not sets:
        raise ShardError(
            f"{field}: no finished shard set under {root} ({len(skipped)} unfinished "
            f"sub-folder(s), none with {MANIFEST_NAME}); preprocess into {base}/<name> first, "
            f"or name a finished set instead of {base}{ALL_UNDER}"
        )
    log.info("%s: %d finished shard set(s) under %s%s", field, len(sets), root,
             f", {len(skipped)} unfinished skipped" if skipped else "")
    return sets


def _children(fs: Any, path: str) -> list[str]:
    """Sub-folders of `path`, sorted by name (hidden and temporary names left out)."""
    if not fs.isdir(path):
        return []
    return sorted(
        entry["name"] for entry in fs.ls(path, detail=True)
        if entry["type"] == "directory"
        and not entry["name"].rstrip("/").rsplit("/", 1)[-1].startswith(".")
    )


def _check_one_storage(entries: Sequence[str], field: str) -> None:
    kinds = {url.split("://", 1)[0] if "://" in url else "local": url for url in entries}
    if len(kinds) > 1:
        shown = ", ".join(f"{kind}: {url}" for kind, url in kinds.items())
        raise ShardError(
            f"{field} mixes storages ({shown}); the sets of one run are read through one "
            "filesystem: copy them onto one storage (all local or all s3://)"
        )
