"""Input listing: Ego4D json/csv, folders, globs, single files; skips and errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from assynch.config import SplitFractions, StorageConfig
from assynch.preprocess.inputs import InputError, list_inputs
from assynch.preprocess.plan import assign_split

STORAGE = StorageConfig()


def touch(path: Path, data: bytes = b"not decoded while listing") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def ego4d_video(uid: str, *, audio: bool = True, stereo: bool = False, **extra: object) -> dict:
    return {
        "video_uid": uid,
        "duration_sec": 480.0,
        "is_stereo": stereo,
        "video_metadata": {
            "fps": 30.0,
            "num_frames": 14400,
            "video_codec": "h264",
            "audio_duration_sec": 480.0 if audio else None,
        },
        **extra,
    }


def test_folder_lists_videos_recursively_with_uids_from_relative_paths(tmp_path: Path) -> None:
    touch(tmp_path / "b.mp4")
    touch(tmp_path / "a.MKV")
    touch(tmp_path / "sub" / "c.mov")
    touch(tmp_path / "notes.json")
    touch(tmp_path / ".b.mp4.tmp-123")
    listing = list_inputs(str(tmp_path), STORAGE)
    assert listing.form == "files"
    assert [e.video_uid for e in listing.entries] == ["a", "b", "sub__c"]
    assert listing.entries[1].url == str(tmp_path / "b.mp4")
    assert all(e.split is None for e in listing.entries)


def test_glob_and_single_file(tmp_path: Path) -> None:
    touch(tmp_path / "x1.mp4")
    touch(tmp_path / "x2.mp4")
    touch(tmp_path / "y.mp4")
    globbed = list_inputs(str(tmp_path / "x*.mp4"), STORAGE)
    assert [e.video_uid for e in globbed.entries] == ["x1", "x2"]
    single = list_inputs(str(tmp_path / "y.mp4"), STORAGE)
    assert [(e.video_uid, e.url) for e in single.entries] == [("y", str(tmp_path / "y.mp4"))]


def test_bad_file_inputs_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        list_inputs(str(tmp_path / "missing"), STORAGE)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no videos"):
        list_inputs(str(tmp_path / "empty"), STORAGE)
    touch(tmp_path / "readme.txt")
    with pytest.raises(InputError, match="not a video"):
        list_inputs(str(tmp_path / "readme.txt"), STORAGE)
    touch(tmp_path / "dup" / "v.mp4")
    touch(tmp_path / "dup" / "v.mkv")
    with pytest.raises(InputError, match="both map to video_uid 'v'"):
        list_inputs(str(tmp_path / "dup"), STORAGE)


def test_ego4d_json_finds_both_layouts_and_skips_with_reasons(tmp_path: Path) -> None:
    root = tmp_path / "ego4d"
    touch(root / "v2" / "full_scale" / "uid-a.mp4")
    touch(root / "v2" / "full_scale" / "uid-silent.mp4")
    touch(root / "v2" / "video_540ss" / "uid-b.mp4")
    touch(root / "v2" / "video_540ss" / "uid-a.mp4")  # full_scale wins
    document = {
        "videos": [
            ego4d_video("uid-a", split="val"),
            ego4d_video("uid-b", split_av="test"),
            ego4d_video("uid-silent", audio=False),
            ego4d_video("uid-stereo", stereo=True),
            ego4d_video("uid-missing"),
        ]
    }
    metadata = touch(root / "v2" / "ego4d.json", json.dumps(document).encode())
    listing = list_inputs(str(metadata), STORAGE)
    assert listing.form == "ego4d_json"
    assert [(e.video_uid, Path(e.url).parent.name, e.split) for e in listing.entries] == [
        ("uid-a", "full_scale", "val"),
        ("uid-b", "video_540ss", None),
    ]
    reasons = {s.video_uid: s.reason for s in listing.skipped}
    assert set(reasons) == {"uid-silent", "uid-stereo", "uid-missing"}
    assert "no audio" in reasons["uid-silent"]
    assert "stereo" in reasons["uid-stereo"]
    assert "uid-missing.mp4 not found" in reasons["uid-missing"]

    by_av = list_inputs(str(metadata), STORAGE, split_field="split_av")
    assert {e.video_uid: e.split for e in by_av.entries} == {"uid-a": None, "uid-b": "test"}


def test_ego4d_root_option_and_csv_manifest(tmp_path: Path) -> None:
    root = tmp_path / "download"
    touch(root / "v2" / "full_scale" / "u1.mp4")
    touch(root / "v2" / "full_scale" / "u2.mp4")
    manifest = tmp_path / "elsewhere" / "manifest.csv"
    manifest.parent.mkdir()
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[
            "video_uid", "canonical_fps", "canonical_audio_start_sec",
            "canonical_audio_duration_sec",
        ])
        writer.writeheader()
        writer.writerow({"video_uid": "u1", "canonical_fps": 30,
                         "canonical_audio_start_sec": 0.0, "canonical_audio_duration_sec": 480})
        writer.writerow({"video_uid": "u2", "canonical_fps": 30,
                         "canonical_audio_start_sec": "", "canonical_audio_duration_sec": ""})
    listing = list_inputs(str(manifest), STORAGE, ego4d_root=str(root))
    assert listing.form == "ego4d_csv"
    assert [e.video_uid for e in listing.entries] == ["u1"]
    assert [s.video_uid for s in listing.skipped] == ["u2"]
    assert "no audio" in listing.skipped[0].reason
    with pytest.raises(InputError, match="ego4d_root"):
        list_inputs(str(manifest), STORAGE, ego4d_root=str(tmp_path / "nope"))


def test_malformed_metadata_is_rejected(tmp_path: Path) -> None:
    bad_json = touch(tmp_path / "ego4d.json", b"{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        list_inputs(str(bad_json), STORAGE)
    no_videos = touch(tmp_path / "other.json", b'{"clips": []}')
    with pytest.raises(InputError, match="no top-level 'videos' list"):
        list_inputs(str(no_videos), STORAGE)
    bad_csv = touch(tmp_path / "manifest.csv", b"video_uid,fps\nu1,30\n")
    with pytest.raises(InputError, match="canonical_audio_duration_sec"):
        list_inputs(str(bad_csv), STORAGE)


def test_split_assignment_is_stable_and_follows_fractions() -> None:
    fractions = SplitFractions(train=0.6, val=0.2, test=0.2)
    uids = [f"video-{i}" for i in range(3000)]
    splits = [assign_split(uid, fractions) for uid in uids]
    assert splits == [assign_split(uid, fractions) for uid in uids]
    for name, expected in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
        assert abs(splits.count(name) / len(uids) - expected) < 0.03
    assert assign_split("video-1", fractions, given="test") == "test"
    assert assign_split("video-1", SplitFractions(train=0.0, val=0.0, test=1.0)) == "test"
