"""Kill the job mid-way (SIGKILL to its process group), run it again, compare with a clean run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from preprocess_support import good_clip, preprocess_config, read_all

from assynch.preprocess.job import run_local
from pipelines.preprocess import run

CLIPS = 6


def test_killed_run_resumes_to_exactly_the_rows_of_a_clean_run(
    ray_local: Any, tmp_path: Path
) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    for index in range(CLIPS):
        good_clip(videos / f"clip{index}.mp4", seed=10 + index, duration_sec=30.0)
    killed_out = tmp_path / "killed"
    command = [
        sys.executable, "-m", "pipelines.preprocess", "--config", "configs/quickstart.yaml",
        "--num-cpus", "1",
        *(arg for override in [
            "time.windows_per_sample=2", "preprocess.samples_per_video=2",
            "preprocess.rows_per_shard=3", "preprocess.rows_per_row_group=2",
            "preprocess.video_timeout_sec=120", "preprocess.num_workers=1",
        ] for arg in ("--set", override)),
        "--input", str(videos), "--output", str(killed_out),
    ]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    job = subprocess.Popen(command, start_new_session=True, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = killed_out / "_parts"
    deadline = time.monotonic() + 120
    try:
        while not list(parts.glob("*.parquet")):
            assert job.poll() is None, "the job ended before any video was finished"
            assert time.monotonic() < deadline, "no part appeared in 120 s"
            time.sleep(0.05)
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    time.sleep(1.5)  # the decoding child notices its parent is gone within a second
    finished_before = {p.stem for p in parts.glob("*.parquet")}
    assert finished_before and len(finished_before) < CLIPS
    assert not (killed_out / "_manifest.json").exists()
    before = {p.name: p.stat().st_mtime_ns for p in parts.glob("*.parquet")}

    # The rerun uses this session's Ray; only paths and worker counts differ (not hashed).
    resumed = run(preprocess_config(str(videos), str(killed_out)))
    assert resumed.reused_videos == len(before)
    assert resumed.processed_videos == CLIPS - len(before)
    # The reference: an uninterrupted run of the same job, in-process.
    clean = run_local(preprocess_config(str(videos), str(tmp_path / "clean")), isolate=False)
    assert resumed.manifest["config_hash"] == clean.manifest["config_hash"]

    assert read_all(str(killed_out)).equals(read_all(str(tmp_path / "clean")))
    for split, info in clean.manifest["splits"].items():
        assert resumed.manifest["splits"][split]["shards"] == info["shards"]
        for shard in info["shards"]:
            assert pq.read_table(killed_out / shard["path"]).equals(
                pq.read_table(tmp_path / "clean" / shard["path"]))
    assert not [p for p in killed_out.rglob("*") if ".tmp-" in p.name]
