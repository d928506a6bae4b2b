"""The pipeline as a Dagster graph: each asset runs an existing job module, nothing else.

    assynch pipeline run --config configs/quickstart.yaml        # in-process, local Ray + MLflow
    python -m pipelines.dag run --config configs/quickstart.yaml  # the same
    ASSYNCH_CONFIG=configs/quickstart.yaml DAGSTER_HOME=$PWD/data/quickstart/dagster \\
        dagster dev -m pipelines.dag                               # the graph and its history

    clips (synthetic, embedded default only) -> shards -> [encoders] -> model -> evaluation
    dag.incoming: batch_shards (one partition per batch folder, sensor) -> [encoders], model

`shards` runs `python -m pipelines.preprocess`, `model` runs `python -m pipelines.train`,
`evaluation` runs `python -m pipelines.evaluate` — the very commands an engineer submits by hand.
With `dag.incoming` the training assets also read every finished `batch_shards` partition; with
`dag.stage1.enabled`, `encoders` (stage 1, `train.objective=segment_contrastive`) runs first and
`model` starts from it (`model.init_from`).
With `dag.ray_address` each one is submitted to that Ray cluster as a Ray job through
dagster-ray's `PipesRayJobClient` (logs streamed back); without it each runs as a local process
that starts its own local Ray. Config comes from the same YAML file and pydantic models as the
jobs (no second config system): every job gets `--config FILE --set ...` exactly as given here.

Skipping: an asset records a fingerprint of its code version, the config sections it reads and
its upstream assets' data versions with each materialisation. When a run finds the same
fingerprint and the output still there, it does not run the job again and reports the same data
version, so a second run recomputes nothing and a changed config recomputes only what depends
on it. A failed step is retried alone (`dag.max_retries`); rerunning continues from it because
the steps before it are skipped. Decisions: docs/DAG.md.
"""


import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from assynch.config import AssynchConfig, load_config
from assynch.errors import UserError
from assynch.preprocess.plan import preprocess_config_hash
from assynch.shards.format import MANIFEST_NAME, SPLITS
from assynch.shards.reader import read_manifest

CONFIG_ENV = "ASSYNCH_CONFIG"
DEFAULT_CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml")
FINGERPRINT_KEY = "assynch/fingerprint"
CODE_VERSION = "1"  # bump when an asset's logic changes in a way that must redo its output


# ---------------------------------------------------------------------------------------------
# Running a job module


def ray_auth_headers() -> dict[str, str] | None:
    """The bearer token a Ray 2.60 head with token auth wants from job clients, if there is one
    (RAY_AUTH_TOKEN, or the file named by RAY_AUTH_TOKEN_PATH)."""
    token = os.environ.get("RAY_AUTH_TOKEN")
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if not token and path and Path(path).is_file():
        token = Path(path).read_text().strip()
    return {"Authorization": f"Bearer {token}"} if token else None


class JobRunner(dg.ConfigurableResource):  # type: ignore[type-arg]
    """How an asset starts a job module: on a Ray cluster (ray_address) or as a local process."""

    ray_address: str | None = None
    working_dir: str = "."
    log_dir: str | None = None  # local runs: each job's stderr (Ray's INFO lines) goes here

    def run(self, context: dg.AssetExecutionContext, module: str, args: Sequence[str]) -> None:
        command = [sys.executable, "-m", module, *args]
        context.log.info("running %s", shlex.join(command[1:]))
        if self.ray_address is None or not module.startswith("pipelines."):
            self._run_here(context, command)
            return
        from dagster_ray import PipesRayJobClient

        # A new client per run: a reused one loses the second run's metadata (DESIGN.md).
        client = PipesRayJobClient(address=self.ray_address, headers=ray_auth_headers())
        client.run(
            context=context,
            submit_job_params={
                "entrypoint": shlex.join(["python", "-m", module, *args]),
                "runtime_env": {"working_dir": self.working_dir},
            },
        )


    def _run_here(self, context: dg.AssetExecutionContext, command: list[str]) -> None:
        """The job's summary (stdout) on the screen; its log lines (stderr: Ray's INFO chatter,
        progress bars, warnings) in a file under `log_dir`, whose end is shown on failure."""
        if self.log_dir is None:
            code = subprocess.call(command)
            log_path = None
        else:
            folder = Path(self.log_dir)
            folder.mkdir(parents=True, exist_ok=True)
            log_path = folder / f"{context.asset_key.to_user_string()}-{int(time.time())}.log"
            print(f"[{context.asset_key.to_user_string()}] {shlex.join(command[1:])} "
                  f"(log: {log_path})", flush=True)
            with log_path.open("wb") as log:
                code = subprocess.call(command, stderr=log)
        if code == 0:
            return
        tail = ""
        if log_path is not None:
            lines = log_path.read_text(errors="replace").splitlines()[-20:]
            tail = "\n" + "\n".join(lines) + f"\nfull log: {log_path}"
        raise dg.Failure(f"{shlex.join(command[1:])} failed with exit code {code}{tail}")


# ---------------------------------------------------------------------------------------------
# Fingerprints and data versions


def digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def latest_materialization(context: dg.AssetExecutionContext, name: str) -> Any:
    event = context.instance.get_latest_materialization_event(dg.AssetKey(name))
    return None if event is None else event.asset_materialization


def recorded_value(materialization: Any, key: str) -> str | None:
    if materialization is None or key not in materialization.metadata:
        return None
    return str(materialization.metadata[key].value)


def data_version_of(context: dg.AssetExecutionContext, name: str) -> str:
    materialization = latest_materialization(context, name)
    version = None if materialization is None else materialization.tags.get(
        "dagster/data_version"
    )
    if version is None:
        raise dg.Failure(f"upstream asset {name!r} has no materialisation; run it first")
    return str(version)


@dataclass
class Step:
    """What one asset needs to decide whether to run and what it reports."""

    name: str
    fingerprint_inputs: dict[str, Any]
    output_exists: Callable[[], bool]
    run: Callable[[], None]
    describe: Callable[[], tuple[str, dict[str, Any]]]  # (data version, metadata)
    upstream: Sequence[str] = field(default_factory=tuple)

    def materialize(self, context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        inputs = dict(self.fingerprint_inputs, code_version=CODE_VERSION)
        inputs["upstream"] = {name: data_version_of(context, name) for name in self.upstream}
        fingerprint = digest(inputs)
        previous = latest_materialization(context, self.name)
        unchanged = recorded_value(previous, FINGERPRINT_KEY) == fingerprint
        if unchanged and self.output_exists():
            context.log.info("%s: inputs unchanged and output present; not recomputed", self.name)
            status = "unchanged"
        else:
            self.run()
            status = "computed"
        version, metadata = self.describe()
        return dg.MaterializeResult(
            data_version=dg.DataVersion(version),
            metadata={**metadata, FINGERPRINT_KEY: fingerprint, "assynch/status": status},
        )


# ---------------------------------------------------------------------------------------------
# The graph


@dataclass(frozen=True)
class PipelineConfig:
    """The config file and overrides every job of one graph is started with."""

    path: str
    overrides: tuple[str, ...] = ()

    def load(self) -> AssynchConfig:
        return load_config(Path(self.path), list(self.overrides))

    def job_args(self) -> list[str]:
        args = ["--config", self.path]
        for override in self.overrides:
            args += ["--set", override]
        return args


def shard_set_version(manifest: dict[str, Any]) -> str:
    """What the shards are, without when they were made: config hash, split counts, files."""
    counted = ("videos", "samples", "shards")
    return digest({
        "config_hash": manifest.get("config_hash"),
        "splits": {
            split: {key: manifest["splits"][split].get(key) for key in counted} for split in SPLITS
        },
    })


def shards_metadata(manifest: dict[str, Any]) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        f"samples/{split}": manifest["splits"][split]["samples"] for split in SPLITS
    }
    metadata.update({f"videos/{split}": manifest["splits"][split]["videos"] for split in SPLITS})
    metadata["errors"] = manifest.get("errors", 0)
    metadata["config_hash"] = manifest.get("config_hash", "")
    return metadata


def build_assets(pipeline: PipelineConfig) -> list[dg.AssetsDefinition]:
    config = pipeline.load()
    retry = dg.RetryPolicy(max_retries=config.dag.max_retries, delay=config.dag.retry_delay_sec)
    assets: list[dg.AssetsDefinition] = []
    clips = config.dag.synthetic_clips
    shard_deps: list[str] = []

    if clips is not None:
        shard_deps = ["clips"]

        @dg.asset(name="clips", retry_policy=retry, code_version=CODE_VERSION,
                  description="Synthetic egocentric clips with known events (embedded default).")
        def clips_asset(context: dg.AssetExecutionContext, runner: JobRunner) -> Any:
            folder = Path(config.preprocess.input)
            step = Step(
                name="clips",
                fingerprint_inputs={"clips": clips.model_dump(), "fps": config.time.fps,
                                    "folder": str(folder)},
                output_exists=lambda: len(list(folder.glob("*.mp4"))) >= clips.count,
                run=lambda: runner.run(context, "assynch", [
                    "synth", "--out", str(folder), "--count", str(clips.count),
                    "--duration", str(clips.duration_sec), "--seed", str(clips.seed),
                    "--fps", str(config.time.fps),
                ]),
                describe=lambda: (
                    digest({"clips": clips.model_dump(), "fps": config.time.fps}),
                    {"clips": clips.count, "folder": str(folder)},
                ),
            )
            return step.materialize(context)

        assets.append(clips_asset)

    @dg.asset(name="shards", deps=shard_deps, retry_policy=retry, code_version=CODE_VERSION,
              description="Parquet shards of stream samples with offset labels "
                          "(python -m pipelines.preprocess).")
    def shards_asset(context: dg.AssetExecutionContext, runner: JobRunner) -> Any:
        output = config.preprocess.output
        step = Step(
            name="shards",
            fingerprint_inputs={"preprocess": preprocess_config_hash(config),
                                "input": config.preprocess.input, "output": output},
            output_exists=lambda: _manifest_or_none(config) is not None,
            run=lambda: runner.run(context, "pipelines.preprocess", pipeline.job_args()),
            describe=lambda: _describe_shards(config),
            upstream=shard_deps,
        )
        return step.materialize(context)

    assets.append(shards_asset)

    # What the training assets read: `shards`, and with dag.incoming every materialised
    # partition of `batch_shards`; with dag.stage1 the model starts from `encoders`.
    data_deps = ["shards", *(["batch_shards"] if config.dag.incoming is not None else [])]
    stage1 = config.dag.stage1
    if stage1.enabled:
        assets.append(encoders_asset(pipeline, config, retry, data_deps))

    @dg.asset(name="model", deps=[*data_deps, *(["encoders"] if stage1.enabled else [])],
              retry_policy=retry, code_version=CODE_VERSION,
              description="AS-Synchformer fine-tuned on the shards (and every finished batch "
                          "partition), registered in MLflow with alias tracking.alias "
                          "(python -m pipelines.train).")
    def model_asset(context: dg.AssetExecutionContext, runner: JobRunner) -> Any:
        data = training_data(context.instance, config)
        args = [*pipeline.job_args(), *data.job_args()]
        upstream = ["shards"]
        if stage1.enabled:
            upstream.append("encoders")
            init_from = f"models:/{data_version_of(context, 'encoders')}"
            args += ["--set", f"model.init_from={init_from}"]
        step = Step(
            name="model",
            fingerprint_inputs={"config": config.content_hash(
                "time", "video", "audio", "model", "train", "tracking"), **data.fingerprint()},
            output_exists=lambda: _registered(config) is not None,
            run=lambda: runner.run(context, "pipelines.train", args),
            describe=lambda: data.describe(*_describe_model(config)),
            upstream=upstream,
        )
        return step.materialize(context)

    @dg.asset(name="evaluation", deps=["model", "shards"], retry_policy=retry,
              code_version=CODE_VERSION,
              description="The registered version evaluated on eval.split of the shards, logged "
                          "to MLflow and promoted to champion by the rule "
                          "(python -m pipelines.evaluate --promote).")
    def evaluation_asset(context: dg.AssetExecutionContext, runner: JobRunner) -> Any:
        version = data_version_of(context, "model")
        folder = Path(config.eval.output) / f"dag-{version.replace('/', '-v')}"
        args = [*pipeline.job_args(), "--model", f"models:/{version}",
                "--data", config.preprocess.output, "--output", str(folder), "--promote"]
        step = Step(
            name="evaluation",
            fingerprint_inputs={"eval": config.content_hash("eval"), "folder": str(folder)},
            output_exists=lambda: (folder / "report.json").is_file(),
            run=lambda: runner.run(context, "pipelines.evaluate", args),
            describe=lambda: _describe_evaluation(folder),
            upstream=["model", "shards"],
        )
        return step.materialize(context)

    assets += [model_asset, evaluation_asset]
    if config.dag.incoming is not None:
        assets.append(batch_shards_asset(pipeline, config, retry))
    return assets


# ---------------------------------------------------------------------------------------------
# Incremental ingestion: one partition per batch of new videos


VIDEO_BATCHES = dg.DynamicPartitionsDefinition(name="video_batches")


def batch_input(config: AssynchConfig, batch: str) -> str:
    return f"{str(config.dag.incoming).rstrip('/')}/{batch}"


def batch_output(config: AssynchConfig, batch: str) -> str:
    return f"{config.preprocess.output.rstrip('/')}/batches/{batch}"


def list_video_batches(config: AssynchConfig) -> dict[str, int]:
    """Batch folder name -> number of video files in it, under `dag.incoming`."""
    from assynch.preprocess.inputs import VIDEO_EXTENSIONS
    from assynch.storage import filesystem

    assert config.dag.incoming is not None
    fs, root = filesystem(config.dag.incoming, config.storage)
    if not fs.exists(root):
        return {}
    batches = {}
    for entry in fs.ls(root, detail=True):
        if entry["type"] != "directory":
            continue
        name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        videos = [p for p in fs.find(entry["name"]) if p.lower().endswith(VIDEO_EXTENSIONS)]
        batches[name] = len(videos)
    return batches


def batch_shards_asset(
    pipeline: PipelineConfig, config: AssynchConfig, retry: dg.RetryPolicy
) -> dg.AssetsDefinition:
    @dg.asset(name="batch_shards", partitions_def=VIDEO_BATCHES, retry_policy=retry,
              code_version=CODE_VERSION,
              description="Shards of one batch of new videos under dag.incoming "
                          "(python -m pipelines.preprocess on that batch only).")
    def batch_shards(context: dg.AssetExecutionContext, runner: JobRunner) -> Any:
        batch = context.partition_key
        output = batch_output(config, batch)
        args = [*pipeline.job_args(), "--input", batch_input(config, batch), "--output", output]
        runner.run(context, "pipelines.preprocess", args)
        manifest = read_manifest(output, config.storage)
        metadata = shards_metadata(manifest)
        metadata["path"] = output
        return dg.MaterializeResult(
            data_version=dg.DataVersion(shard_set_version(manifest)), metadata=metadata
        )

    return batch_shards


def new_video_batches_sensor(pipeline: PipelineConfig) -> dg.SensorDefinition:
    @dg.sensor(name="new_video_batches", asset_selection=["batch_shards"],
               minimum_interval_seconds=60,
               description="Adds a partition for each new batch folder under dag.incoming and "
                           "preprocesses only that partition.")
    def new_video_batches(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        config = pipeline.load()
        known = set(context.instance.get_dynamic_partitions(VIDEO_BATCHES.name))
        found = list_video_batches(config)
        new = sorted(name for name, videos in found.items() if videos and name not in known)
        if not new:
            return dg.SkipReason(f"no new video batches under {config.dag.incoming}")
        return dg.SensorResult(
            run_requests=[dg.RunRequest(partition_key=name, run_key=name) for name in new],
            dynamic_partitions_requests=[VIDEO_BATCHES.build_add_request(new)],
        )

    return new_video_batches


# ---------------------------------------------------------------------------------------------
# What training reads, and the optional stage 1


def materialised_batches(instance: dg.DagsterInstance) -> dict[str, str]:
    """Partition -> data version of the latest materialisation of every `batch_shards`
    partition that still exists (a finished shard set each)."""
    key = dg.AssetKey("batch_shards")
    latest = instance.get_latest_storage_id_by_partition(
        key, dg.DagsterEventType.ASSET_MATERIALIZATION)
    known = set(instance.get_dynamic_partitions(VIDEO_BATCHES.name))
    ids = [storage_id for partition, storage_id in latest.items() if partition in known]
    if not ids:
        return {}
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, storage_ids=ids), limit=len(ids)).records
    batches = {}
    for record in records:
        materialization = record.asset_materialization
        if materialization is not None and materialization.partition is not None:
            batches[materialization.partition] = str(
                materialization.tags.get("dagster/data_version", ""))
    return dict(sorted(batches.items()))


@dataclass(frozen=True)
class TrainingData:
    """The shard sets a training asset reads: train.shards, plus (with dag.incoming) the
    output of every materialised batch partition, and their data versions."""

    shards: tuple[str, ...]
    batches: dict[str, str]  # partition -> data version

    def job_args(self) -> list[str]:
        """`--shards ...` when batches add sets; nothing otherwise (the config's own value)."""
        return ["--shards", *self.shards] if self.batches else []

    def fingerprint(self) -> dict[str, Any]:
        return {"batches": self.batches} if self.batches else {}

    def describe(self, version: str, metadata: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """A training asset's catalogue entry, with how many batch partitions it read."""
        if self.batches:
            metadata = {**metadata, "batches": len(self.batches)}
        return version, metadata


def training_data(instance: dg.DagsterInstance, config: AssynchConfig) -> TrainingData:
    from assynch.shards.sets import shard_entries

    batches = materialised_batches(instance) if config.dag.incoming is not None else {}
    entries = shard_entries(config.train.shards)
    extra = [batch_output(config, batch) for batch in batches]
    return TrainingData(tuple(entries + [url for url in extra if url not in entries]), batches)


def stage1_model_name(config: AssynchConfig) -> str:
    return config.dag.stage1.registered_model or f"{config.tracking.registered_model}-encoders"


def stage1_args(config: AssynchConfig) -> list[str]:
    """The `--set` overrides that turn the training job into the stage-1 run."""
    stage1, train = config.dag.stage1, config.train
    overrides = [
        f"train.objective={stage1.objective}",
        f"model.encoder_regime={stage1.encoder_regime}",
        f"tracking.registered_model={stage1_model_name(config)}",
    ]
    if stage1.objective == "visual_onset":  # its best checkpoint: the best held-out AUC
        overrides.append("train.select_metric=onset_auc")
    if stage1.epochs is not None:
        overrides.append(f"train.epochs={stage1.epochs}")
    if stage1.max_steps_per_epoch is not None:
        overrides.append(f"train.max_steps_per_epoch={stage1.max_steps_per_epoch}")
    if train.run_name:  # the model's run keeps train.run_name
        overrides.append(f"train.run_name={train.run_name}-stage1")
    overrides += stage1.overrides
    return [arg for override in overrides for arg in ("--set", override)]


def encoders_asset(
    pipeline: PipelineConfig, config: AssynchConfig, retry: dg.RetryPolicy,
    data_deps: Sequence[str],
) -> dg.AssetsDefinition:
    @dg.asset(name="encoders", deps=list(data_deps), retry_policy=retry,
              code_version=CODE_VERSION,
              description="Stage 1 (dag.stage1): the encoders pre-trained with Synchformer's "
                          "segment-level audio-visual contrastive objective (or the visual onset "
                          "objective, dag.stage1.objective), registered as "
                          "<tracking.registered_model>-encoders; the model starts from it "
                          "(python -m pipelines.train --set train.objective=segment_contrastive).")
    def encoders(context: dg.AssetExecutionContext, runner: JobRunner) -> Any:
        data = training_data(context.instance, config)
        name = stage1_model_name(config)
        args = [*pipeline.job_args(), *data.job_args(), *stage1_args(config)]
        step = Step(
            name="encoders",
            fingerprint_inputs={
                "config": config.content_hash("time", "video", "audio", "model", "train",
                                              "tracking"),
                "stage1": config.dag.stage1.model_dump(mode="json"), **data.fingerprint(),
            },
            output_exists=lambda: _registered(config, name) is not None,
            run=lambda: runner.run(context, "pipelines.train", args),
            describe=lambda: data.describe(*_describe_model(config, name)),
            upstream=["shards"],
        )
        return step.materialize(context)

    return encoders


def _manifest_or_none(config: AssynchConfig) -> dict[str, Any] | None:
    try:
        return read_manifest(config.preprocess.output, config.storage)
    except UserError:
        return None


def _describe_shards(config: AssynchConfig) -> tuple[str, dict[str, Any]]:
    manifest = _manifest_or_none(config)
    if manifest is None:
        raise dg.Failure(f"{config.preprocess.output} has no {MANIFEST_NAME} after preprocessing")
    metadata = shards_metadata(manifest)
    metadata["path"] = dg.MetadataValue.path(config.preprocess.output)
    return shard_set_version(manifest), metadata


def _registered(config: AssynchConfig, name: str | None = None) -> Any:
    """The version of `name` (default tracking.registered_model) that `tracking.alias` points
    at, or None (ModelInfo: name, version, run_id)."""
    from assynch.tracking import resolve_tracking_uri
    from assynch.tracking.evaluation import ModelNotFoundError, _client, describe_model

    tracking = config.tracking
    uri = resolve_tracking_uri(config)
    try:
        return describe_model(f"models:/{name or tracking.registered_model}@{tracking.alias}",
                              _client(uri))
    except ModelNotFoundError:
        return None


def _describe_model(config: AssynchConfig, name: str | None = None) -> tuple[str, dict[str, Any]]:
    info = _registered(config, name)
    if info is None:
        raise dg.Failure(f"training registered no version of "
                         f"{name or config.tracking.registered_model!r} with alias "
                         f"{config.tracking.alias!r}")
    from assynch.tracking import resolve_tracking_uri

    metadata: dict[str, Any] = {
        "registered_model": info.name, "version": info.version, "run_id": info.run_id or "",
        "model_uri": f"models:/{info.name}/{info.version}",
        "tracking_uri": resolve_tracking_uri(config),
    }
    return f"{info.name}/{info.version}", metadata


def _describe_evaluation(folder: Path) -> tuple[str, dict[str, Any]]:
    from assynch.eval.report import read_report

    report = read_report(folder)
    mode = "streaming" if "streaming" in report["modes"] else next(iter(report["modes"]))
    overall = report["modes"][mode]["overall"]
    metadata: dict[str, Any] = {
        f"{mode}/{name}": overall[name]["value"] for name in ("acc1", "acc1_pm1", "emd_sec")
    }
    promotion = report.get("promotion") or {}
    metadata["promoted"] = bool(promotion.get("promote", False))
    metadata["promotion"] = str(promotion.get("reason", "not asked"))
    version = digest({"model": report["model"].get("uri"), "data": report["data"].get("digest"),
                      "metrics": metadata})
    metadata["report"] = dg.MetadataValue.path(str(folder / "report.md"))
    return version, metadata


def build_definitions(pipeline: PipelineConfig, runner: JobRunner | None = None) -> dg.Definitions:
    config = pipeline.load()
    sensors = [new_video_batches_sensor(pipeline)] if config.dag.incoming is not None else []
    return dg.Definitions(
        assets=build_assets(pipeline),
        sensors=sensors,
        resources={"runner": runner or JobRunner(
            ray_address=config.dag.ray_address,
            log_dir=str(Path(config.dag.dagster_home).resolve() / "logs"),
        )},
    )


# ---------------------------------------------------------------------------------------------
# In-process runs (the embedded default): no daemon, no server


@dataclass(frozen=True)
class AssetOutcome:
    name: str
    status: str
    data_version: str
    metadata: dict[str, Any]


def run_pipeline(
    pipeline: PipelineConfig,
    *,
    runner: JobRunner | None = None,
    selection: Sequence[str] | None = None,
    partition_key: str | None = None,
    log_level: str = "WARNING",
) -> list[AssetOutcome]:
    """Materialise the graph in this process with the Dagster instance in `dag.dagster_home`
    (so `dagster dev` with the same DAGSTER_HOME shows these runs). Raises dg.DagsterError
    subclasses when a step still fails after its retries."""
    config = pipeline.load()
    home = Path(config.dag.dagster_home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    definitions = build_definitions(pipeline, runner)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assets = list(definitions.assets or [])
        if selection is None:  # partitioned assets run per partition (the sensor's runs)
            selection = [a.key.to_user_string() for a in assets  # type: ignore[union-attr]
                         if a.partitions_def is None]  # type: ignore[union-attr]
        result = dg.materialize(
            assets,  # type: ignore[arg-type]
            instance=instance,
            resources=definitions.resources,
            selection=list(selection),
            partition_key=partition_key,
            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        )
        outcomes = []
        assert result.success
        for key in (dg.AssetKey(name) for name in selection):
            event = instance.get_latest_materialization_event(key)
            materialization = None if event is None else event.asset_materialization
            if materialization is None:
                continue
            metadata = {name: value.value for name, value in materialization.metadata.items()}
            outcomes.append(AssetOutcome(
                name=key.to_user_string(),
                status=str(metadata.pop("assynch/status", "computed")),
                data_version=materialization.tags.get("dagster/data_version", ""),
                metadata=metadata,
            ))
    order = [a.key.to_user_string() for a in assets]  # type: ignore[union-attr]
    return sorted(outcomes, key=lambda outcome: order.index(outcome.name))


HIDDEN_DETAILS = {FINGERPRINT_KEY, "path", "folder", "config_hash", "tracking_uri", "report",
                  "model_uri", "run_id", "promotion"}


def details_of(outcome: AssetOutcome) -> str:
    """The few numbers a person wants per asset (everything is in the Dagster catalogue)."""
    shown = []
    for key, value in outcome.metadata.items():
        if key in HIDDEN_DETAILS or isinstance(value, dict):
            continue
        shown.append(f"{key} {value:.3f}" if isinstance(value, float) else f"{key} {value}")
    return ", ".join(shown)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.dag",
        description="Materialise the assynch graph (clips -> shards -> model -> evaluation).",
    )
    parser.add_argument("command", choices=["run"], help="run: materialise in this process")
    parser.add_argument("--config", "-c", default=os.environ.get(CONFIG_ENV, DEFAULT_CONFIG))
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.FIELD=VALUE", help="override one config field")
    parser.add_argument("--select", action="append", default=[], metavar="ASSET",
                        help="materialise only these assets (their upstream must exist)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from rich.console import Console
    from rich.table import Table

    args = parse_args(argv)
    console = Console()
    pipeline = PipelineConfig(args.config, tuple(args.overrides))
    try:
        config = pipeline.load()
        outcomes = run_pipeline(pipeline, selection=args.select or None)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except dg.DagsterError as exc:
        print(f"error: the pipeline failed: {exc}", file=sys.stderr)
        return 1
    table = Table(title="assynch pipeline")
    for column in ("asset", "status", "data version", "details"):
        table.add_column(column)
    for outcome in outcomes:
        table.add_row(outcome.name, outcome.status, outcome.data_version, details_of(outcome))
    console.print(table)
    home = Path(config.dag.dagster_home).resolve()
    console.print(
        f"the graph and its runs: [bold]{CONFIG_ENV}={args.config} DAGSTER_HOME={home} "
        "dagster dev -m pipelines.dag[/]"
    )
    return 0


@dg.definitions
def defs() -> dg.Definitions:
    """What `dagster dev -m pipelines.dag` and the deployed code location load."""
    return build_definitions(PipelineConfig(os.environ.get(CONFIG_ENV, DEFAULT_CONFIG)))

if __name__ == "__main__":
    sys.exit(main())
