"""Training logs to a real `mlflow server` (rank 0): the run, its params, step and epoch
metrics, dataset inputs, artifacts, the registered version and its alias; the registered model
loads back through mlflow.pyfunc and through the project's loader and predicts the same
logits as the model training kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow import MlflowClient
from train_support import train_config

from assynch.models import load_model_checkpoint
from assynch.tracking import load_streaming_model
from assynch.tracking.uri import using_tracking_uri
from assynch.train.local import run_local


def test_training_is_tracked_registered_and_loads_back(
    train_shards: dict[str, Any], mlflow_server: str, tmp_path: Path
) -> None:
    config = train_config(
        train_shards["shards"], str(tmp_path), "train.tracking=true", "train.epochs=2",
        "train.max_steps_per_epoch=2", f"tracking.tracking_uri={mlflow_server}",
        "tracking.experiment=train-tracking-test", "tracking.registered_model=train-test",
    )
    progress = run_local(config, tmp_path / "run")
    client = MlflowClient(mlflow_server, registry_uri=mlflow_server)
    run = client.get_run(progress.tracking_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "2" and "storage.secret_access_key" not in str(
        run.data.params)
    assert {"step/cross_entropy", "step/emd", "step/samples_per_sec", "step/data_wait_share",
            "lr/heads", "val/acc1", "val/emd_sec"} <= set(run.data.metrics)
    steps = client.get_metric_history(run.info.run_id, "step/cross_entropy")
    assert [m.step for m in steps] == [1, 2, 3, 4]
    inputs = {d.dataset.name: d.dataset for d in run.inputs.dataset_inputs}
    assert len(inputs) == 2 and all(ds.source.endswith("_manifest.json") or "_manifest" in
                                    ds.source for ds in inputs.values())
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "config" in artifacts
    pictures = [a.path for folder in artifacts
                for a in client.list_artifacts(run.info.run_id, folder) if a.path.endswith(".png")]
    assert len(pictures) >= 2, artifacts  # curves and the confusion matrix of the best epoch

    version = client.get_model_version_by_alias("train-test", "candidate")
    kept, _ = load_model_checkpoint(
        tmp_path / "run" / f"checkpoint_{progress.best_epoch:06d}" / "model.pt")
    loaded, loaded_config = load_streaming_model(f"models:/train-test/{version.version}",
                                                 tracking_uri=mlflow_server)
    time = loaded_config.time
    generator = torch.Generator().manual_seed(0)
    crop, mel_frames = loaded_config.video.crop, 66
    video = torch.randn(1, 2, time.segments_per_window, time.segment_frames, 3, crop, crop,
                        generator=generator)
    audio = torch.randn(1, 2, time.segments_per_window, loaded_config.audio.n_mels, mel_frames,
                        generator=generator)
    kept.eval()
    with torch.no_grad():
        expected = kept(video, audio).logits
        got = loaded(video, audio).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    with using_tracking_uri(mlflow_server):
        pyfunc = mlflow.pyfunc.load_model(f"models:/train-test/{version.version}")
    probabilities = pyfunc.predict({"video": video.numpy(), "audio": audio.numpy()})
    np.testing.assert_allclose(probabilities, torch.softmax(expected, -1).numpy(), atol=1e-5)
