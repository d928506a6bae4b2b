"""Evaluation against a real `mlflow server` on 127.0.0.1: a model registered by the test is
evaluated, the evaluation run, its model-linked metrics, plots and report exist, `--promote`
moves `champion` only when the rule says so, and `assynch compare` reads runs back."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
from eval_support import EvalShards
from mlflow import MlflowClient
from typer.testing import CliRunner

from assynch.cli import app
from assynch.models import load_model_checkpoint
from assynch.tracking import TrainingRun
from pipelines import evaluate

MODEL = "eval-test"


@pytest.fixture(scope="module", autouse=True)
def fluent_mlflow(mlflow_server: str) -> Iterator[None]:
    """Point MLflow's fluent API (this module's log_model and runs) at the server, and restore
    the global tracking URI (and the MLFLOW_TRACKING_URI it exports) afterwards."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(mlflow_server)
    yield
    mlflow.set_tracking_uri(before)  # type: ignore[arg-type]  # None: back to unset


@pytest.fixture(scope="module")
def registry(mlflow_server: str, tiny_checkpoint: Path) -> dict[str, Any]:
    """One model logged the way training logs it (`TrainingRun.log_and_register_model`: a
    models-from-code pyfunc over the checkpoint) in experiment 'training', registered three
    times: eval-test v1 and v2 (the same logged model), eval-fresh v1."""
    _, config = load_model_checkpoint(tiny_checkpoint)
    config = config.model_copy(update={"tracking": config.tracking.model_copy(update={
        "tracking_uri": mlflow_server, "experiment": "training", "registered_model": MODEL,
    })})
    with TrainingRun(config, run_name="train tiny") as run:
        registered = run.log_and_register_model(str(tiny_checkpoint), config, {"val/acc1": 0.0})
    for name in (MODEL, "eval-fresh"):
        mlflow.register_model(f"models:/{registered.model_id}", name)
    return {"client": MlflowClient(mlflow_server), "model_id": registered.model_id,
            "run_id": run.run_id, "experiment_id": run.experiment_id}


def evaluate_model(
    uri: str, server: str, shards: EvalShards, output: Path, capsys: pytest.CaptureFixture[str],
    *extra: str,
) -> tuple[int, str]:
    code = evaluate.main([
        "--config", "configs/quickstart.yaml", "--model", uri, "--data", shards.url, "--local",
        "--mode", "streaming", "--tracking-uri", server, "--output", str(output),
        "--set", "eval.bootstrap_resamples=200", "--set", "eval.batch_size=3", *extra,
    ])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def evaluation_runs(client: MlflowClient, version: str, name: str = MODEL) -> list[Any]:
    experiments = [e.experiment_id for e in client.search_experiments()]
    return list(client.search_runs(
        experiments,
        f"tags.`assynch.run_type` = 'evaluation' and tags.`assynch.eval.model_name` = '{name}' "
        f"and tags.`assynch.eval.model_version` = '{version}'",
    ))


def champion(client: MlflowClient, name: str = MODEL) -> str:
    return str(client.get_model_version_by_alias(name, "champion").version)


def test_evaluation_run_and_promotion_by_the_rule(
    registry: dict[str, Any], mlflow_server: str, eval_shards: EvalShards, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client: MlflowClient = registry["client"]

    # No champion yet: the first evaluated version takes the alias.
    code, out = evaluate_model("models:/eval-fresh/1", mlflow_server, eval_shards,
                               tmp_path / "fresh", capsys, "--promote")
    assert code == 0, out
    assert "promotion: promoted: there is no champion yet" in out
    assert champion(client, "eval-fresh") == "1"
    (run,) = evaluation_runs(client, "1", "eval-fresh")

    # The evaluation run: beside the training run, linked to the version and the logged model.
    assert run.info.experiment_id == registry["experiment_id"]
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["assynch.eval.model_id"] == registry["model_id"]
    assert tags["assynch.eval.source_run_id"] == registry["run_id"]
    assert tags["assynch.promotion.decision"] == "promoted"
    report = json.loads((tmp_path / "fresh" / "report.json").read_text())
    overall = report["modes"]["streaming"]["overall"]
    for name in ("acc1", "acc1_pm1", "emd_sec"):
        assert metrics[f"streaming/{name}"] == pytest.approx(overall[name]["value"])
        assert metrics[f"streaming/{name}_ci_low"] <= metrics[f"streaming/{name}"]
    curve = client.get_metric_history(run.info.run_id, "streaming/curve/emd_sec")
    assert sorted(m.step for m in curve) == [1, 2]
    assert run.inputs.dataset_inputs[0].dataset.digest == report["data"]["digest"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.json", "report.md", "plots", "predictions.parquet", "promotion.json"} <= (
        artifacts)
    plots = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"windows_seen.png", "confusion_streaming.png", "errors_streaming.png",
            "reliability_streaming.png"} == plots
    linked = {m.key: m for m in mlflow.get_logged_model(registry["model_id"]).metrics}
    assert linked["streaming/acc1"].value == pytest.approx(overall["acc1"]["value"])
    assert linked["streaming/emd_sec"].dataset_digest == report["data"]["digest"]
    version = client.get_model_version("eval-fresh", "1")
    assert version.tags["assynch.last_evaluation_run"] == run.info.run_id

    # eval-test: v1 is champion from before evaluations existed (no evaluation run of it).
    client.set_registered_model_alias(MODEL, "champion", "1")
    code, out = evaluate_model(f"models:/{MODEL}/2", mlflow_server, eval_shards,
                               tmp_path / "v2", capsys, "--promote")
    assert code == 0, out
    assert "not promoted" in out and "below the margin of 1 points" in out
    assert champion(client) == "1"  # the same weights gain 0 points < the 1-point margin
    assert len(evaluation_runs(client, "1")) == 1  # the champion was evaluated on these shards
    (kept,) = evaluation_runs(client, "2")
    assert kept.data.tags["assynch.promotion.decision"] == "kept"
    assert kept.data.metrics["promotion/promoted"] == 0.0
    assert kept.data.metrics["promotion/champion_acc1"] == pytest.approx(
        kept.data.metrics["streaming/acc1"])
    decision = json.loads((tmp_path / "v2" / "report.json").read_text())["promotion"]
    assert decision["promote"] is False and decision["champion_version"] == "1"

    # With no margin, equal ACC@1 and an equal (not worse) EMD are enough.
    code, out = evaluate_model(f"models:/{MODEL}@candidate-free-name", mlflow_server,
                               eval_shards, tmp_path / "bad", capsys, "--promote")
    assert code == 2 and "not found" in out
    code, out = evaluate_model(f"models:/{MODEL}/2", mlflow_server, eval_shards,
                               tmp_path / "v2b", capsys, "--promote",
                               "--set", "eval.promote_margin=0")
    assert code == 0, out
    assert champion(client) == "2"
    assert len(evaluation_runs(client, "1")) == 1  # its earlier evaluation was found and reused

    # compare by model URI: each version's latest evaluation run
    result = CliRunner().invoke(app, [
        "compare", "--model", f"models:/{MODEL}/1", "--model", "models:/eval-fresh@champion",
        "--sort", "streaming/emd_sec", "--tracking-uri", mlflow_server,
        "--output", str(tmp_path / "compare"),
    ])
    assert result.exit_code == 0, result.output
    header = next(line for line in (tmp_path / "compare" / "comparison.md").read_text()
                  .splitlines() if line.startswith("| rank"))
    assert "model_name" in header and "model_uri" in header and "split" not in header


def test_unknown_model_uri_is_one_clear_error(
    mlflow_server: str, eval_shards: EvalShards, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for uri, message in (("models:/no-such-model@champion", "not found in MLflow"),
                         ("models:/", "malformed URI"),
                         ("runs:/0123456789abcdef/model", "not found in MLflow")):
        code, out = evaluate_model(uri, mlflow_server, eval_shards, tmp_path, capsys)
        assert code == 2, (uri, out)
        errors = [line for line in out.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], (uri, out)


def test_compare_lists_differing_params_sorted_by_the_chosen_metric(
    mlflow_server: str, tmp_path: Path
) -> None:
    # Not mlflow.set_experiment: its process-wide active experiment would leak into later tests.
    experiment_id = MlflowClient(mlflow_server).create_experiment("compare-test")
    runs = {  # name: (params, streaming/acc1, streaming/emd_sec, curve)
        "small-lr": ({"lr": "0.0001", "seed": "0", "kind": "apa"}, 0.30, 0.90, [0.2, 0.3]),
        "large-lr": ({"lr": "0.001", "seed": "0", "kind": "apa"}, 0.50, 0.70, [0.3, 0.5]),
        "streaming": ({"lr": "0.001", "seed": "0", "kind": "as_synchformer"}, 0.40, 0.60,
                      [0.2, 0.4]),
    }
    ids = {}
    for name, (params, acc1, emd, curve) in runs.items():
        with mlflow.start_run(experiment_id=experiment_id, run_name=name) as run:
            mlflow.log_params(params)
            mlflow.log_metrics({"streaming/acc1": acc1, "streaming/emd_sec": emd})
            for step, value in zip((1, 2), curve, strict=True):
                mlflow.log_metric("streaming/curve/acc1", value, step=step)
            ids[name] = run.info.run_id
    runner = CliRunner()

    result = runner.invoke(app, ["compare", "--experiment", "compare-test", "--tracking-uri",
                                 mlflow_server, "--output", str(tmp_path / "by_acc")])
    assert result.exit_code == 0, result.output
    markdown = (tmp_path / "by_acc" / "comparison.md").read_text()
    table = [line for line in markdown.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    assert header[3:5] == ["kind", "lr"]  # the differing params; seed is the same everywhere
    assert "seed" not in header
    assert [row.split("|")[2].strip() for row in table[2:]] == ["large-lr", "streaming",
                                                                "small-lr"]
    assert "Best: **large-lr**" in markdown
    assert (tmp_path / "by_acc" / "streaming_curve_acc1.png").stat().st_size > 1000
    assert "large-lr" in result.output

    # EMD: lower is better, so ascending; run ids select runs too
    result = runner.invoke(app, [
        "compare", "--run", ids["small-lr"], "--run", ids["streaming"], "--sort",
        "streaming/emd_sec", "--tracking-uri", mlflow_server, "--output", str(tmp_path / "emd"),
    ])
    assert result.exit_code == 0, result.output
    markdown = (tmp_path / "emd" / "comparison.md").read_text()
    rows = [line for line in markdown.splitlines() if line.startswith("| ")][2:]
    assert [row.split("|")[2].strip() for row in rows] == ["streaming", "small-lr"]
    assert "(ascending, best first)" in markdown

    result = runner.invoke(app, ["compare", "--experiment", "no-such-experiment",
                                 "--tracking-uri", mlflow_server])
    assert result.exit_code == 2
    assert "no MLflow experiment named 'no-such-experiment'" in result.output


def test_the_library_leaves_mlflows_global_tracking_uri_alone(
    mlflow_server: str, tmp_path: Path
) -> None:
    from assynch.tracking.evaluation import MlflowEvaluationTracker, fetch_runs

    mlflow.set_tracking_uri("sqlite:///" + str(tmp_path / "other.db"))
    try:
        MlflowEvaluationTracker(mlflow_server)
        assert fetch_runs(mlflow_server) == []
        assert mlflow.get_tracking_uri() == "sqlite:///" + str(tmp_path / "other.db")
    finally:
        mlflow.set_tracking_uri(mlflow_server)


def test_model_uris_resolve_to_their_registry_facts(
    registry: dict[str, Any], mlflow_server: str
) -> None:
    from assynch.tracking.evaluation import describe_model

    client = registry["client"]
    latest = describe_model(f"models:/{MODEL}/latest", client)
    assert (latest.name, latest.version) == (MODEL, "2")
    assert latest.model_id == registry["model_id"] and latest.run_id == registry["run_id"]
    assert latest.experiment_id == registry["experiment_id"]
    from_run = describe_model(f"runs:/{registry['run_id']}/model", client)
    assert from_run.model_id == registry["model_id"] and from_run.name is None


def test_sqlite_experiments_keep_artifacts_beside_the_database(tmp_path: Path) -> None:
    from assynch.tracking.evaluation import artifact_location_for

    assert artifact_location_for(f"sqlite:///{tmp_path}/mlflow.db") == (
        (tmp_path / "mlartifacts").resolve().as_uri())
    assert artifact_location_for("http://127.0.0.1:5000") is None
