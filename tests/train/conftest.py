"""Fixtures of the training tests: real shards made by the real preprocessing job (local Ray)
from flash/beep clips."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from preprocess_support import good_clip
from train_support import CLIP_COUNT, CLIP_SEC, REPO, shard_overrides

from assynch.config import load_config


@pytest.fixture(scope="session")
def train_shards(ray_local: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """8 flash/beep clips -> `python -m pipelines.preprocess`'s `run` on the session's local Ray
    -> shards with a train and a val split (2 rows per shard file)."""
    from pipelines.preprocess import run

    root = tmp_path_factory.mktemp("train_shards")
    clips = root / "clips"
    clips.mkdir()
    for index in range(CLIP_COUNT):
        good_clip(clips / f"clip{index}.mp4", seed=index, duration_sec=CLIP_SEC)
    shards = root / "shards"
    config = load_config(REPO / "configs" / "quickstart.yaml", shard_overrides(clips, shards))
    run(config)
    manifest = json.loads((shards / "_manifest.json").read_text())
    assert manifest["splits"]["train"]["samples"] >= 4, manifest["splits"]
    assert manifest["splits"]["val"]["samples"] >= 1, manifest["splits"]
    return {"root": root, "clips": clips, "shards": str(shards), "manifest": manifest}


# --- a real Ray head (`ray start --head`) for `ray job submit` --------------------------------


class RayHead:
    """A `ray start --head --block` process group on 127.0.0.1 with token authentication.

    `env` is what a client needs (RAY_AUTH_MODE=token and the token, never ~/.ray's file);
    `address` is the dashboard URL that `ray job submit --address` takes."""

    def __init__(self, root: Path) -> None:
        import secrets
        import socket

        def free_port() -> int:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                return int(probe.getsockname()[1])

        self.gcs_port, self.dashboard_port = free_port(), free_port()
        # The session's other Ray (ray_local) holds the default agent ports: a head on the
        # same ports starts without a job agent ("No available agent to submit job").
        self.agent_ports = [free_port() for _ in range(4)]
        self.temp_dir = Path(f"/tmp/assynch-rayhead-{self.gcs_port}")  # short: socket paths
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        self.env = {**os.environ, "RAY_AUTH_MODE": "token",
                    "RAY_AUTH_TOKEN": secrets.token_hex(16)}
        self.env.pop("RAY_ADDRESS", None)
        self.log = root / "head.log"
        self.process: subprocess.Popen[bytes] | None = None

    def ray(self) -> str:
        return str(Path(sys.executable).parent / "ray")

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.ray(), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
             f"--port={self.gcs_port}", "--num-cpus=2", "--object-store-memory=209715200",
             "--include-dashboard=true", "--dashboard-host=127.0.0.1",
             f"--dashboard-port={self.dashboard_port}", f"--temp-dir={self.temp_dir}",
             f"--dashboard-agent-listen-port={self.agent_ports[0]}",
             f"--dashboard-agent-grpc-port={self.agent_ports[1]}",
             f"--metrics-export-port={self.agent_ports[2]}",
             f"--runtime-env-agent-port={self.agent_ports[3]}",
             "--disable-usage-stats"],
            env=self.env, start_new_session=True, stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        request = urllib.request.Request(
            f"{self.address}/api/version",
            headers={"Authorization": f"Bearer {self.env['RAY_AUTH_TOKEN']}"},
        )
        while True:
            try:
                urllib.request.urlopen(request, timeout=2).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"ray head did not start: {self.log.read_text()[-2000:]}") from None
                time.sleep(1)

    def stop(self) -> None:
        """Only this head's processes: its process group, then anything still naming its
        temporary folder (by PID)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=5)  # `ray start --block` takes ~60 s to exit on TERM
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        for pid in self.leftover_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def leftover_pids(self) -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if str(self.temp_dir).encode() in (entry / "cmdline").read_bytes():
                        pids.append(int(entry.name))
        return pids

    def submit(self, *entrypoint: str, working_dir: Path = REPO) -> str:
        """`ray job submit --no-wait`; returns the job id (then `wait_for` it)."""
        deadline = time.monotonic() + 120
        while True:
            completed = subprocess.run(
                [self.ray(), "job", "submit", "--address", self.address, "--no-wait",
                 "--working-dir", str(working_dir), "--", *entrypoint],
                env=self.env, capture_output=True, text=True, timeout=180,
            )
            output = completed.stdout + completed.stderr
            # A fresh head's job agent can lag behind its dashboard on a loaded machine: Ray
            # answers 500 "No available agent to submit job, please try again later".
            if "No available agent" not in output or time.monotonic() > deadline:
                break
            time.sleep(3)
        match = re.search(r"raysubmit_\w+", output)
        assert completed.returncode == 0 and match, output[-3000:]
        return match.group(0)

    def _get(self, path: str) -> Any:
        request = urllib.request.Request(
            f"{self.address}{path}",
            headers={"Authorization": f"Bearer {self.env['RAY_AUTH_TOKEN']}"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def status(self, job_id: str) -> str:
        """The job's status from the dashboard's job REST API (what `ray job status` reads)."""
        return str(self._get(f"/api/jobs/{job_id}")["status"])

    def logs(self, job_id: str) -> str:
        return str(self._get(f"/api/jobs/{job_id}/logs")["logs"])

    def wait_for(self, job_id: str, timeout: float = 400) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status(job_id)
            if status in ("SUCCEEDED", "FAILED", "STOPPED"):
                return status
            time.sleep(2)
        return "TIMEOUT"

    def train_worker_pids(self) -> list[int]:
        """PIDs of live RayTrainWorker actors, through Ray's state API (needs the dashboard)."""
        code = (
            "import json, ray.util.state as s; print(json.dumps([a.pid for a in s.list_actors("
            f"address={self.address!r}, filters=[('class_name', '=', 'RayTrainWorker'), "
            "('state', '=', 'ALIVE')])]))"
        )
        completed = subprocess.run([sys.executable, "-c", code], env=self.env,
                                   capture_output=True, text=True, timeout=60, check=True)
        return [int(pid) for pid in json.loads(completed.stdout.strip().splitlines()[-1])]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayHead]:
    head = RayHead(tmp_path_factory.mktemp("ray_head"))
    head.start()
    try:
        yield head
    finally:
        head.stop()
