"""Shared pytest fixtures. Each block belongs to one part of the project; keep them independent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from s3_support import MotoS3

# --- synthetic clips (assynch.synth.clips) ------------------------------------------------------

SYNTH_FIXTURE_COUNT = 3
SYNTH_FIXTURE_DURATION_SEC = 12.0
SYNTH_FIXTURE_SEED = 7


@pytest.fixture(scope="session")
def synth_clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of 3 synthetic clips (`synth_0000.mp4` ... plus their `.json` sidecars), 12 s
    each, 160x120 at 25 fps, 48 kHz mono AAC, default event rates. Read it with
    `assynch.synth.clips.list_clips(folder)`; do not modify it (other tests share it)."""
    from assynch.synth.clips import SynthSpec, generate_clips

    folder = tmp_path_factory.mktemp("synth_clips")
    generate_clips(
        folder,
        count=SYNTH_FIXTURE_COUNT,
        duration_sec=SYNTH_FIXTURE_DURATION_SEC,
        seed=SYNTH_FIXTURE_SEED,
        spec=SynthSpec(width=160, height=120, fps=25.0),
        workers=1,
    )
    return folder


# --- local Ray and an S3-compatible server (preprocessing; usable by any part) ----------------


@pytest.fixture(scope="session")
def ray_local() -> Iterator[Any]:
    """One local Ray for the whole session: 2 CPUs, a 200 MiB object store, no dashboard."""
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        object_store_memory=200 * 1024**2,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",  # tests talk to loopback only
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3]:
    """`moto_server -H 127.0.0.1 -p PORT` as a subprocess for the session."""
    import shutil
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    executable = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    server = subprocess.Popen(
        [executable, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"moto_server did not start on {endpoint}") from None
            time.sleep(0.2)
    yield MotoS3(endpoint)
    server.terminate()
    server.wait(timeout=10)


# --- MLflow tracking server (tracking; usable by any part, e.g. training) --------------------


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1 for the session (SQLite backend, local artifacts
    proxied by the server, 1 worker); yields its URI, e.g. `http://127.0.0.1:PORT`. Tests share
    it: use your own experiment and registered-model names."""
    import os
    import shutil
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    folder = tmp_path_factory.mktemp("mlflow_server")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    executable = shutil.which("mlflow") or str(Path(sys.executable).parent / "mlflow")
    log_file = (folder / "server.log").open("wb")
    server = subprocess.Popen(
        [
            executable, "server",
            "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
            "--artifacts-destination", str(folder / "artifacts"),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ],
        stdout=log_file, stderr=subprocess.STDOUT, cwd=folder,
        # No job runner: it forks ~8 huey processes that tests never use (2 shared cores).
        env={**os.environ, "MLFLOW_TRACKING_URI": "",
             "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                log_file.close()
                tail = (folder / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"mlflow server did not start on {uri}:\n{tail}") from None
            time.sleep(0.3)
    yield uri
    server.terminate()
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=5)
    log_file.close()
