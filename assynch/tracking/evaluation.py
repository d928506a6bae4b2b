"""MLflow side of evaluation: resolve a model URI, log evaluation runs (linked to the model
version and, with MLflow 3, to the logged model), find the champion and its numbers, move the
alias, and read runs back for `assynch compare`.

Everything MLflow-specific about evaluation lives here; the logic is in assynch/eval/.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assynch.config import AssynchConfig
from assynch.errors import UserError
from assynch.eval.compare import ComparedRun
from assynch.eval.job import EvaluationResult, ModelInfo, ResolvedModel
from assynch.eval.metrics import METRIC_NAMES
from assynch.eval.promotion import PromotionDecision
from assynch.tracking.loading import load_streaming_model
from assynch.tracking.uri import check_tracking_server, resolve_tracking_uri

log = logging.getLogger(__name__)

RUN_TYPE_TAG = "assynch.run_type"
TAG = "assynch.eval."
DEFAULT_EXPERIMENT = "assynch-evaluation"
URI_FORMS = "models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/PATH or a checkpoint path"


class ModelNotFoundError(UserError, ValueError):
    """A model URI that names nothing loadable."""


# --- tracking server ---------------------------------------------------------------------------


def tracking_uri_for(config: AssynchConfig, override: str | None = None) -> str:
    """`override`, else the tracking helpers' choice (config, then `MLFLOW_TRACKING_URI`, then
    the embedded sqlite store)."""
    return override or resolve_tracking_uri(config)


def _client(tracking_uri: str) -> Any:
    """A client bound to `tracking_uri` (also the registry). Nothing here sets MLflow's global
    tracking URI: it would leak into the caller and, through the environment, its children."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


# --- model URIs --------------------------------------------------------------------------------


_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))$")
_RUNS_URI = re.compile(r"^runs:/(?P<run_id>[^/]+)(?:/(?P<path>.*))?$")


_LOGGED_MODEL_SOURCE = re.compile(r"^models:/(?P<model_id>m-[0-9a-f]+)$")


def logged_model_id(version: Any) -> str | None:
    """The MLflow 3 LoggedModel behind a model version. Over REST `ModelVersion.model_id` comes
    back empty (mlflow 3.17 leaves it out of the proto), so read it from the source too."""
    model_id = getattr(version, "model_id", None)
    if model_id:
        return str(model_id)
    match = _LOGGED_MODEL_SOURCE.match(str(getattr(version, "source", "") or ""))
    return match["model_id"] if match else None


def _logged_model_of_run(client: Any, run: Any, name: str | None) -> str | None:
    """The MLflow 3 LoggedModel that `runs:/RUN_ID/NAME` names, when there is one."""
    if not name:
        return None
    try:
        found = client.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{run.info.run_id}' AND name = '{name}'",
            max_results=1,
        )
    except Exception:  # an older server without logged models: no model-linked metrics
        return None
    return str(found[0].model_id) if found else None


def describe_model(uri: str, client: Any) -> ModelInfo:
    """Registry/run facts about `uri` (ModelNotFoundError when the registry has no such model)."""
    from mlflow.exceptions import MlflowException

    models = _MODELS_URI.match(uri)
    runs = _RUNS_URI.match(uri)
    try:
        if models:
            name = models["name"]
            if models["alias"]:
                version = client.get_model_version_by_alias(name, models["alias"])
            elif models["version"] == "latest":
                versions = client.search_model_versions(f"name = '{name}'")
                if not versions:
                    raise MlflowException(f"registered model {name!r} has no versions")
                version = max(versions, key=lambda v: int(v.version))
            else:
                version = client.get_model_version(name, models["version"])
            experiment_id = (
                client.get_run(version.run_id).info.experiment_id if version.run_id else None
            )
            return ModelInfo(
                uri=uri, name=version.name, version=str(version.version),
                model_id=logged_model_id(version), run_id=version.run_id,
                experiment_id=experiment_id,
            )
        if runs:
            run = client.get_run(runs["run_id"])
            return ModelInfo(uri=uri, run_id=run.info.run_id,
                             experiment_id=run.info.experiment_id,
                             model_id=_logged_model_of_run(client, run, runs["path"]))
    except MlflowException as exc:
        raise ModelNotFoundError(
            f"model {uri} not found in MLflow at {client.tracking_uri} "
            f"({str(exc).splitlines()[0]}); list registered models in the MLflow UI or pass "
            f"one of {URI_FORMS}"
        ) from None
    return ModelInfo(uri=uri)


def resolve_model(uri: str, *, tracking_uri: str) -> ResolvedModel:
    """Load the streaming model (eval mode) and its config behind `uri`, with its registry facts
    (`load_streaming_model` does the loading)."""
    is_mlflow = uri.startswith(("models:/", "runs:/"))
    if not is_mlflow and re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", uri) and not uri.startswith(
        "file://"
    ):
        raise ModelNotFoundError(f"model {uri}: unknown URI scheme; pass one of {URI_FORMS}")
    if is_mlflow and not (_MODELS_URI.match(uri) or _RUNS_URI.match(uri)):
        raise ModelNotFoundError(f"model {uri}: malformed URI; pass one of {URI_FORMS}")
    info = ModelInfo(uri=uri)
    if is_mlflow:
        check_tracking_server(tracking_uri)
        info = describe_model(uri, _client(tracking_uri))
    model, config = load_streaming_model(uri, tracking_uri=tracking_uri)
    return ResolvedModel(model=model.eval(), config=config, info=info)


# --- evaluation runs ---------------------------------------------------------------------------


def _shard_dataset(report: dict[str, Any]) -> Any:
    """The shard split as an MLflow dataset entity: source its `_manifest.json`, digest the data
    digest."""
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    data = report["data"]
    manifest = f"{data['shards'].rstrip('/')}/_manifest.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "can be interpreted in multiple ways"
        source = resolve_dataset_source(manifest)
    dataset = MetaDataset(source=source, name=f"{Path(data['shards']).name}:{data['split']}",
                          digest=data["digest"])
    return dataset._to_mlflow_entity()


def _clean(metrics: dict[str, Any]) -> dict[str, float]:
    return {key: float(value) for key, value in metrics.items() if value is not None}


def artifact_location_for(tracking_uri: str) -> str | None:
    """For a SQLite store without a server, artifacts beside the database (`mlartifacts/`)
    instead of `./mlruns` under whatever folder the job ran in; None (the server's choice)
    otherwise."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    return (database.parent / "mlartifacts").resolve().as_uri()


@dataclass
class MlflowEvaluationTracker:
    """`assynch.eval.job.Tracker` on an MLflow tracking server / store."""

    tracking_uri: str
    client: Any = field(init=False)

    def __post_init__(self) -> None:
        check_tracking_server(self.tracking_uri)
        self.client = _client(self.tracking_uri)

    def champion(self, name: str, alias: str) -> ModelInfo | None:
        from mlflow.exceptions import MlflowException

        try:
            version = self.client.get_model_version_by_alias(name, alias)
        except MlflowException:
            return None
        return ModelInfo(
            uri=f"models:/{name}/{version.version}", name=name, version=str(version.version),
            model_id=logged_model_id(version), run_id=version.run_id,
        )

    def find_evaluation(
        self, info: ModelInfo, digest: str, split: str
    ) -> dict[str, float] | None:
        experiments = [e.experiment_id for e in self.client.search_experiments()]
        runs = self.client.search_runs(
            experiment_ids=experiments,
            filter_string=(
                f"tags.`{RUN_TYPE_TAG}` = 'evaluation' and tags.`{TAG}model_name` = '{info.name}' "
                f"and tags.`{TAG}model_version` = '{info.version}' and "
                f"tags.`{TAG}data_digest` = '{digest}' and tags.`{TAG}split` = '{split}' and "
                f"attributes.status = 'FINISHED'"
            ),
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        for run in runs:
            metrics = run.data.metrics
            if "streaming/acc1" in metrics and "streaming/emd_sec" in metrics:
                return {"acc1": metrics["streaming/acc1"], "emd_sec": metrics["streaming/emd_sec"]}
        return None

    def _experiment_id(self, result: EvaluationResult, eval_experiment: str | None) -> str:
        if eval_experiment is None:
            run_id = result.report["model"].get("run_id")
            if run_id:
                return str(self.client.get_run(run_id).info.experiment_id)
            eval_experiment = DEFAULT_EXPERIMENT
        experiment = self.client.get_experiment_by_name(eval_experiment)
        if experiment is not None:
            return str(experiment.experiment_id)
        return str(self.client.create_experiment(
            eval_experiment, artifact_location=artifact_location_for(self.tracking_uri)
        ))

    def log_evaluation(self, result: EvaluationResult, eval_experiment: str | None) -> str:
        from mlflow.entities import DatasetInput, InputTag, Metric, Param

        report = result.report
        model, data, settings = report["model"], report["data"], report["settings"]
        tags = {
            RUN_TYPE_TAG: "evaluation",
            f"{TAG}model_uri": model["uri"],
            f"{TAG}model_name": model["name"] or "",
            f"{TAG}model_version": model["version"] or "",
            f"{TAG}model_id": model["model_id"] or "",
            f"{TAG}source_run_id": model["run_id"] or "",
            f"{TAG}data_digest": data["digest"],
            f"{TAG}split": data["split"],
            f"{TAG}shards": data["shards"],
        }
        params = {
            "model_uri": model["uri"], "model_kind": model["kind"], "model_preset": model["preset"],
            "model_name": model["name"], "model_version": model["version"],
            "shards": data["shards"], "split": data["split"], "data_digest": data["digest"],
            "samples": data["samples"], "videos": data["videos"],
            "windows_per_sample": data["windows_per_sample"], "modes": ",".join(settings["modes"]),
            "batch_size": settings["batch_size"],
            "bootstrap_resamples": settings["bootstrap_resamples"],
            "bootstrap_seed": settings["bootstrap_seed"], "confidence": settings["confidence"],
        }
        label = f"v{model['version']}" if model["version"] else Path(model["uri"]).stem
        title = " ".join(p for p in ("evaluate", model["name"], label, "on", data["split"]) if p)
        dataset = _shard_dataset(report)
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in _clean(report["headline"]).items()]
        for mode, summary in report["modes"].items():
            for point in summary["curve"]:
                metrics += [
                    Metric(f"{mode}/curve/{name}", float(point[name]["value"]), now,
                           int(point["windows_seen"]))
                    for name in METRIC_NAMES if point[name]["value"] is not None
                ]
        if model["model_id"]:
            # MLflow 3: metrics on the logged model itself (the registry page shows them).
            metrics += [
                Metric(f"{mode}/{name}", float(summary["overall"][name]["value"]), now, 0,
                       model_id=model["model_id"], dataset_name=dataset.name,
                       dataset_digest=dataset.digest)
                for mode, summary in report["modes"].items() for name in METRIC_NAMES
                if summary["overall"][name]["value"] is not None
            ]
        run = self.client.create_run(
            self._experiment_id(result, eval_experiment), tags=tags, run_name=title
        )
        run_id = str(run.info.run_id)
        status = "FAILED"
        try:
            self.client.log_batch(
                run_id, params=[Param(k, str(v)) for k, v in params.items() if v is not None]
            )
            self.client.log_inputs(run_id, datasets=[
                DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "evaluation")])
            ])
            for start in range(0, len(metrics), 500):  # log_batch takes 1000 metrics at most
                self.client.log_batch(run_id, metrics=metrics[start : start + 500])
            if result.folder is not None:
                self.client.log_artifacts(run_id, str(result.folder))
            status = "FINISHED"
        finally:
            self.client.set_terminated(run_id, status)
        if model["name"] and model["version"]:
            self.client.set_model_version_tag(
                model["name"], model["version"], "assynch.last_evaluation_run", run_id
            )
        log.info("evaluation run %s (%s) logged to %s", run_id, title, self.tracking_uri)
        return run_id

    def apply_promotion(
        self, decision: PromotionDecision, name: str, alias: str, run_id: str
    ) -> None:
        if decision.promote:
            assert decision.candidate_version is not None
            self.client.set_registered_model_alias(name, alias, decision.candidate_version)
        self.client.set_tag(run_id, "assynch.promotion.decision",
                            "promoted" if decision.promote else "kept")
        self.client.set_tag(run_id, "assynch.promotion.reason", decision.reason[:5000])
        self.client.log_dict(run_id, {**decision.as_dict(), "alias": alias}, "promotion.json")
        numbers = {
            "promotion/promoted": 1.0 if decision.promote else 0.0,
            "promotion/margin_points": decision.margin_points,
            "promotion/champion_acc1": decision.champion_acc1,
            "promotion/champion_emd_sec": decision.champion_emd_sec,
        }
        for key, value in _clean(numbers).items():
            self.client.log_metric(run_id, key, value)
        if decision.candidate_version is not None:
            self.client.set_model_version_tag(
                name, decision.candidate_version, "assynch.promotion",
                json.dumps({"promoted": decision.promote, "reason": decision.reason,
                            "run_id": run_id}),
            )
        log.info("promotion: %s (%s)", "promoted" if decision.promote else "kept",
                 decision.reason)


# --- reading runs back (assynch compare) -------------------------------------------------------


def _record(run: Any) -> ComparedRun:
    return ComparedRun(
        run_id=run.info.run_id, name=run.info.run_name or run.info.run_id,
        experiment_id=run.info.experiment_id, params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        tags={k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
    )


def fetch_runs(
    tracking_uri: str,
    *,
    experiment: str | None = None,
    run_ids: tuple[str, ...] = (),
    model_uris: tuple[str, ...] = (),
    filter_string: str = "",
) -> list[ComparedRun]:
    """Runs of an experiment (with an optional MLflow filter), given run ids, and the latest
    evaluation run of each model URI. UserError when one of them does not exist."""
    from mlflow.exceptions import MlflowException

    check_tracking_server(tracking_uri)
    client = _client(tracking_uri)
    records: list[ComparedRun] = []
    if experiment is not None:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise UserError(f"no MLflow experiment named {experiment!r} at {tracking_uri}")
        runs = client.search_runs([found.experiment_id], filter_string=filter_string,
                                  max_results=1000)
        records += [_record(run) for run in runs]
    for run_id in run_ids:
        try:
            records.append(_record(client.get_run(run_id)))
        except MlflowException:
            raise UserError(f"no MLflow run {run_id!r} at {tracking_uri}") from None
    for uri in model_uris:
        info = describe_model(uri, client)
        if not info.name:
            raise UserError(f"compare --model needs a registered model URI, got {uri}")
        experiments = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(
            experiments,
            filter_string=(f"tags.`{RUN_TYPE_TAG}` = 'evaluation' and "
                           f"tags.`{TAG}model_name` = '{info.name}' and "
                           f"tags.`{TAG}model_version` = '{info.version}'"),
            order_by=["attributes.start_time DESC"], max_results=1,
        )
        if not runs:
            raise UserError(
                f"model {uri} (version {info.version}) has no evaluation run; run "
                f"`assynch evaluate --model {uri} --data SHARDS` first"
            )
        records.append(_record(runs[0]))
    unique: dict[str, ComparedRun] = {}
    for record in records:
        unique.setdefault(record.run_id, record)
    return list(unique.values())


def metric_history(tracking_uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of a metric over a run, by step."""
    client = _client(tracking_uri)
    history = client.get_metric_history(run_id, key)
    return sorted((int(m.step), float(m.value)) for m in history)
