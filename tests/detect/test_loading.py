"""Which model `assynch detect` runs: the registry's `champion`, else `candidate` (the default),
a Synchformer-format checkpoint through the project's importer, a training checkpoint folder."""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from media_files import ClipSpec, write_clip
from typer.testing import CliRunner

from assynch.cli import app
from assynch.config import load_config
from assynch.models import build_model, load_model_checkpoint
from assynch.models.synchformer import to_synchformer_state_dict

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("loading")
    return write_clip(folder / "clip.mp4", ClipSpec(duration_sec=6.0, fps=Fraction(25), width=96,
                                                    height=72))


def detect(*args: str) -> tuple[int, dict]:
    result = CliRunner().invoke(app, ["detect", *args, "--json"])
    assert result.exit_code in (0, 3, 4), result.stderr
    return result.exit_code, json.loads(result.stdout)


def test_without_a_model_the_registry_candidate_runs(
    clip: Path, random_checkpoint: Path, tmp_path: Path
) -> None:
    from assynch.tracking import TrainingRun

    registry = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = load_config(CONFIGS / "tiny.yaml", [
        "time.windows_per_sample=2", f"tracking.tracking_uri={registry}",
        "tracking.experiment=detect-test",
    ])
    with TrainingRun(config, run_name="detect-default") as run:
        registered = run.log_and_register_model(str(random_checkpoint), config, {})
    _, report = detect(str(clip), "--set", f"tracking.tracking_uri={registry}")
    assert report["model"] == "model models:/as-synchformer@candidate (as_synchformer)"
    assert report["windows"] == 1 and registered.version == 1


def test_a_synchformer_format_checkpoint_goes_through_the_importer(
    clip: Path, tmp_path: Path
) -> None:
    config = load_config(CONFIGS / "tiny.yaml", ["model.kind=snapshot"])
    torch.manual_seed(1)
    model = build_model(config)
    path = tmp_path / "synchformer_tiny.pt"
    torch.save({"model": to_synchformer_state_dict(model)}, path)
    _, report = detect(str(clip), "--checkpoint", str(path), "--config",
                       str(CONFIGS / "tiny.yaml"))
    assert report["model"].startswith(f"Synchformer checkpoint {path}")
    assert report["context_windows"] == 1  # a snapshot model has no memory


def test_a_training_checkpoint_folder_holding_model_pt(
    clip: Path, random_checkpoint: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "checkpoint_000003"
    folder.mkdir()
    shutil.copy(random_checkpoint, folder / "model.pt")
    _, report = detect(str(clip), "--checkpoint", str(folder))
    _, config = load_model_checkpoint(random_checkpoint)
    assert report["model"] == f"checkpoint {folder} (as_synchformer)"
    assert report["context_windows"] == config.time.windows_per_sample
