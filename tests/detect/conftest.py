"""Fixtures of the detect tests: a random tiny checkpoint (for everything but quality)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """How well the session-trained tiny detector did (test_detect_quality.py), pass or xfail."""
    trained = sys.modules.get("tiny_detector")
    for line in getattr(trained, "SUMMARY", []):
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny AS-Synchformer saved as an assynch checkpoint (2 windows per sample)."""
    import torch

    from assynch.config import load_config
    from assynch.models import build_model, save_model_checkpoint

    torch.manual_seed(0)
    config = load_config(CONFIGS / "tiny.yaml", ["time.windows_per_sample=2"])
    path = tmp_path_factory.mktemp("models") / "random.pt"
    return save_model_checkpoint(build_model(config), config, path)
