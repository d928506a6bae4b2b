import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "assynch", *args],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )


def test_config_command_prints_validated_config_with_overrides() -> None:
    result = run_cli("config", "--config", "configs/quickstart.yaml", "--set", "train.epochs=7")
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["train"]["epochs"] == 7
    assert printed["video"]["crop"] == 64


def test_bad_config_is_one_clear_line_without_traceback() -> None:
    result = run_cli("config", "--set", "model.kind=transformer")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "model.kind" in result.stderr and "as_synchformer" in result.stderr
