"""The evaluation job on real shards (made by the preprocessing job) and local Ray: streaming
predictions equal stepping the model by hand, the report's numbers equal the metrics of those
hand-made predictions, and bad input ends in one clear error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from eval_support import EvalShards

from assynch.config import load_config
from assynch.eval.metrics import offset_metrics, streaming_window_counts
from assynch.eval.predict import Prediction
from assynch.eval.report import PLOTS, PREDICTIONS, REPORT_MD, read_report
from assynch.models import Window, load_model_checkpoint
from assynch.samples.model_inputs import stream_sample_to_model_inputs
from assynch.shards.dataset import ShardDataset
from pipelines import evaluate


def job_config(shards: str, model: Path | str, output: Path, *extra: str) -> Any:
    return load_config("configs/quickstart.yaml", [
        f"eval.model={model}", f"eval.shards={shards}", f"eval.output={output}",
        "eval.num_workers=2", "eval.cpus_per_worker=0.5", "eval.batch_size=2",
        "eval.bootstrap_resamples=200", *extra,
    ])


def step_by_hand(checkpoint: Path, shards: str) -> dict[str, dict[str, Any]]:
    """Read every test sample with ShardDataset and step the model one window at a time, one
    sample at a time: {sample_id: {'snapshot', 'streaming': (W, C) probs, 'target', 'video'}}."""
    model, config = load_model_checkpoint(checkpoint)
    out: dict[str, dict[str, Any]] = {}
    with torch.no_grad():
        for batch in ShardDataset(shards, "test", batch_size=1):
            video, audio = stream_sample_to_model_inputs(
                batch["frames"][0], batch["mel"][0], time=config.time, video=config.video,
                audio=config.audio, audio_margin_sec=float(batch["audio_margin_sec"][0]),
                stored_offset_sec=float(batch["offset_sec"][0]),
            )
            state = model.init_state(1)
            streaming, snapshot = [], []
            for index in range(video.shape[0]):
                window = Window(video[index : index + 1], audio[index : index + 1])
                logits, state = model.step(window, state)
                streaming.append(logits.softmax(-1)[0])
                alone, _ = model.step(window, model.init_state(1))
                snapshot.append(alone.softmax(-1)[0])
            out[batch["sample_id"][0]] = {
                "streaming": torch.stack(streaming).numpy(),
                "snapshot": torch.stack(snapshot).numpy(),
                "target": int(batch["offset_class"][0]), "video": batch["video_uid"][0],
            }
    return out


@pytest.fixture(scope="module")
def by_hand(eval_shards: EvalShards, tiny_checkpoint: Path) -> dict[str, dict[str, Any]]:
    return step_by_hand(tiny_checkpoint, eval_shards.url)


@pytest.fixture(scope="module")
def ray_evaluation(
    ray_local: Any, eval_shards: EvalShards, tiny_checkpoint: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Any:
    output = tmp_path_factory.mktemp("ray_eval")
    config = job_config(eval_shards.url, tiny_checkpoint, output)
    return evaluate.run(config, tracking=False, output=str(output / "report"))


def test_streaming_evaluation_on_ray_equals_stepping_by_hand(
    ray_evaluation: Any, by_hand: dict[str, dict[str, Any]]
) -> None:
    predictions: list[Prediction] = ray_evaluation.result.predictions
    expected = by_hand
    assert sorted(p.sample_id for p in predictions) == sorted(expected)
    for prediction in predictions:
        mine = expected[prediction.sample_id]
        assert prediction.offset_class == mine["target"]
        assert prediction.video_uid == mine["video"]
        for mode in ("streaming", "snapshot"):
            np.testing.assert_allclose(prediction.probs[mode], mine[mode], atol=2e-5)
    # the streaming model carries state: after window 2 it differs from window 2 alone
    assert any(
        not np.allclose(p.probs["streaming"][1], p.probs["snapshot"][1], atol=1e-4)
        for p in predictions
    )


def test_report_numbers_are_the_metrics_of_the_hand_made_predictions(
    ray_evaluation: Any, by_hand: dict[str, dict[str, Any]]
) -> None:
    folder = ray_evaluation.result.folder
    report = read_report(folder)
    expected = by_hand
    targets = np.array([e["target"] for e in expected.values()])
    streams = np.stack([e["streaming"] for e in expected.values()])
    snapshots = np.stack([e["snapshot"] for e in expected.values()])

    streaming, snapshot = report["modes"]["streaming"], report["modes"]["snapshot"]
    end = offset_metrics(streams[:, -1], targets)
    every_window = offset_metrics(snapshots.reshape(-1, 21), np.repeat(targets, 2))
    for name in ("acc1", "acc1_pm1", "emd_sec"):
        assert streaming["overall"][name]["value"] == pytest.approx(end[name], abs=1e-5)
        assert snapshot["overall"][name]["value"] == pytest.approx(every_window[name], abs=1e-5)
        stat = streaming["overall"][name]
        assert stat["ci_low"] - 1e-9 <= stat["value"] <= stat["ci_high"] + 1e-9
    assert streaming["overall"]["predictions"] == len(expected) == report["data"]["samples"]
    assert snapshot["overall"]["predictions"] == 2 * len(expected)
    assert [p["windows_seen"] for p in streaming["curve"]] == streaming_window_counts(2)
    first = offset_metrics(streams[:, 0], targets)
    assert streaming["curve"][0]["emd_sec"]["value"] == pytest.approx(first["emd_sec"], abs=1e-5)

    # per class / per video: counts and values from the hand-made predictions
    classes = {c["class"]: c for c in streaming["per_class"]}
    assert set(classes) == set(targets.tolist())
    for label, entry in classes.items():
        chosen = targets == label
        assert entry["predictions"] == int(chosen.sum())
        assert entry["emd_sec"]["value"] == pytest.approx(
            offset_metrics(streams[chosen, -1], targets[chosen])["emd_sec"], abs=1e-5)
    videos = np.array([e["video"] for e in expected.values()])
    for entry in streaming["per_video"]:
        chosen = videos == entry["video_uid"]
        assert entry["acc1_pm1"]["value"] == pytest.approx(
            offset_metrics(streams[chosen, -1], targets[chosen])["acc1_pm1"], abs=1e-5)
    confusion = np.array(streaming["confusion"])
    assert confusion.sum() == len(expected)
    assert confusion[targets[0]].sum() == int((targets == targets[0]).sum())

    # files: markdown, every plot, predictions
    assert "## streaming" in (folder / REPORT_MD).read_text()
    plots = sorted(p.name for p in (folder / PLOTS).iterdir())
    assert plots == sorted(["windows_seen.png"] + [
        f"{kind}_{mode}.png" for kind in ("confusion", "errors", "reliability")
        for mode in ("snapshot", "streaming")])
    assert all((folder / PLOTS / name).stat().st_size > 1000 for name in plots)
    assert (folder / PREDICTIONS).is_file()


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = evaluate.main(argv)
    return code, capsys.readouterr().err.strip()


def test_bad_input_ends_in_one_clear_error(
    eval_shards: EvalShards, tiny_checkpoint: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    common = ["--no-tracking", "--local", "--output", str(tmp_path / "out")]
    cases = {
        "unknown model": (["--model", str(tmp_path / "missing.pt"), "--data", eval_shards.url],
                          "model checkpoint not found"),
        "unknown scheme": (["--model", "gs://bucket/model.pt", "--data", eval_shards.url],
                           "unknown URI scheme"),
        "other time base": (["--model", str(tiny_checkpoint), "--data",
                             eval_shards.other_time_base],
                            "time.stream_hop_sec: shards 2.0, model 2.4"),
        "empty split": (["--model", str(tiny_checkpoint), "--data", eval_shards.url,
                         "--split", "val"], "no samples in split 'val'"),
        "unfinished shards": (["--model", str(tiny_checkpoint), "--data", str(tmp_path)],
                              "has no _manifest.json"),
        "promote a path": (["--model", str(tiny_checkpoint), "--data", eval_shards.url,
                            "--promote"], "--promote needs MLflow tracking"),
    }
    for name, (argv, message) in cases.items():
        code, err = run_main([*argv, *common], capsys)
        assert code == 2, name
        assert err.startswith("error: ") and message in err, (name, err)
        assert len(err.splitlines()) == 1, (name, err)
    assert not (tmp_path / "out").exists()


def test_cli_passes_arguments_to_the_job_module(
    eval_shards: EvalShards, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """`assynch evaluate` runs `python -m pipelines.evaluate` with the same flags."""
    completed = subprocess.run(
        [sys.executable, "-m", "assynch", "evaluate", "--model", str(tiny_checkpoint), "--data",
         eval_shards.other_time_base, "--no-tracking", "--local"],
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 2
    assert "another time base" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_time_base_check_names_every_difference(eval_shards: EvalShards) -> None:
    from eval_support import model_config

    from assynch.eval.data import open_evaluation_data, time_base_differences

    data = open_evaluation_data(eval_shards.url, "test")
    config = model_config(eval_shards)
    assert time_base_differences(data.manifest, config) == []
    other = load_config("configs/quickstart.yaml", ["time.fps=30", "audio.n_mels=64"])
    differences = time_base_differences(data.manifest, other)
    assert "time.fps: shards 25.0, model 30.0" in differences
    assert "audio.n_mels: shards 128, model 64" in differences
    assert any(d.startswith("time.windows_per_sample") for d in differences)
    assert json.dumps(data.manifest)  # the digest input is JSON
    assert len(data.digest) == 16


class MemoryTracker:
    """The job's Tracker without MLflow: a champion, logged results, alias moves."""

    def __init__(self, champion: Any) -> None:
        self.champion_info = champion
        self.logged: list[Any] = []
        self.applied: list[Any] = []

    def champion(self, name: str, alias: str) -> Any:
        return self.champion_info

    def find_evaluation(self, info: Any, digest: str, split: str) -> None:
        return None

    def log_evaluation(self, result: Any, eval_experiment: str | None) -> str:
        self.logged.append(result)
        return f"run-{len(self.logged)}"

    def apply_promotion(self, decision: Any, name: str, alias: str, run_id: str) -> None:
        self.applied.append((decision, name, alias, run_id))


def test_a_champion_of_another_time_base_is_not_replaced_blindly(
    eval_shards: EvalShards, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    from assynch.eval.job import ModelInfo, ResolvedModel, predict_locally, run_evaluation

    model, config = load_model_checkpoint(tiny_checkpoint)
    other = config.model_copy(update={"time": config.time.model_copy(
        update={"stream_hop_sec": 2.0})})
    models = {
        "models:/m/2": ResolvedModel(model, config, ModelInfo("models:/m/2", "m", "2")),
        "models:/m/1": ResolvedModel(model, other, ModelInfo("models:/m/1", "m", "1")),
    }
    tracker = MemoryTracker(ModelInfo("models:/m/1", "m", "1"))
    job = job_config(eval_shards.url, "models:/m/2", tmp_path, "eval.modes=[streaming]")
    outcome = run_evaluation(
        job, resolve=models.__getitem__, tracker=tracker, promote=True,
        predict=lambda m, c, data, items: predict_locally(
            m, c, data, items, batch_size=3, modes=("streaming",)),
    )
    decision = outcome.decision
    assert decision is not None and not decision.promote
    assert "cannot be scored on this shard set" in decision.reason
    assert "time.stream_hop_sec: shards 2.4, model 2.0" in decision.reason
    assert [r.report["model"]["version"] for r in tracker.logged] == ["2"]
    assert tracker.applied[0][0] is decision and tracker.applied[0][2] == "champion"
    assert read_report(outcome.result.folder)["promotion"]["promote"] is False


def test_shards_on_s3_give_the_same_report(
    moto_s3: Any, ray_evaluation: Any, eval_shards: EvalShards, tiny_checkpoint: Path,
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    bucket = moto_s3.bucket("eval")
    moto_s3.upload_folder(Path(eval_shards.url), bucket, "shards")
    code = evaluate.main([
        "--model", str(tiny_checkpoint), "--data", f"s3://{bucket}/shards", "--mode", "streaming",
        "--no-tracking", "--local", "--output", str(tmp_path / "s3"),
        "--set", "eval.bootstrap_resamples=200",
        "--set", f"storage.endpoint_url={moto_s3.endpoint_url}",
        "--set", "storage.region=us-east-1", "--set", "storage.access_key_id=testing",
        "--set", "storage.secret_access_key=testing-secret",
    ])
    assert code == 0, capsys.readouterr().err
    on_s3 = read_report(tmp_path / "s3")["modes"]["streaming"]["overall"]
    local = ray_evaluation.result.report["modes"]["streaming"]["overall"]
    for name in ("acc1", "acc1_pm1", "emd_sec"):
        assert on_s3[name]["value"] == pytest.approx(local[name]["value"], abs=1e-6)
