"""The per-video worker's time limits, and the `assynch preprocess` command's errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from preprocess_support import good_clip, preprocess_config

from assynch.preprocess.plan import VideoTask
from assynch.preprocess.worker import VideoWorker


def task_for(clip: Path, out: Path) -> VideoTask:
    return VideoTask("clip", str(clip), "train", str(out / "_parts" / "clip.parquet"),
                     str(out / "_parts" / "clip.error.json"))


def test_a_hung_decoder_is_killed_and_the_next_video_gets_a_fresh_one(tmp_path: Path) -> None:
    clip = good_clip(tmp_path / "clip.mp4", seed=1)
    impatient = preprocess_config(str(tmp_path), str(tmp_path / "out"), video_timeout_sec=0.3)
    worker = VideoWorker(impatient, kill_grace_sec=0.0)
    try:
        # The fresh child needs far longer than 0.3 s just to start: it counts as hung.
        result = worker(task_for(clip, tmp_path / "out"))
        assert not result.ok and result.stage == "timeout"
        assert "hung and was killed" in result.reason and "video_timeout_sec=0.3" in result.reason
        assert worker._child is None
        assert not list((tmp_path / "out").rglob("*.parquet"))
        assert not [p for p in (tmp_path / "out").rglob("*") if ".tmp-" in p.name]

        worker.config = preprocess_config(str(tmp_path), str(tmp_path / "out"))
        again = worker(task_for(clip, tmp_path / "out"))
        assert again.ok and again.samples == 2
        assert (tmp_path / "out" / "_parts" / "clip.parquet").is_file()
    finally:
        worker.close()


def test_the_deadline_is_checked_between_decoded_chunks(tmp_path: Path) -> None:
    clip = good_clip(tmp_path / "clip.mp4", seed=1)
    config = preprocess_config(str(tmp_path), str(tmp_path / "out"), video_timeout_sec=1e-3)
    result = VideoWorker(config, isolate=False)(task_for(clip, tmp_path / "out"))
    assert not result.ok and result.stage == "timeout"
    assert "preprocess.video_timeout_sec (0.001 s)" in result.reason
    assert not (tmp_path / "out" / "_parts" / "clip.parquet").exists()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    assynch = str(Path(sys.executable).parent / "assynch")
    return subprocess.run([assynch, "preprocess", "--config", "configs/quickstart.yaml", *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_reports_bad_config_and_missing_input_in_one_line(tmp_path: Path) -> None:
    bad_config = run_cli("--set", "preprocess.rows_per_shard=0")
    assert bad_config.returncode == 2
    assert "preprocess.rows_per_shard" in bad_config.stderr
    assert "Traceback" not in bad_config.stderr

    missing = run_cli("--input", str(tmp_path / "nowhere"), "--output", str(tmp_path / "out"))
    assert missing.returncode == 2
    errors = [line for line in missing.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "does not exist" in errors[0]
    assert "Traceback" not in missing.stderr
    assert not (tmp_path / "out").exists()
