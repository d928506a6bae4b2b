"""TrainingRun, model logging, registry and loading against a real `mlflow server` (conftest)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from assynch.config import AssynchConfig, load_config
from assynch.errors import UserError
from assynch.models import StreamingModel, build_model, save_model_checkpoint
from assynch.tracking import (
    RegisteredModel,
    TrainingRun,
    check_tracking_server,
    load_streaming_model,
    manifest_digest,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
REPO = Path(__file__).resolve().parents[2]
EXPERIMENT = "tracking-tests"
REGISTERED = "tracking-test-model"


def write_manifest(folder: Path, classes: int) -> dict:
    """A `_manifest.json` in the layout `assynch preprocess` writes (counts only, no shards)."""
    def split(videos: int, samples: int) -> dict:
        histogram = [0] * classes
        for index in range(samples):
            histogram[(index * 7) % classes] += 1
        return {"videos": videos, "samples": samples, "seconds_of_video": 12.0 * videos,
                "offset_histogram": histogram, "shards": []}

    manifest = {
        "format": "assynch-shards/1", "config_hash": "0123456789abcdef",
        "splits": {"train": split(6, 12), "val": split(1, 2), "test": split(1, 2)},
        "videos": 8, "samples": 16, "errors": 0,
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "_manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


@dataclass
class Logged:
    config: AssynchConfig
    model: StreamingModel
    checkpoint_dir: Path
    run_id: str
    registered: RegisteredModel
    manifest: dict
    shards: Path
    video: torch.Tensor
    audio: torch.Tensor
    logits: torch.Tensor


@pytest.fixture(scope="module")
def logged(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Logged:
    """One training-like run: params, metrics, dataset, plots, and a registered tiny model."""
    folder = tmp_path_factory.mktemp("tracking_run")
    config = load_config(CONFIGS / "tiny.yaml", [
        "time.windows_per_sample=2", "model.history_windows=2",
        f"tracking.tracking_uri={mlflow_server}", f"tracking.experiment={EXPERIMENT}",
        f"tracking.registered_model={REGISTERED}", "tracking.alias=candidate",
    ])
    torch.manual_seed(0)
    model = build_model(config).eval()
    checkpoint_dir = folder / "checkpoint_000001"
    save_model_checkpoint(model, config, checkpoint_dir / "model.pt")
    shards = folder / "shards"
    manifest = write_manifest(shards, config.time.num_offset_classes)

    generator = torch.Generator().manual_seed(1)
    t, s = config.time, config.time.segments_per_window
    video = torch.randn(1, 2, s, t.segment_frames, 3, config.video.crop, config.video.crop,
                        generator=generator)
    audio = torch.randn(1, 2, s, config.audio.n_mels, config.audio.segment_mel_frames,
                        generator=generator)
    with torch.inference_mode():
        logits = model(video, audio).logits

    history = [
        {"epoch": 0, "epoch/train_loss": 3.0, "val/loss": 3.1, "val/acc1": 0.05,
         "val/emd_sec": 0.9},
        {"epoch": 1, "epoch/train_loss": 2.5, "val/loss": 2.8, "val/acc1": 0.15,
         "val/emd_sec": 0.7},
    ]
    confusion = np.zeros((21, 21), np.int64)
    confusion[np.arange(21), (np.arange(21) + 1) % 21] = 2
    confusion[5, 5] = 7
    with TrainingRun(config, run_name="tiny-test", tags={"world_size": 2}) as run:
        run.log_shard_dataset(str(shards), "train", manifest)
        run.log_shard_dataset(str(shards), "val", manifest)
        for step in range(3):
            run.log_metrics({"train/loss": 3.0 - step * 0.25, "lr": 1e-4}, step=step)
        for entry in history:
            run.log_epoch_metrics({k: v for k, v in entry.items() if k != "epoch"},
                                  epoch=int(entry["epoch"]))
        with pytest.raises(ValueError, match="per step"):
            run.log_epoch_metrics({"train/loss": 1.0}, epoch=0)
        extra = folder / "notes.txt"
        extra.write_text("a note")
        run.log_artifact(str(extra), "extra")
        run.log_curves_and_confusion(history, confusion, best_epoch=1)
        registered = run.log_and_register_model(str(checkpoint_dir), config,
                                                {"val/acc1": 0.15, "val/emd_sec": 0.7})
        run.log_metrics({"train/after_registering": 1.0}, step=10)  # must not attach to it
        run_id = run.run_id
        assert run.ui_hint == f"{mlflow_server}/#/experiments/{run.experiment_id}/runs/{run_id}"
    return Logged(config, model, checkpoint_dir, run_id, registered, manifest, shards,
                  video, audio, logits)


def client(uri: str) -> MlflowClient:
    return MlflowClient(uri, registry_uri=uri)


def test_run_has_params_tags_metrics_and_dataset(logged: Logged, mlflow_server: str) -> None:
    run = client(mlflow_server).get_run(logged.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "tiny-test"
    params = run.data.params
    assert params["model.kind"] == "as_synchformer"
    assert params["time.windows_per_sample"] == "2"
    assert params["tracking.experiment"] == EXPERIMENT
    assert params["model.pretrained_checkpoint"] == "null"
    assert not any("secret" in key or "access_key" in key for key in params)
    tags = run.data.tags
    assert tags["world_size"] == "2"
    assert tags["version.torch"] == torch.__version__.split("+")[0] or tags["version.torch"]
    for key in ("version.ray", "version.mlflow", "version.av", "hardware", "git_commit"):
        assert tags[key] and tags[key] != "not installed", key

    history = client(mlflow_server).get_metric_history(logged.run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(0, 3.0), (1, 2.75), (2, 2.5)]
    acc = client(mlflow_server).get_metric_history(logged.run_id, "val/acc1")
    assert [(m.step, m.value) for m in acc] == [(0, 0.05), (1, 0.15)]

    inputs = run.inputs.dataset_inputs
    contexts = {
        {t.key: t.value for t in i.tags}["mlflow.data.context"]: i for i in inputs
    }
    assert set(contexts) == {"train", "val"}
    train = contexts["train"]
    assert train.dataset.digest == manifest_digest(logged.manifest)
    assert train.dataset.name == "shards/train"
    assert str(logged.shards / "_manifest.json") in train.dataset.source
    profile = json.loads(train.dataset.profile)
    assert profile["splits"]["train"]["samples"] == 12
    assert profile["splits"]["val"]["videos"] == 1
    assert {t.key: t.value for t in train.tags}["samples"] == "12"


def test_run_artifacts_are_real_files(logged: Logged, mlflow_server: str,
                                      tmp_path: Path) -> None:
    import mlflow

    names = {
        f.path for folder in ("plots", "config", "extra")
        for f in client(mlflow_server).list_artifacts(logged.run_id, folder)
    }
    assert {"plots/curves.png", "plots/confusion_best_epoch.png",
            "plots/confusion_best_epoch.json", "config/resolved_config.yaml",
            "extra/notes.txt"} <= names
    local = Path(mlflow.artifacts.download_artifacts(
        run_id=logged.run_id, artifact_path="plots", dst_path=str(tmp_path),
        tracking_uri=mlflow_server,
    ))
    for png in ("curves.png", "confusion_best_epoch.png"):
        data = (local / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, png
    counts = json.loads((local / "confusion_best_epoch.json").read_text())
    assert counts["best_epoch"] == 1 and counts["rows_true_columns_predicted"][5][5] == 7
    config_text = Path(mlflow.artifacts.download_artifacts(
        run_id=logged.run_id, artifact_path="config/resolved_config.yaml",
        dst_path=str(tmp_path), tracking_uri=mlflow_server,
    )).read_text()
    assert "windows_per_sample: 2" in config_text


def test_registered_version_alias_and_model_metrics(logged: Logged, mlflow_server: str) -> None:
    registered = logged.registered
    assert registered.name == REGISTERED and registered.alias == "candidate"
    version = client(mlflow_server).get_model_version_by_alias(REGISTERED, "candidate")
    assert int(version.version) == registered.version
    assert version.run_id == logged.run_id
    assert registered.model_id in version.source  # models:/m-... (model_id is not sent over REST)
    model = client(mlflow_server).get_logged_model(registered.model_id)
    metrics = {m.key: m.value for m in model.metrics}
    # MLflow also links the run's metrics of the moment to the model; ours are under best/.
    assert {k: v for k, v in metrics.items() if k.startswith("best/")} == {
        "best/val/acc1": 0.15, "best/val/emd_sec": 0.7}
    assert "train/after_registering" not in metrics
    assert model.source_run_id == logged.run_id


def test_pyfunc_loads_in_a_fresh_process_without_pickles(logged: Logged, mlflow_server: str,
                                                         tmp_path: Path) -> None:
    np.save(tmp_path / "video.npy", logged.video.numpy())
    np.save(tmp_path / "audio.npy", logged.audio.numpy())
    script = textwrap.dedent(f"""
        import pathlib, sys, numpy as np, mlflow, mlflow.pyfunc
        uri = "models:/{REGISTERED}@candidate"
        local = pathlib.Path(mlflow.artifacts.download_artifacts(uri, dst_path=sys.argv[1] + "/m"))
        pickles = [p.name for p in local.rglob("*") if p.suffix in (".pkl", ".pickle")]
        assert not pickles, pickles
        flavor = mlflow.models.Model.load(str(local)).flavors["python_function"]
        assert "python_model" not in flavor, flavor  # no pickled PythonModel ...
        assert flavor["model_code_path"].endswith("pyfunc_model_code.py"), flavor  # but code
        assert "assynch" not in sys.modules
        model = mlflow.pyfunc.load_model(uri)
        import assynch
        # Loaded from the package copy inside the model (code/assynch), not from this checkout.
        assert pathlib.Path(assynch.__file__).parent.parent.name == "code", assynch.__file__
        out = model.predict({{"video": np.load(sys.argv[1] + "/video.npy"),
                              "audio": np.load(sys.argv[1] + "/audio.npy")}})
        np.save(sys.argv[1] + "/probabilities.npy", out)
        example = mlflow.models.Model.load(str(local)).load_input_example(str(local))
        assert example["video"].shape[-2:] == (8, 8)  # small; predict resizes it to video.crop
        probabilities = model.predict(example)
        assert probabilities.shape == (1, 1, 21), probabilities.shape
        assert np.allclose(probabilities.sum(-1), 1.0, atol=1e-5)
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(MLFLOW_TRACKING_URI=mlflow_server, TQDM_DISABLE="1")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    probabilities = np.load(tmp_path / "probabilities.npy")
    expected = logged.logits.softmax(dim=-1).numpy()
    assert probabilities.shape == (1, 2, 21) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)


@pytest.mark.parametrize("kind", ["alias", "version", "runs", "model_uri", "checkpoint"])
def test_load_streaming_model_from_every_uri(logged: Logged, mlflow_server: str,
                                             kind: str) -> None:
    uri = {
        "alias": f"models:/{REGISTERED}@candidate",
        "version": f"models:/{REGISTERED}/{logged.registered.version}",
        "runs": f"runs:/{logged.run_id}/model",
        "model_uri": logged.registered.model_uri,
        "checkpoint": str(logged.checkpoint_dir),
    }[kind]
    model, config = load_streaming_model(uri, tracking_uri=mlflow_server)
    assert type(model) is type(logged.model) and not model.training
    assert config.model == logged.config.model and config.time == logged.config.time
    with torch.inference_mode():
        logits = model(logged.video, logged.audio).logits
    torch.testing.assert_close(logits, logged.logits, atol=1e-5, rtol=0)


def test_bad_model_references_raise_one_clear_error(logged: Logged, mlflow_server: str,
                                                    tmp_path: Path) -> None:
    cases = {
        f"models:/{REGISTERED}@nope": ["has no alias 'nope'", "candidate"],
        "models:/no-such-model@candidate": ["no registered model named 'no-such-model'"],
        f"models:/{REGISTERED}/999": ["has no version 999"],
        "runs:/0123456789abcdef0123456789abcdef/model": ["no run 0123456789abcdef"],
        str(tmp_path / "missing" / "model.pt"): ["model checkpoint not found", "missing"],
        "gs://bucket/model.pt": ["unknown model URI"],
    }
    for uri, fragments in cases.items():
        with pytest.raises(UserError) as caught:
            load_streaming_model(uri, tracking_uri=mlflow_server)
        message = str(caught.value)
        assert "\n" not in message, message
        for fragment in fragments:
            assert fragment in message, (uri, message)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_server_fails_fast(logged: Logged) -> None:
    uri = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    with pytest.raises(UserError, match="unreachable") as caught:
        check_tracking_server(uri)
    assert uri in str(caught.value) and "\n" not in str(caught.value)
    config = logged.config.model_copy(update={
        "tracking": logged.config.tracking.model_copy(update={"tracking_uri": uri})})
    with pytest.raises(UserError, match="unreachable"):
        with TrainingRun(config):
            pass
    with pytest.raises(UserError, match="unreachable"):
        load_streaming_model(f"models:/{REGISTERED}@candidate", tracking_uri=uri)
    assert time.monotonic() - started < 15
