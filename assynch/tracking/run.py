"""One MLflow run per training job (rank 0 only): params, metrics, data, artifacts, the model.

    with TrainingRun(config, tags={"world_size": "2"}) as run:
        run.log_shard_dataset(config.train.shards, "train", manifest)
        run.log_metrics({"train/loss": 2.1, "lr": 1e-4}, step=10)
        run.log_epoch_metrics({"val/acc1": 0.2}, epoch=0)
        run.log_curves_and_confusion(history, confusion, best_epoch=0)
        registered = run.log_and_register_model("runs/.../checkpoint_0001/model.pt", config,
                                                {"val/acc1": 0.2})

What lands where is described in docs/TRACKING.md.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import mlflow
import numpy as np
from mlflow.data.meta_dataset import MetaDataset
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import assynch
from assynch.config import AssynchConfig, dump_config
from assynch.errors import UserError
from assynch.eval.plots import confusion_figure, curves_figure, save_figure
from assynch.tracking.checkpoints import local_checkpoint_file
from assynch.tracking.uri import (
    TrackingError,
    check_tracking_server,
    resolve_tracking_uri,
    sqlite_artifact_location,
    ui_hint,
    using_tracking_uri,
)

log = logging.getLogger(__name__)

MODEL_NAME_IN_RUN = "model"  # runs:/<run_id>/model
CONFIG_ARTIFACT_PATH = "config"
PLOTS_ARTIFACT_PATH = "plots"
VERSIONED_PACKAGES = ("torch", "ray", "mlflow", "av", "torchaudio", "numpy", "pyarrow")
_PARAM_VALUE_LIMIT = 6000  # MLflow's limit on one param value
_PARAMS_PER_BATCH = 100


@dataclass(frozen=True)
class RegisteredModel:
    """A registered model version. `model_uri` is the logged model (`models:/m-...`), which
    `load_streaming_model` and `mlflow.pyfunc.load_model` both accept."""

    name: str
    version: int
    alias: str
    model_uri: str
    model_id: str

    @property
    def alias_uri(self) -> str:
        return f"models:/{self.name}@{self.alias}"

    @property
    def version_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def flatten_config(config: AssynchConfig) -> dict[str, str]:
    """The resolved config as MLflow params, `section.field[.sub]` -> text. Storage credentials
    are left out; lists are JSON; None is 'null'."""
    data = config.model_dump(
        mode="json", exclude={"storage": {"access_key_id", "secret_access_key"}}
    )
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
            return
        text = json.dumps(value) if isinstance(value, list | None) else str(value)
        flat[prefix] = text[:_PARAM_VALUE_LIMIT]

    walk("", data)
    return flat


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _git_commit() -> str | None:
    source = Path(assynch.__file__).resolve().parent.parent
    try:
        result = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True,
            timeout=10, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = result.stdout.strip()
    if result.returncode != 0 or not commit:
        return None
    dirty = subprocess.run(
        ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True, text=True, timeout=10, check=False,
    ).stdout.strip()
    return f"{commit}-dirty" if dirty else commit


def _hardware() -> str:
    import torch

    parts = [f"{platform.machine()}", f"{os.cpu_count()} CPUs"]
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        parts.append(f"{len(names)}x {names[0]}")
    else:
        parts.append("no GPU")
    return ", ".join(parts)


def run_tags(extra: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Tags every training run carries: git commit, package versions, hardware, plus `extra`
    (e.g. world_size) as given."""
    tags = {f"version.{name}": _package_version(name) for name in VERSIONED_PACKAGES}
    tags["version.assynch"] = _package_version("assynch")
    tags["version.python"] = platform.python_version()
    tags["hardware"] = _hardware()
    commit = _git_commit()
    if commit:
        tags["git_commit"] = commit
        tags["mlflow.source.git.commit"] = commit.removesuffix("-dirty")
    for key, value in (extra or {}).items():
        tags[str(key)] = str(value)
    return tags


def manifest_digest(manifest: Mapping[str, Any]) -> str:
    """16 hex digits of sha256 over the manifest as canonical JSON (sorted keys, no spaces):
    the shard set's identity, independent of how `_manifest.json` was indented."""
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ShardSetDataset(MetaDataset):
    """A shard set as an MLflow dataset: source = its `_manifest.json`, digest = the manifest's
    hash, profile = the sample counts per split (shown in the MLflow UI)."""

    def __init__(self, source: Any, name: str, digest: str, profile: dict[str, Any]) -> None:
        self._profile = profile
        super().__init__(source=source, name=name, digest=digest)

    @property
    def profile(self) -> Any | None:
        return self._profile

    def to_dict(self) -> dict[str, str]:
        config = super().to_dict()
        config["profile"] = json.dumps(self._profile)
        return config


def _dataset_source(url: str) -> Any:
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.http_dataset_source import HTTPDatasetSource

    try:
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": same class twice
            warnings.simplefilter("ignore", UserWarning)
            return resolve_dataset_source(url)
    except MlflowException:
        return HTTPDatasetSource(url)


def _join_url(base: str, name: str) -> str:
    if "://" in base:
        return f"{base.rstrip('/')}/{name}"
    return str((Path(base) / name).resolve())


class TrainingRun:
    """An MLflow run for one training job; use it as a context manager on rank 0 only.

    On enter: the tracking server is checked (fast `UserError` when unreachable), the experiment
    `tracking.experiment` is created if missing (with a SQLite store its artifacts go beside the
    database, not to ./mlruns), and the run starts with the flattened config as params, the
    resolved config as an artifact, and the tags of `run_tags(tags)`. On exit the run ends as
    FINISHED, or FAILED / KILLED when an exception / Ctrl-C left the block.
    """

    def __init__(self, config: AssynchConfig, run_name: str | None = None,
                 tags: Mapping[str, Any] | None = None, *, run_id: str | None = None) -> None:
        """`run_id`: continue that run instead of starting one (a training job restarted from
        a checkpoint after a worker failure or `--resume` keeps its single MLflow run; keep the
        id in the checkpoint). Its params must match the config."""
        self.config = config
        self.run_name = run_name
        self.resume_run_id = run_id
        self.extra_tags = dict(tags or {})
        self.tracking_uri = resolve_tracking_uri(config)
        self.run_id: str = ""
        self.experiment_id: str = ""
        self._datasets: dict[str, ShardSetDataset] = {}
        self._metric_kinds: dict[str, str] = {}
        self._uri_context: Any = None
        self._client: MlflowClient | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            raise RuntimeError("TrainingRun is used outside its `with` block")
        return self._client

    def _experiment_id(self) -> str:
        name = self.config.tracking.experiment
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return self.client.create_experiment(
                    name, artifact_location=sqlite_artifact_location(self.tracking_uri)
                )
            except MlflowException as exc:  # created meanwhile by another process
                experiment = self.client.get_experiment_by_name(name)
                if experiment is None:
                    raise TrackingError(
                        f"cannot create MLflow experiment {name!r} at {self.tracking_uri}: "
                        f"{exc.message}"
                    ) from None
        if experiment.lifecycle_stage == "deleted":
            raise TrackingError(
                f"MLflow experiment {name!r} at {self.tracking_uri} is deleted; restore it "
                "(`mlflow experiments restore`) or set tracking.experiment to another name"
            )
        return str(experiment.experiment_id)

    def __enter__(self) -> TrainingRun:
        check_tracking_server(self.tracking_uri, self.config.tracking.connect_timeout_sec)
        self._uri_context = using_tracking_uri(self.tracking_uri)
        self._uri_context.__enter__()
        try:
            self._client = MlflowClient(self.tracking_uri, registry_uri=self.tracking_uri)
            self.experiment_id = self._experiment_id()
            if self.resume_run_id:
                run = self._resume(self.resume_run_id)
            else:
                run = mlflow.start_run(
                    experiment_id=self.experiment_id, run_name=self.run_name,
                    tags=run_tags(self.extra_tags),
                )
            self.run_id = run.info.run_id
            self._log_params(flatten_config(self.config))
            self._log_config()
        except BaseException:
            if mlflow.active_run() is not None:
                mlflow.end_run("FAILED")
            self._uri_context.__exit__(None, None, None)
            raise
        log.info("MLflow run %s in experiment %r at %s", self.run_id,
                 self.config.tracking.experiment, self.tracking_uri)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        status = "FINISHED"
        if exc_type is not None:
            status = "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED"
        try:
            active = mlflow.active_run()
            if active is not None and active.info.run_id == self.run_id:
                mlflow.end_run(status)
        finally:
            self._uri_context.__exit__(None, None, None)
            self._client = None

    def _resume(self, run_id: str) -> Any:
        try:
            previous = self.client.get_run(run_id)
        except MlflowException:
            raise TrackingError(
                f"cannot continue MLflow run {run_id}: no such run at {self.tracking_uri}; "
                "start a new run (no run_id) or check the tracking URI"
            ) from None
        changed = {
            key: (previous.data.params[key], value)
            for key, value in flatten_config(self.config).items()
            if key in previous.data.params and previous.data.params[key] != value
        }
        if changed:
            key, (old, new) = sorted(changed.items())[0]
            raise TrackingError(
                f"cannot continue MLflow run {run_id} with another config: {len(changed)} "
                f"params differ (e.g. {key}: {old!r} -> {new!r}); resume with the run's config "
                "or start a new run"
            )
        run = mlflow.start_run(run_id=run_id)
        mlflow.set_tags({**run_tags(self.extra_tags), "resumed": "true"})
        return run

    def _log_params(self, params: Mapping[str, str]) -> None:
        items = list(params.items())
        for start in range(0, len(items), _PARAMS_PER_BATCH):
            mlflow.log_params(dict(items[start:start + _PARAMS_PER_BATCH]))

    def _log_config(self) -> None:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "resolved_config.yaml"
            path.write_text(dump_config(self.config.model_copy(
                update={"storage": self.config.storage.model_copy(
                    update={"access_key_id": None, "secret_access_key": None})}
            )))
            mlflow.log_artifact(str(path), CONFIG_ARTIFACT_PATH)

    @property
    def ui_hint(self) -> str:
        """Where to see this run: its link on a server, or the `mlflow ui` command for SQLite
        (for the summary at the end of training)."""
        return ui_hint(self.tracking_uri, self.experiment_id, self.run_id)

    # -- what training logs ---------------------------------------------------------------------

    def log_shard_dataset(self, shards_url: str, split: str, manifest: Mapping[str, Any]) -> None:
        """The shard set as the run's dataset input for `split` (the input's context): source =
        its `_manifest.json`, digest = `manifest_digest(manifest)`, profile and tags = counts."""
        splits = manifest.get("splits", {})
        if split not in splits:
            raise UserError(
                f"shard set {shards_url} has no split {split!r} in its manifest (it has "
                f"{', '.join(sorted(splits)) or 'none'}); pass one of those"
            )
        counts = {
            name: {key: info.get(key) for key in ("videos", "samples", "seconds_of_video")}
            for name, info in splits.items()
        }
        digest = manifest_digest(manifest)
        # One dataset per split: MLflow links a dataset to a run once, whatever the context.
        name = f"{Path(shards_url.rstrip('/')).name or shards_url}/{split}"
        dataset = ShardSetDataset(
            source=_dataset_source(_join_url(shards_url, "_manifest.json")),
            name=name, digest=digest,
            profile={"splits": counts, "config_hash": manifest.get("config_hash"),
                     "format": manifest.get("format")},
        )
        this = counts[split]
        tags = {
            "split": split,
            "samples": str(this["samples"]),
            "videos": str(this["videos"]),
            "seconds_of_video": str(this["seconds_of_video"]),
            "shards_url": shards_url,
            "config_hash": str(manifest.get("config_hash")),
        }
        mlflow.log_input(dataset, context=split, tags=tags)
        self._datasets[split] = dataset

    def _claim(self, names: Sequence[str], kind: str) -> None:
        """A metric name is per-step or per-epoch, never both: MLflow keeps one series per name
        and would mix step and epoch numbers on one x axis."""
        other = "epoch" if kind == "step" else "step"
        clashes = sorted(n for n in names if self._metric_kinds.get(n, kind) != kind)
        if clashes:
            raise ValueError(
                f"metrics {clashes} were logged per {other} in this run; give per-{kind} "
                f"metrics other names (e.g. 'epoch/train_loss' beside the per-step 'train/loss')"
            )
        self._metric_kinds.update(dict.fromkeys(names, kind))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Per-step metrics (loss terms, learning rates, samples/s, data-wait share)."""
        self._claim(list(metrics), "step")
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=int(step))

    def log_epoch_metrics(self, metrics: Mapping[str, float], epoch: int) -> None:
        """Per-epoch metrics (validation); MLflow's step is the epoch for these. Names must
        differ from per-step names (ValueError otherwise)."""
        self._claim(list(metrics), "epoch")
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=int(epoch))

    def log_artifact(self, local_path: str, artifact_path: str | None = None) -> None:
        if not Path(local_path).exists():
            raise UserError(f"artifact {local_path} does not exist; pass an existing file/folder")
        if Path(local_path).is_dir():
            mlflow.log_artifacts(local_path, artifact_path)
        else:
            mlflow.log_artifact(local_path, artifact_path)

    def log_curves_and_confusion(self, history: Sequence[Mapping[str, float]],
                                 confusion: np.ndarray, best_epoch: int) -> None:
        """`plots/curves.png` (loss and metric curves over epochs, best epoch marked),
        `plots/confusion_best_epoch.png` and the confusion counts as JSON, and the resolved
        config under `config/`."""
        step = self.config.time.offset_step_sec
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder)
            save_figure(curves_figure(history, best_x=best_epoch,
                                      title=f"run {self.run_id[:8]}"), out / "curves.png")
            save_figure(
                confusion_figure(confusion, step_sec=step, title=f"best epoch {best_epoch}"),
                out / "confusion_best_epoch.png",
            )
            (out / "confusion_best_epoch.json").write_text(json.dumps(
                {"best_epoch": best_epoch, "rows_true_columns_predicted":
                 np.asarray(confusion).astype(int).tolist()}
            ))
            mlflow.log_artifacts(str(out), PLOTS_ARTIFACT_PATH)
        self._log_config()

    # -- the model ------------------------------------------------------------------------------

    def log_and_register_model(self, model_checkpoint_path: str, config: AssynchConfig,
                               metrics: Mapping[str, float]) -> RegisteredModel:
        """Log the checkpoint (a `model.pt` of `save_model_checkpoint`, a folder holding one,
        local or s3://) as a models-from-code pyfunc under `model` in this run, log `metrics` on
        it, register it as `tracking.registered_model` and point `tracking.alias` at it."""
        from assynch.models import load_model_checkpoint
        from assynch.tracking import pyfunc as pyfunc_module
        from assynch.tracking.pyfunc import (
            CONFIG_ARTIFACT,
            WEIGHTS_ARTIFACT,
            input_example,
            model_signature,
        )

        tracking = config.tracking
        with tempfile.TemporaryDirectory() as folder:
            weights = local_checkpoint_file(model_checkpoint_path, Path(folder), config.storage)
            try:
                _, model_config = load_model_checkpoint(weights)
            except ValueError as exc:
                raise UserError(str(exc)) from None
            if model_config.content_hash("model", "time", "video", "audio") != \
                    config.content_hash("model", "time", "video", "audio"):
                log.warning("the checkpoint's model/time/video/audio config differs from the "
                            "run's; the logged model uses the checkpoint's")
            config_file = Path(folder) / "config.yaml"
            config_file.write_text(dump_config(model_config))
            code_file = Path(pyfunc_module.__file__).with_name("pyfunc_model_code.py")
            package_dir = Path(assynch.__file__).resolve().parent
            code_copy = Path(folder) / "code" / "assynch"
            shutil.copytree(package_dir, code_copy,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            active_model_before = mlflow.get_active_model_id()
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME_IN_RUN,
                python_model=str(code_file),
                artifacts={WEIGHTS_ARTIFACT: str(weights), CONFIG_ARTIFACT: str(config_file)},
                code_paths=[str(code_copy)],
                signature=model_signature(model_config),
                input_example=input_example(model_config),
                pip_requirements=_pip_requirements(),
                metadata={"assynch_model_format": "assynch-model/1",
                          "model_kind": model_config.model.kind,
                          "model_preset": model_config.model.preset},
                model_config={"device": "auto"},
                tags={"registered_model": tracking.registered_model},
            )
            if active_model_before is None:
                # Validating the input example loaded the model, which made it MLflow's active
                # model: later metrics of this process would silently be linked to it.
                mlflow.clear_active_model()
        model_id = str(info.model_id)
        if metrics:
            # Under "best/..." names: MLflow also records model metrics in the run's history,
            # where the plain names would add a stray point at step 0 to the epoch curves.
            best = {k if k.startswith("best/") else f"best/{k}": float(v)
                    for k, v in metrics.items()}
            self._claim(list(best), "model")
            mlflow.log_metrics(best, model_id=model_id, dataset=self._datasets.get("val"))
        version = mlflow.register_model(info.model_uri, tracking.registered_model,
                                        tags={"run_id": self.run_id})
        self.client.set_registered_model_alias(tracking.registered_model, tracking.alias,
                                               version.version)
        summary = ", ".join(f"{k} {float(v):.4g}" for k, v in metrics.items())
        self.client.update_model_version(
            tracking.registered_model, version.version,
            description=f"run {self.run_id}; {summary}" if summary else f"run {self.run_id}",
        )
        registered = RegisteredModel(
            name=tracking.registered_model, version=int(version.version), alias=tracking.alias,
            model_uri=str(info.model_uri), model_id=model_id,
        )
        log.info("registered %s version %d (alias %s)", registered.name, registered.version,
                 registered.alias)
        return registered


def _pip_requirements() -> list[str]:
    """Explicit requirements (MLflow would otherwise load the model in a subprocess to guess)."""
    pins = []
    for name in ("torch", "numpy", "pydantic", "pyyaml", "mlflow"):
        version = _package_version(name)
        pins.append(name if version == "not installed" else f"{name}=={version}")
    return pins
