"""Load a trained model as a torch `StreamingModel`, from the registry, a run or a checkpoint.

    model, config = load_streaming_model("models:/as-synchformer@candidate")

Accepted: `models:/NAME@ALIAS`, `models:/NAME/VERSION`, `models:/<model_id>` (what
`TrainingRun.log_and_register_model` returns as `model_uri`), `runs:/RUN_ID/model`, or a
checkpoint path (a `model.pt` from `save_model_checkpoint` or a training checkpoint folder holding
one; local or s3://). Only the weights file is read, with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import mlflow
from mlflow.entities.model_registry import RegisteredModel as MlflowRegisteredModel
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.tracking import MlflowClient

from assynch.config import AssynchConfig
from assynch.errors import UserError
from assynch.models import StreamingModel, load_model_checkpoint
from assynch.tracking.checkpoints import local_checkpoint_file
from assynch.tracking.pyfunc import WEIGHTS_ARTIFACT
from assynch.tracking.uri import (
    TrackingError,
    check_tracking_server,
    default_tracking_uri,
    normalise_tracking_uri,
    using_tracking_uri,
)

_MODELS_ALIAS = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/]+)/?$")
_MODELS_VERSION = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)/?$")
_MODELS_ID = re.compile(r"^models:/(?P<model_id>m-[0-9a-f]+)/?$")
_RUNS = re.compile(r"^runs:/(?P<run_id>[0-9a-f]+)/(?P<path>.+?)/?$")


def _load_checkpoint_file(path: Path, source: str) -> tuple[StreamingModel, AssynchConfig]:
    try:
        return load_model_checkpoint(path)
    except (ValueError, FileNotFoundError) as exc:
        raise UserError(f"{source}: {exc}") from None


def load_streaming_model(uri: str, *, tracking_uri: str | None = None
                         ) -> tuple[StreamingModel, AssynchConfig]:
    """The model at `uri` (eval mode, CPU) and the config it was trained with.

    `tracking_uri` (for models:/ and runs:/): default $MLFLOW_TRACKING_URI, else
    sqlite:///<cwd>/mlflow.db. Any bad input -> one-line UserError naming it and the fix.
    """
    uri = uri.strip()
    if not uri.startswith(("models:/", "runs:/")):
        if re.match(r"^[a-z][a-z0-9+.-]*:/", uri) and not uri.startswith(("s3://", "file://")):
            raise UserError(
                f"unknown model URI {uri!r}; use models:/NAME@ALIAS, models:/NAME/VERSION, "
                "runs:/RUN_ID/model or a checkpoint path (local or s3://)"
            )
        with tempfile.TemporaryDirectory() as scratch:
            return _load_checkpoint_file(local_checkpoint_file(uri, Path(scratch)), uri)
    tracking = normalise_tracking_uri(tracking_uri) if tracking_uri else default_tracking_uri()
    check_tracking_server(tracking)
    with using_tracking_uri(tracking), tempfile.TemporaryDirectory() as scratch:
        _check_exists(uri, tracking)
        weights = _download_weights(uri, tracking, Path(scratch))
        return _load_checkpoint_file(weights, uri)


def _registered_names(client: MlflowClient) -> str:
    names = [m.name for m in client.search_registered_models(max_results=20)]
    return ", ".join(names) if names else "none"


def _check_exists(uri: str, tracking: str) -> None:
    """Resolve registry and run references ourselves, for errors that say what is missing."""
    client = MlflowClient(tracking, registry_uri=tracking)
    where = f"at {tracking}"
    try:
        if match := _MODELS_ALIAS.match(uri):
            name, alias = match["name"], match["alias"]
            model = _registered_model(client, name, where)
            if alias not in model.aliases:
                known = ", ".join(sorted(model.aliases)) or "none"
                raise TrackingError(
                    f"{uri}: registered model {name!r} has no alias {alias!r} {where} "
                    f"(its aliases: {known}); use one of those or models:/{name}/VERSION"
                )
        elif match := _MODELS_VERSION.match(uri):
            name, version = match["name"], match["version"]
            _registered_model(client, name, where)
            try:
                client.get_model_version(name, version)
            except MlflowException:
                raise TrackingError(
                    f"{uri}: registered model {name!r} has no version {version} {where}; "
                    f"see its versions in the MLflow UI or use models:/{name}@ALIAS"
                ) from None
        elif match := _MODELS_ID.match(uri):
            try:
                client.get_logged_model(match["model_id"])
            except MlflowException:
                raise TrackingError(f"{uri}: no logged model with this id {where}") from None
        elif match := _RUNS.match(uri):
            try:
                client.get_run(match["run_id"])
            except MlflowException:
                raise TrackingError(
                    f"{uri}: no run {match['run_id']} {where}; copy the run id from the "
                    "MLflow UI or use models:/NAME@ALIAS"
                ) from None
        else:
            raise TrackingError(
                f"malformed model URI {uri!r}; use models:/NAME@ALIAS, models:/NAME/VERSION "
                "or runs:/RUN_ID/model"
            )
    except MlflowException as exc:
        raise TrackingError(f"{uri}: {exc.message.splitlines()[0]} ({where})") from None


def _registered_model(client: MlflowClient, name: str, where: str) -> MlflowRegisteredModel:
    try:
        return client.get_registered_model(name)
    except MlflowException:
        raise TrackingError(
            f"no registered model named {name!r} {where} (registered: "
            f"{_registered_names(client)}); check tracking.registered_model and the tracking URI"
        ) from None


def _download_weights(uri: str, tracking: str, scratch: Path) -> Path:
    """Download the logged model and return its weights file (an assynch pyfunc only)."""

    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(scratch),
                                                         tracking_uri=tracking))
    except MlflowException as exc:
        raise TrackingError(
            f"{uri}: cannot download the model ({exc.message.splitlines()[0]})"
        ) from None
    if not (local / "MLmodel").is_file():
        raise UserError(f"{uri} is not an MLflow model (no MLmodel file); point at the model "
                        "itself, e.g. runs:/RUN_ID/model")
    flavor = Model.load(str(local)).flavors.get("python_function", {})
    artifacts = flavor.get("artifacts", {})
    weights = artifacts.get(WEIGHTS_ARTIFACT, {}).get("path")
    if not weights or not (local / weights).is_file():
        raise UserError(
            f"{uri} is not an assynch model (no '{WEIGHTS_ARTIFACT}' artifact); load it with "
            "mlflow.pyfunc.load_model instead"
        )
    return local / weights
