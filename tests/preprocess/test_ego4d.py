"""An Ego4D-style download: v2/full_scale/<uid>.mp4, the 540ss variant, ego4d.json and
manifest.csv, with silent and stereo videos among them."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from media_files import ClipSpec, write_clip
from preprocess_support import good_clip, preprocess_config, read_all

from assynch.preprocess.job import run_local

UID_A = "3c0dffd0-e38e-4643-bc48-d513943dc20b"
UID_B = "8b1e7f62-0c4d-4c3a-9f5e-2a61b0f7d001"
UID_C = "f00d5ca1-aaaa-4bbb-8ccc-0123456789ab"  # only in the 540ss folder
UID_SILENT_FILE = "0e9a1c33-1111-4222-8333-444455556666"  # metadata says audio, file has none
UID_NO_AUDIO = "1d2c3b4a-5555-4666-8777-888899990000"  # metadata: audio_duration_sec null
UID_STEREO = "2e3f4a5b-9999-4aaa-8bbb-cccc0000dddd"


def video(uid: str, *, audio: bool = True, stereo: bool = False, **extra: Any) -> dict[str, Any]:
    return {
        "video_uid": uid, "duration_sec": 24.0, "is_stereo": stereo,
        "video_metadata": {"fps": 25.0, "num_frames": 600, "video_codec": "h264",
                           "audio_duration_sec": 24.0 if audio else None},
        **extra,
    }


@pytest.fixture(scope="module")
def ego4d_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ego4d")
    full_scale = root / "v2" / "full_scale"
    small = root / "v2" / "video_540ss"
    full_scale.mkdir(parents=True)
    small.mkdir(parents=True)
    good_clip(full_scale / f"{UID_A}.mp4", seed=1)
    good_clip(full_scale / f"{UID_B}.mp4", seed=2)
    good_clip(small / f"{UID_C}.mp4", seed=3)
    write_clip(full_scale / f"{UID_SILENT_FILE}.mp4",
               ClipSpec(duration_sec=24.0, width=96, height=72, audio_codec=None))
    document = {"videos": [
        video(UID_A, split="val"), video(UID_B), video(UID_C), video(UID_SILENT_FILE),
        video(UID_NO_AUDIO, audio=False), video(UID_STEREO, stereo=True),
    ]}
    (root / "v2" / "ego4d.json").write_text(json.dumps(document))
    with (full_scale / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[
            "video_uid", "canonical_fps", "canonical_audio_start_sec",
            "canonical_audio_duration_sec", "canonical_display_width",
        ])
        writer.writeheader()
        for uid, audio in ((UID_A, True), (UID_B, True), (UID_SILENT_FILE, False)):
            writer.writerow({
                "video_uid": uid, "canonical_fps": 25, "canonical_display_width": 96,
                "canonical_audio_start_sec": 0.0 if audio else "",
                "canonical_audio_duration_sec": 24.0 if audio else "",
            })
    return root


def test_ego4d_json(ego4d_root: Path, tmp_path: Path) -> None:
    config = preprocess_config(str(ego4d_root / "v2" / "ego4d.json"), str(tmp_path / "out"))
    report = run_local(config)
    rows = read_all(str(tmp_path / "out")).drop_columns(["frames", "mel"]).to_pylist()
    assert sorted({r["video_uid"] for r in rows}) == sorted([UID_A, UID_B, UID_C])
    assert {r["split"] for r in rows if r["video_uid"] == UID_A} == {"val"}
    errors = pq.read_table(tmp_path / "out" / "errors.parquet").to_pylist()
    stages = {e["video_uid"]: (e["stage"], e["reason"]) for e in errors}
    assert set(stages) == {UID_SILENT_FILE, UID_NO_AUDIO, UID_STEREO}
    assert stages[UID_SILENT_FILE][0] == "probe" and "no audio" in stages[UID_SILENT_FILE][1]
    assert stages[UID_NO_AUDIO][0] == "input" and "audio_duration_sec is null" in (
        stages[UID_NO_AUDIO][1])
    assert stages[UID_STEREO][0] == "input" and "stereo" in stages[UID_STEREO][1]
    assert report.manifest["errors"] == 3


def test_ego4d_manifest_csv_beside_the_videos(ego4d_root: Path, tmp_path: Path) -> None:
    config = preprocess_config(
        str(ego4d_root / "v2" / "full_scale" / "manifest.csv"), str(tmp_path / "out")
    )
    report = run_local(config, isolate=False)
    rows = read_all(str(tmp_path / "out")).drop_columns(["frames", "mel"]).to_pylist()
    assert sorted({r["video_uid"] for r in rows}) == sorted([UID_A, UID_B])
    errors = pq.read_table(tmp_path / "out" / "errors.parquet").to_pylist()
    assert [(e["video_uid"], e["stage"]) for e in errors] == [(UID_SILENT_FILE, "input")]
    assert report.manifest["videos"] == 2
