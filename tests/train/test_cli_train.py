"""`assynch train` runs `python -m pipelines.train` with its arguments unchanged."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "assynch", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=180)


def test_train_help_is_the_pipeline_modules_help() -> None:
    result = run_cli("train", "--help")
    assert result.returncode == 0, result.stderr
    assert "python -m pipelines.train" in result.stdout and "--resume" in result.stdout


def test_missing_shards_is_one_line_and_exit_2_before_ray(tmp_path: Path) -> None:
    result = run_cli("train", "--config", "configs/quickstart.yaml", "--shards",
                     str(tmp_path / "nowhere"), "--set", f"train.storage_path={tmp_path}")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "_manifest.json" in lines[0], result.stderr
    assert "Started a local Ray" not in result.stderr  # failed before Ray started
