"""The embedded default: SQLite in the working folder, artifacts beside it, absolute paths."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from assynch.config import load_config
from assynch.errors import UserError
from assynch.tracking import (
    TrainingRun,
    default_tracking_uri,
    resolve_tracking_uri,
    with_resolved_tracking_uri,
)
from assynch.tracking.uri import normalise_tracking_uri

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    return tmp_path


def test_uri_resolution_order_and_absolute_sqlite(in_tmp: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(CONFIGS / "tiny.yaml")
    assert resolve_tracking_uri(config) == f"sqlite:///{in_tmp.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///from-env/x.db")
    assert resolve_tracking_uri(config) == f"sqlite:///{in_tmp.resolve()}/from-env/x.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert default_tracking_uri() == "http://mlflow.example:5000"
    quickstart = load_config(CONFIGS / "quickstart.yaml")  # config wins over the environment
    assert resolve_tracking_uri(quickstart) == (
        f"sqlite:///{in_tmp.resolve()}/data/quickstart/mlflow.db"
    )
    resolved = with_resolved_tracking_uri(quickstart)  # what the driver hands to workers
    assert resolved.tracking.tracking_uri == resolve_tracking_uri(quickstart)
    assert resolved.model_copy(update={"tracking": quickstart.tracking}) == quickstart
    monkeypatch.chdir(in_tmp / "..")  # a worker elsewhere still gets the same database
    assert resolve_tracking_uri(resolved) == resolved.tracking.tracking_uri
    assert normalise_tracking_uri("sqlite:////abs/m.db") == "sqlite:////abs/m.db"
    for bad in ("mlruns", "file:///tmp/mlruns", "sqlite:///"):
        with pytest.raises(UserError) as caught:
            normalise_tracking_uri(bad)
        assert "\n" not in str(caught.value)


def test_embedded_run_writes_sqlite_and_artifacts_beside_it(in_tmp: Path) -> None:
    config = load_config(CONFIGS / "tiny.yaml", ["tracking.experiment=embedded"])
    elsewhere = in_tmp / "elsewhere"
    elsewhere.mkdir()
    note = in_tmp / "note.txt"
    note.write_text("hello")
    with TrainingRun(config, tags={"world_size": 1}) as run:
        run.log_metrics({"train/loss": 1.5}, step=1)
        run.log_artifact(str(note), "notes")
        run_id = run.run_id
        hint = run.ui_hint
    db = in_tmp / "mlflow.db"
    assert hint.startswith(f"mlflow ui --backend-store-uri sqlite:///{db}") and run_id in hint
    assert db.is_file()
    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("embedded")
    assert experiment.artifact_location == (in_tmp / "mlartifacts").resolve().as_uri()
    finished = client.get_run(run_id)
    assert finished.info.status == "FINISHED"
    assert finished.data.metrics["train/loss"] == 1.5
    assert finished.data.params["model.preset"] == "tiny"
    artifacts = in_tmp / "mlartifacts" / run_id / "artifacts"
    assert (artifacts / "notes" / "note.txt").read_text() == "hello"
    assert (artifacts / "config" / "resolved_config.yaml").is_file()
    assert not (in_tmp / "mlruns").exists()


def test_failed_block_marks_the_run_failed(in_tmp: Path) -> None:
    config = load_config(CONFIGS / "tiny.yaml", ["tracking.experiment=embedded-fail"])
    with pytest.raises(RuntimeError, match="boom"):
        with TrainingRun(config) as run:
            run_id = run.run_id
            raise RuntimeError("boom")
    client = MlflowClient(f"sqlite:///{in_tmp / 'mlflow.db'}")
    assert client.get_run(run_id).info.status == "FAILED"
    import mlflow

    assert mlflow.active_run() is None


def test_sqlite_folder_that_cannot_be_made_is_a_user_error(in_tmp: Path) -> None:
    blocker = in_tmp / "a-file"
    blocker.write_text("not a folder")  # (chmod would not stop root)
    config = load_config(CONFIGS / "tiny.yaml",
                         [f"tracking.tracking_uri=sqlite:///{blocker}/sub/mlflow.db"])
    with pytest.raises(UserError, match="cannot create the folder") as caught:
        with TrainingRun(config):
            pass
    assert "\n" not in str(caught.value)


def test_checkpoint_loads_from_s3(moto_s3, tmp_path: Path,  # type: ignore[no-untyped-def]
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from assynch.models import build_model, save_model_checkpoint
    from assynch.tracking import load_streaming_model

    config = load_config(CONFIGS / "tiny.yaml", ["model.kind=apa"])
    torch.manual_seed(3)
    model = build_model(config).eval()
    folder = tmp_path / "checkpoint_000002"
    save_model_checkpoint(model, config, folder / "model.pt")
    bucket = moto_s3.bucket("checkpoints")
    moto_s3.upload_folder(folder, bucket, "run/checkpoint_000002")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_s3.endpoint_url)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    for url in (f"s3://{bucket}/run/checkpoint_000002",
                f"s3://{bucket}/run/checkpoint_000002/model.pt"):
        loaded, loaded_config = load_streaming_model(url)
        assert loaded_config.model.kind == "apa"
        for key, value in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key
    with pytest.raises(UserError, match="model checkpoint not found"):
        load_streaming_model(f"s3://{bucket}/run/checkpoint_999999")


def test_resumed_run_continues_and_bad_inputs_leave_it_usable(in_tmp: Path) -> None:
    config = load_config(CONFIGS / "tiny.yaml", ["tracking.experiment=embedded-resume"])
    manifest = {"config_hash": "x", "splits": {"train": {"videos": 1, "samples": 2,
                                                          "seconds_of_video": 12.0}}}
    with TrainingRun(config, run_name="first") as run:
        run.log_metrics({"train/loss": 2.0}, step=1)
        with pytest.raises(UserError, match="no split 'val'"):
            run.log_shard_dataset(str(in_tmp / "shards"), "val", manifest)
        with pytest.raises(UserError, match="model checkpoint not found"):
            run.log_and_register_model(str(in_tmp / "no-checkpoint"), config, {})
        run.log_metrics({"train/loss": 1.9}, step=2)
        run_id = run.run_id
    with TrainingRun(config, tags={"restart": 1}, run_id=run_id) as resumed:
        assert resumed.run_id == run_id
        resumed.log_metrics({"train/loss": 1.5}, step=3)
    client = MlflowClient(f"sqlite:///{in_tmp / 'mlflow.db'}")
    history = client.get_metric_history(run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(1, 2.0), (2, 1.9), (3, 1.5)]
    finished = client.get_run(run_id)
    assert finished.info.status == "FINISHED" and finished.data.tags["resumed"] == "true"
    assert len(client.search_runs([finished.info.experiment_id])) == 1
    changed = load_config(CONFIGS / "tiny.yaml",
                          ["tracking.experiment=embedded-resume", "train.epochs=9"])
    with pytest.raises(UserError, match="train.epochs"):
        with TrainingRun(changed, run_id=run_id):
            pass
