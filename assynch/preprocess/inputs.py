"""Which videos to preprocess: one input string, four forms.

- an Ego4D `ego4d.json` (top-level `videos[]` with `video_uid`, `is_stereo`, `video_metadata`),
- an Ego4D `manifest.csv` (a video has audio unless both `canonical_audio_start_sec` and
  `canonical_audio_duration_sec` are empty, as in Ego4D's own feature code),
- a folder, a glob, or a single video file (local or `s3://`),
- an `s3://` prefix (a folder in an object store).

Ego4D videos are found at `<root>/v2/full_scale/<video_uid>.mp4` or in the 540ss variant folder
(`<root>/v2/video_540ss/`), where `<root>` is `preprocess.ego4d_root` or, by default, the
folder of the metadata file or its parent. Videos that metadata marks as stereo or silent, or
whose file is missing, are returned as `skipped` with the reason; they are never decoded.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from fsspec import AbstractFileSystem

from assynch.config import StorageConfig
from assynch.errors import UserError
from assynch.storage import filesystem, full_url, is_temp_name, join

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts")

_SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val",
                  "test": "test"}
_SAFE_UID = re.compile(r"[^A-Za-z0-9._-]+")

InputForm = Literal["ego4d_json", "ego4d_csv", "files"]


class InputError(UserError, ValueError):
    """The input cannot be listed: missing, unreachable, malformed, or holding no videos."""


@dataclass(frozen=True)
class VideoEntry:
    video_uid: str
    url: str
    split: str | None = None
    duration_sec: float | None = None


@dataclass(frozen=True)
class SkippedVideo:
    video_uid: str
    url: str
    reason: str


@dataclass
class InputListing:
    form: InputForm
    entries: list[VideoEntry] = field(default_factory=list)
    skipped: list[SkippedVideo] = field(default_factory=list)


def list_inputs(
    spec: str,
    storage: StorageConfig,
    *,
    ego4d_root: str | None = None,
    split_field: str = "split",
) -> InputListing:
    """List the videos named by `spec`, sorted by video_uid."""
    fs, path = filesystem(spec, storage)
    lowered = spec.lower()
    try:
        if lowered.endswith(".json"):
            listing = _from_ego4d_json(fs, path, spec, storage, ego4d_root, split_field)
        elif lowered.endswith(".csv"):
            listing = _from_ego4d_csv(fs, path, spec, storage, ego4d_root, split_field)
        else:
            listing = _from_files(fs, path, spec)
    except InputError:
        raise
    except (OSError, ValueError) as exc:
        raise InputError(
            f"cannot read input {spec}: {type(exc).__name__}: {exc}. Check the path and, for "
            "s3://, the storage endpoint and credentials."
        ) from exc
    if not listing.entries and not listing.skipped:
        raise InputError(
            f"input {spec} holds no videos (looked for {', '.join(VIDEO_EXTENSIONS)}). Point "
            "preprocess.input at a folder, glob, s3:// prefix, ego4d.json or manifest.csv."
        )
    listing.entries.sort(key=lambda entry: entry.video_uid)
    listing.skipped.sort(key=lambda skipped: skipped.video_uid)
    return listing


def safe_name(video_uid: str) -> str:
    """A file-name-safe form of a video_uid (unchanged for Ego4D's UUIDs)."""
    cleaned = _SAFE_UID.sub("_", video_uid).strip("._") or "video"
    return cleaned


def normalise_split(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    return _SPLIT_ALIASES.get(value.strip().lower())


# ---------------------------------------------------------------------------------------------
# Folder, glob, prefix, single file


def _from_files(fs: AbstractFileSystem, path: str, spec: str) -> InputListing:
    if any(char in path for char in "*?["):
        base = path[: min(path.find(char) for char in "*?[" if char in path)].rpartition("/")[0]
        found = [p for p in fs.glob(path) if _is_video(p)]
    elif fs.isdir(path):
        base = path.rstrip("/")
        found = [p for p in fs.find(path) if _is_video(p)]
    elif fs.isfile(path):
        if not _is_video(path):
            raise InputError(
                f"input {spec} is a file but not a video ({', '.join(VIDEO_EXTENSIONS)}) nor "
                "an Ego4D ego4d.json / manifest.csv"
            )
        base = path.rpartition("/")[0]
        found = [path]
    else:
        raise InputError(
            f"input {spec} does not exist. Give an existing folder, glob, s3:// prefix, "
            "ego4d.json or manifest.csv in preprocess.input (or --input)."
        )
    by_uid: dict[str, str] = {}
    for file_path in sorted(found):
        relative = file_path[len(base):].lstrip("/") if base else file_path
        uid = safe_name(relative.rsplit(".", 1)[0].replace("/", "__"))
        if uid in by_uid:
            raise InputError(
                f"input {spec}: {by_uid[uid]} and {file_path} both map to video_uid {uid!r}; "
                "rename one of them"
            )
        by_uid[uid] = file_path
    entries = [VideoEntry(uid, full_url(fs, p)) for uid, p in by_uid.items()]
    return InputListing("files", entries)


def _is_video(path: str) -> bool:
    return path.lower().endswith(VIDEO_EXTENSIONS) and not is_temp_name(path)


# ---------------------------------------------------------------------------------------------
# Ego4D metadata


def _read_text(fs: AbstractFileSystem, path: str, spec: str) -> str:
    if not fs.isfile(path):
        raise InputError(f"input metadata {spec} does not exist; check preprocess.input")
    with fs.open(path, "rb") as handle:
        return handle.read().decode("utf-8")


def _from_ego4d_json(
    fs: AbstractFileSystem,
    path: str,
    spec: str,
    storage: StorageConfig,
    ego4d_root: str | None,
    split_field: str,
) -> InputListing:
    try:
        document = json.loads(_read_text(fs, path, spec))
    except json.JSONDecodeError as exc:
        raise InputError(f"input {spec} is not valid JSON: {exc}") from exc
    videos = document.get("videos") if isinstance(document, dict) else None
    if not isinstance(videos, list):
        raise InputError(
            f"input {spec} has no top-level 'videos' list; is it Ego4D's ego4d.json?"
        )
    index = _VideoIndex(fs, path, spec, storage, ego4d_root)
    listing = InputListing("ego4d_json")
    for position, video in enumerate(videos):
        uid = video.get("video_uid") if isinstance(video, dict) else None
        if not isinstance(uid, str) or not uid:
            raise InputError(f"input {spec}: videos[{position}] has no video_uid")
        metadata = video.get("video_metadata") or {}
        if video.get("is_stereo"):
            listing.skipped.append(SkippedVideo(uid, "", "stereo video (is_stereo is true)"))
            continue
        if "audio_duration_sec" in metadata and metadata["audio_duration_sec"] is None:
            listing.skipped.append(
                SkippedVideo(uid, "", "no audio (video_metadata.audio_duration_sec is null)")
            )
            continue
        duration = video.get("duration_sec") or metadata.get("video_duration_sec")
        _add_located(listing, index, uid, normalise_split(video.get(split_field)), duration)
    return listing


def _from_ego4d_csv(
    fs: AbstractFileSystem,
    path: str,
    spec: str,
    storage: StorageConfig,
    ego4d_root: str | None,
    split_field: str,
) -> InputListing:
    reader = csv.DictReader(io.StringIO(_read_text(fs, path, spec)))
    required = {"video_uid", "canonical_audio_start_sec", "canonical_audio_duration_sec"}
    missing = required - set(reader.fieldnames or [])
    if missing:
        raise InputError(
            f"input {spec} lacks column(s) {', '.join(sorted(missing))}; is it Ego4D's "
            "manifest.csv?"
        )
    index = _VideoIndex(fs, path, spec, storage, ego4d_root)
    listing = InputListing("ego4d_csv")
    for row in reader:
        uid = (row.get("video_uid") or "").strip()
        if not uid:
            continue
        has_audio = any(
            (row.get(column) or "").strip() not in ("", "null", "None", "nan")
            for column in ("canonical_audio_start_sec", "canonical_audio_duration_sec")
        )
        if not has_audio:
            listing.skipped.append(SkippedVideo(
                uid, "", "no audio (canonical_audio_start_sec and _duration_sec are empty)"
            ))
            continue
        duration = _float_or_none(row.get("canonical_video_duration_sec"))
        _add_located(listing, index, uid, normalise_split(row.get(split_field)), duration)
    return listing


def _add_located(
    listing: InputListing,
    index: _VideoIndex,
    uid: str,
    split: str | None,
    duration: Any,
) -> None:
    url = index.locate(uid)
    if url is None:
        listing.skipped.append(SkippedVideo(uid, "", index.missing_reason(uid)))
        return
    listing.entries.append(VideoEntry(uid, url, split, _float_or_none(duration)))


def _float_or_none(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


class _VideoIndex:
    """Where Ego4D video files are: one listing per candidate folder, full_scale first."""

    def __init__(
        self,
        fs: AbstractFileSystem,
        metadata_path: str,
        spec: str,
        storage: StorageConfig,
        ego4d_root: str | None,
    ) -> None:
        if ego4d_root:
            self.fs, root = filesystem(ego4d_root, storage)
            if not self.fs.isdir(root):
                raise InputError(
                    f"preprocess.ego4d_root {ego4d_root} does not exist; set it to the folder "
                    "holding v2/full_scale/"
                )
            bases = [root.rstrip("/")]
        else:
            self.fs = fs
            folder = metadata_path.rpartition("/")[0]
            bases = [folder, folder.rpartition("/")[0]]
        self.folders = self._candidate_folders(bases)
        self.files: dict[str, str] = {}
        for folder in reversed(self.folders):  # earlier folders win
            for file_path in self.fs.ls(folder, detail=False):
                if _is_video(file_path):
                    stem = file_path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
                    self.files[stem] = full_url(self.fs, file_path)
        log.info("Ego4D videos of %s: %d files in %s", spec, len(self.files), self.folders)

    def _candidate_folders(self, bases: list[str]) -> list[str]:
        full_scale: list[str] = []
        downscaled: list[str] = []
        plain: list[str] = []
        for base in (b for b in bases if b):
            for parent in (join(base, "v2"), base):
                if not self.fs.isdir(parent):
                    continue
                for child in sorted(self.fs.ls(parent, detail=False)):
                    name = child.rstrip("/").rsplit("/", 1)[-1]
                    if name == "full_scale" and self.fs.isdir(child):
                        full_scale.append(child)
                    elif "540ss" in name and self.fs.isdir(child):
                        downscaled.append(child)
            plain.append(base)
        ordered = full_scale + downscaled + plain
        return list(dict.fromkeys(ordered))

    def locate(self, uid: str) -> str | None:
        return self.files.get(uid)

    def missing_reason(self, uid: str) -> str:
        where = ", ".join(self.folders) or "(no v2/full_scale folder found)"
        return (
            f"video file {uid}.mp4 not found in {where}; download it with the Ego4D CLI or set "
            "preprocess.ego4d_root"
        )
