"""The ML engineer's path on a real Ray head (`ray start --head`, token auth): `ray job submit`
of the preprocessing module and then the training module; a training worker SIGKILLed from
outside mid-run (found through Ray's state API); checkpoints in s3:// (moto); `--resume`."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from preprocess_support import good_clip
from train_support import CLIP_COUNT, CLIP_SEC, shard_overrides, train_config

from assynch.preprocess.worker import config_for_workers
from assynch.storage import filesystem

PYTHON = sys.executable


def _write_config(path: Path, config: Any) -> Path:
    path.write_text(yaml.safe_dump(config_for_workers(config), sort_keys=False))  # with secret
    return path


def _checkpoints(fs: Any, run: str) -> list[str]:
    return sorted(p for p in fs.glob(f"{run}/checkpoint_*/train_state.pt"))


def _final_state(fs: Any, run: str, tmp_path: Path) -> dict[str, Any]:
    newest = max(_checkpoints(fs, run), key=lambda p: fs.info(p).get("LastModified", 0))
    local = tmp_path / "state.pt"
    fs.get(newest, str(local))
    return torch.load(local, weights_only=True)["progress"]


def test_submit_preprocess_then_train_survive_a_killed_worker_and_resume(
    ray_head: Any, moto_s3: Any, tmp_path: Path
) -> None:
    clips, shards = tmp_path / "clips", tmp_path / "shards"
    clips.mkdir()
    for index in range(CLIP_COUNT):
        good_clip(clips / f"clip{index}.mp4", seed=index, duration_sec=CLIP_SEC)
    bucket = moto_s3.bucket("runs")
    storage = moto_s3.storage
    config = train_config(
        str(shards), f"s3://{bucket}/runs", *shard_overrides(clips, shards),
        "train.num_workers=2", "train.epochs=5", "train.max_failures=1",
        f"storage.endpoint_url={storage.endpoint_url}", f"storage.region={storage.region}",
        f"storage.access_key_id={storage.access_key_id}",
        f"storage.secret_access_key={storage.secret_access_key.get_secret_value()}",
    )
    config_file = _write_config(tmp_path / "job.yaml", config)

    job = ray_head.submit(PYTHON, "-m", "pipelines.preprocess", "--config", str(config_file))
    assert ray_head.wait_for(job) == "SUCCEEDED", ray_head.logs(job)[-3000:]
    assert (shards / "_manifest.json").is_file()

    fs, runs = filesystem(f"s3://{bucket}/runs", storage)
    run = f"{runs}/faulty"
    job = ray_head.submit(PYTHON, "-m", "pipelines.train", "--config", str(config_file),
                          "--set", "train.run_name=faulty")
    # The kill must land after Ray has taken a checkpoint (one already in the bucket may not be
    # reported yet: a kill then restarts from scratch) and before the short run ends. So the
    # workers' pids are looked up early (a lookup spawns a Python that imports Ray: seconds),
    # and the kill waits for epoch 2's end in the job's log, with three epochs to go.
    deadline = time.monotonic() + 300
    victims: list[int] = []
    while len(victims) != 2:
        assert ray_head.status(job) in ("PENDING", "RUNNING"), ray_head.logs(job)[-3000:]
        assert time.monotonic() < deadline, ray_head.logs(job)[-3000:]
        victims = ray_head.train_worker_pids()
    while "epoch 2 done" not in ray_head.logs(job):
        assert ray_head.status(job) in ("PENDING", "RUNNING"), ray_head.logs(job)[-3000:]
        assert time.monotonic() < deadline, ray_head.logs(job)[-3000:]
        time.sleep(0.2)
    assert _checkpoints(fs, run)
    os.kill(victims[-1], signal.SIGKILL)
    assert ray_head.wait_for(job) == "SUCCEEDED", ray_head.logs(job)[-4000:]
    progress = _final_state(fs, run, tmp_path)
    assert progress["epoch"] == 5 and progress["restarts"] >= 1, progress
    logs = ray_head.logs(job)
    assert "continues from" in logs, logs[-3000:]
    steps_after_five = progress["step"]

    job = ray_head.submit(PYTHON, "-m", "pipelines.train", "--config", str(config_file),
                          "--resume", "faulty", "--set", "train.epochs=6")
    assert ray_head.wait_for(job) == "SUCCEEDED", ray_head.logs(job)[-4000:]
    progress = _final_state(fs, run, tmp_path)
    assert progress["epoch"] == 6 and progress["restarts"] >= 2, progress
    assert progress["step"] > steps_after_five
    assert len(progress["history"]) == 6
