"""`--fix`, `--plot` and `--json` on flash/beep clips whose audio the test shifts (no learned
model needed: the shifts are given, the model is the untrained tiny checkpoint)."""

from __future__ import annotations

import json
from pathlib import Path

import av
import jsonschema
import numpy as np
from detect_media import flash_beep_clip
from media_files import beep_onsets_sec, flash_frame_indices
from typer.testing import CliRunner

from assynch.cli import app
from assynch.config import TimeBase, VideoFeatures
from assynch.detect.fix import Shift, write_fixed_copy
from assynch.detect.report import REPORT_SCHEMA
from assynch.media.decode import decode_all

FRAME_SEC = 0.04
TIME, VIDEO = TimeBase(), VideoFeatures(short_side=72, crop=64)


def video_packets(path: Path) -> list[tuple[bytes, int | None, int | None]]:
    with av.open(str(path)) as container:
        return [(bytes(packet), packet.pts, packet.dts)
                for packet in container.demux(container.streams.video[0]) if packet.size]


def beep_minus_flash(path: Path, expected: float = 0.0) -> list[tuple[float, float]]:
    """(flash time, how far the beep nearest to flash + `expected` is from there) of the decoded
    file: 0 when every beep sits `expected` seconds after its flash."""
    media = decode_all(str(path), time=TIME, video=VIDEO)
    flashes = [i / TIME.fps for i in flash_frame_indices(media.frames)]
    beeps = np.asarray(beep_onsets_sec(media.audio, TIME.sample_rate))
    return [(f, float(np.min(np.abs(beeps - f - expected)))) for f in flashes]


def test_fix_with_a_shift_copies_the_video_and_brings_the_events_back(
    random_checkpoint: Path, tmp_path: Path
) -> None:
    clip = flash_beep_clip(tmp_path / "early.mp4", 14.0, seed=3, audio_shift=0.6)
    # (the first flash, at 0.5 s, has no beep: it would sit before the file's start)
    assert all(delta < 0.01 for f, delta in beep_minus_flash(clip, -0.6) if f > 1.0)
    fixed, plot = tmp_path / "fixed.mp4", tmp_path / "plot.png"
    result = CliRunner().invoke(app, [
        "detect", str(clip), "--checkpoint", str(random_checkpoint), "--json",
        "--plot", str(plot), "--fix", str(fixed), "--shift", "0.6",
    ])
    assert result.exit_code in (0, 3, 4), result.stderr
    document = json.loads(result.stdout)
    jsonschema.validate(document, REPORT_SCHEMA)
    assert document["windows"] == 4 and len(document["timeline"]) == 4
    assert document["fix"] == {
        "path": str(fixed), "shifts": [{"start_sec": 0.0, "end_sec": 14.0, "shift_sec": 0.6}],
        "video_reencoded": False, "audio_reencoded": False,
    }
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert video_packets(fixed) == video_packets(clip)
    pairs = [(f, d) for f, d in beep_minus_flash(fixed) if f > 1.0]
    assert len(pairs) >= 7
    assert all(abs(delta) <= FRAME_SEC for _, delta in pairs), pairs


def test_fix_per_segment_reencodes_only_the_audio(tmp_path: Path) -> None:
    change = 10.0
    clip = flash_beep_clip(tmp_path / "drift.mp4", 20.0, seed=5,
                           audio_shift=lambda t: 0.0 if t < change else 0.8)
    fixed = tmp_path / "fixed.mp4"
    done = write_fixed_copy(str(clip), fixed, [Shift(0.0, change, 0.0), Shift(change, 20.0, 0.8)])
    assert done["audio_reencoded"] and not done["video_reencoded"]
    assert video_packets(fixed) == video_packets(clip)
    pairs = [(f, d) for f, d in beep_minus_flash(fixed) if abs(f - change) > 1.0]
    assert len(pairs) >= 10
    assert all(abs(delta) <= FRAME_SEC for _, delta in pairs), pairs


def test_fix_that_advances_the_audio_drops_what_falls_before_zero(tmp_path: Path) -> None:
    clip = flash_beep_clip(tmp_path / "late.mp4", 10.0, seed=9, audio_shift=-0.4)
    fixed = tmp_path / "fixed.mp4"
    write_fixed_copy(str(clip), fixed, [Shift(0.0, 10.0, -0.4)])
    assert video_packets(fixed) == video_packets(clip)
    pairs = [(f, d) for f, d in beep_minus_flash(fixed) if f > 0.5]
    assert pairs and all(abs(delta) <= FRAME_SEC for _, delta in pairs), pairs


def test_an_s3_url_is_read_through_the_storage_config(
    random_checkpoint: Path, tmp_path: Path, moto_s3: object
) -> None:
    clip = flash_beep_clip(tmp_path / "remote.mp4", 8.0, seed=4)
    bucket = moto_s3.bucket("detect")  # type: ignore[attr-defined]
    moto_s3.client().upload_file(str(clip), bucket, "videos/remote.mp4")  # type: ignore[attr-defined]
    storage = moto_s3.storage  # type: ignore[attr-defined]
    result = CliRunner().invoke(app, [
        "detect", f"s3://{bucket}/videos/remote.mp4", "--checkpoint", str(random_checkpoint),
        "--json",
        "--set", f"storage.endpoint_url={storage.endpoint_url}",
        "--set", "storage.region=us-east-1",
        "--set", f"storage.access_key_id={storage.access_key_id}",
        "--set", f"storage.secret_access_key={storage.secret_access_key.get_secret_value()}",
    ])
    assert result.exit_code in (0, 3, 4), result.stderr
    document = json.loads(result.stdout)
    assert document["video"] == f"s3://{bucket}/videos/remote.mp4"
    assert document["windows"] == 2 and document["duration_sec"] == 8.0


def test_an_undecided_video_is_not_fixed_without_a_shift(
    random_checkpoint: Path, tmp_path: Path
) -> None:
    clip = flash_beep_clip(tmp_path / "clip.mp4", 8.0, seed=6)
    runner = CliRunner()
    checked = runner.invoke(app, ["detect", str(clip), "--checkpoint", str(random_checkpoint)])
    assert checked.exit_code == 4, checked.stdout  # the untrained model cannot tell
    fixed = tmp_path / "fixed.mp4"
    result = runner.invoke(app, ["detect", str(clip), "--checkpoint", str(random_checkpoint),
                                 "--fix", str(fixed)])
    assert result.exit_code == 2 and not fixed.exists()
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "undecided" in lines[0] and "--shift" in lines[0], lines
