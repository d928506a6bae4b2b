"""Fixtures of the evaluation tests: real shard sets made by the preprocessing job, tiny model
checkpoints, and a real `mlflow server` on 127.0.0.1."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from eval_support import SAMPLES_PER_VIDEO, VIDEOS, EvalShards, save_tiny_model
from preprocess_support import preprocess_config, write_inputs

from assynch.preprocess.job import run_local


@pytest.fixture(scope="session")
def eval_shards(tmp_path_factory: pytest.TempPathFactory) -> EvalShards:
    root = tmp_path_factory.mktemp("eval_shards")
    write_inputs(root / "videos", good=VIDEOS, bad=False)
    splits = "{train: 0.0, val: 0.0, test: 1.0}"
    config = preprocess_config(str(root / "videos"), str(root / "shards"), splits=splits,
                               samples_per_video=SAMPLES_PER_VIDEO)
    run_local(config, isolate=False)
    (root / "one").mkdir()
    shutil.copy(root / "videos" / "good0.mp4", root / "one" / "good0.mp4")
    other = preprocess_config(str(root / "one"), str(root / "other"), splits=splits,
                              samples_per_video=1)
    other = other.model_copy(update={"time": other.time.model_copy(
        update={"stream_hop_sec": 2.0})})
    run_local(other, isolate=False)
    return EvalShards(url=str(root / "shards"), config=config, other_time_base=str(root / "other"))


@pytest.fixture(scope="session")
def tiny_checkpoint(eval_shards: EvalShards, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(eval_shards, tmp_path_factory.mktemp("model") / "model.pt")


# --- a real MLflow tracking server (the tracking tests' `mlflow_server` in tests/conftest.py
# replaces this one on merge) ------------------------------------------------------------------


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1 with a SQLite store; yields its http:// URI."""
    root = tmp_path_factory.mktemp("mlflow_server")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    executable = shutil.which("mlflow") or str(Path(sys.executable).parent / "mlflow")
    log = (root / "server.log").open("wb")
    server = subprocess.Popen(
        [executable, "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=1).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(
                    f"mlflow server did not start on {uri}: {(root / 'server.log').read_text()}"
                ) from None
            time.sleep(0.5)
    yield uri
    server.terminate()
    server.wait(timeout=20)
    log.close()
