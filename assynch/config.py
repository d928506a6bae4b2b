"""Every configuration of assynch, as pydantic models.

One YAML file holds one `AssynchConfig`; a file may name another with `extends:` (a path relative
to itself) whose values it overrides section by section. `--set a.b=c` overrides one field from
the command line. A bad config fails with `ConfigError` naming the field before any work starts.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from assynch.errors import UserError


class ConfigError(UserError, ValueError):
    """A configuration that cannot be used; the message names the field and the fix."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TimeBase(_Section):
    """The time base every part shares (defaults follow Synchformer). Fixed by DESIGN.md."""

    fps: float = Field(25.0, gt=0, description="video frames per second after resampling")
    sample_rate: int = Field(16000, gt=0, description="audio samples per second, mono")
    segment_frames: int = Field(16, gt=0, description="frames per segment (0.64 s at 25 fps)")
    segment_stride_frames: int = Field(8, gt=0, description="frames between segment starts")
    segments_per_window: int = Field(14, gt=0)
    stream_hop_sec: float = Field(2.4, gt=0, description="seconds between window starts")
    windows_per_sample: int = Field(8, gt=0, description="consecutive windows in a stream sample")
    num_offset_classes: int = Field(21, gt=1)
    offset_step_sec: float = Field(0.2, gt=0)

    @model_validator(mode="after")
    def _odd_offset_grid(self) -> TimeBase:
        if self.num_offset_classes % 2 != 1:
            raise ValueError(
                f"time.num_offset_classes must be odd (a grid centred on 0 s), got "
                f"{self.num_offset_classes}"
            )
        return self

    @property
    def window_frames(self) -> int:
        return (self.segments_per_window - 1) * self.segment_stride_frames + self.segment_frames

    @property
    def window_sec(self) -> float:
        return self.window_frames / self.fps

    @property
    def segment_sec(self) -> float:
        return self.segment_frames / self.fps

    @property
    def segment_stride_sec(self) -> float:
        return self.segment_stride_frames / self.fps

    @property
    def sample_sec(self) -> float:
        """Seconds of video one stream sample covers (all its windows)."""
        return (self.windows_per_sample - 1) * self.stream_hop_sec + self.window_sec

    @property
    def max_offset_sec(self) -> float:
        return (self.num_offset_classes // 2) * self.offset_step_sec


class VideoFeatures(_Section):
    short_side: int = Field(256, gt=0, description="resize so the short side has this many pixels")
    crop: int = Field(224, gt=0, description="square centre crop after resizing")
    mean: float = 0.5
    std: float = Field(0.5, gt=0)

    @model_validator(mode="after")
    def _crop_fits(self) -> VideoFeatures:
        if self.crop > self.short_side:
            raise ValueError(
                f"video.crop ({self.crop}) must not exceed video.short_side ({self.short_side})"
            )
        return self


class AudioFeatures(_Section):
    n_mels: int = Field(128, gt=0)
    n_fft: int = Field(1024, gt=0)
    win_length: int = Field(400, gt=0)
    hop_length: int = Field(160, gt=0)
    log_eps: float = Field(1e-6, gt=0)
    segment_mel_frames: int = Field(66, gt=0, description="mel frames per segment after padding")
    norm_mean: float = Field(-4.2677393, description="AST's dataset mean of the log-mel")
    norm_std: float = Field(4.5689974, gt=0, description="AST's std; DESIGN.md divides by 2*std")


class StorageConfig(_Section):
    """How to reach `s3://` URLs. Credentials fall back to the usual AWS environment variables
    and are never logged."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = Field(None, repr=False)
    secret_access_key: SecretStr | None = None

    def fsspec_options(self) -> dict[str, Any]:
        """Keyword arguments for `fsspec.filesystem('s3', ...)` / `fsspec.open(url, ...)`."""
        options: dict[str, Any] = {}
        client_kwargs: dict[str, Any] = {}
        if self.endpoint_url:
            client_kwargs["endpoint_url"] = self.endpoint_url
        if self.region:
            client_kwargs["region_name"] = self.region
        if client_kwargs:
            options["client_kwargs"] = client_kwargs
        if self.access_key_id:
            options["key"] = self.access_key_id
        if self.secret_access_key:
            options["secret"] = self.secret_access_key.get_secret_value()
        return options


class SplitFractions(_Section):
    train: float = Field(0.8, ge=0)
    val: float = Field(0.1, ge=0)
    test: float = Field(0.1, ge=0)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitFractions:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"preprocess.splits must sum to 1, got {total:g}")
        return self


class PreprocessConfig(_Section):
    input: str = Field(
        "data/synthetic",
        description="ego4d.json, manifest.csv, a folder or glob of videos, or an s3:// prefix",
    )
    output: str = Field("data/shards", description="local folder or s3:// prefix for the shards")
    ego4d_root: str | None = Field(
        None, description="root holding v2/full_scale/<uid>.mp4; default: beside the metadata"
    )
    samples_per_video: int = Field(4, gt=0)
    seed: int = 0
    splits: SplitFractions = SplitFractions()
    split_field: str = Field(
        "split", description="metadata field with a video's split (e.g. split_av); else by uid"
    )
    audio_margin_sec: float = Field(2.0, ge=0, description="extra audio kept on both sides")
    frame_format: Literal["raw", "tensor", "jpeg"] = Field(
        "raw", description="raw: one binary value per frame; tensor: arrow.fixed_shape_tensor"
    )
    jpeg_quality: int = Field(90, ge=1, le=100)
    rows_per_shard: int = Field(64, gt=0)
    rows_per_row_group: int = Field(8, gt=0)
    video_timeout_sec: float = Field(900.0, gt=0, description="per-video decode time limit")
    num_workers: int = Field(2, gt=0, description="parallel decoding tasks")
    cpus_per_worker: float = Field(1.0, gt=0)


class EncoderConfig(_Section):
    dim: int = Field(768, gt=0)
    depth: int = Field(12, gt=0)
    heads: int = Field(12, gt=0)
    mlp_ratio: float = Field(4.0, gt=0)
    patch_size: int = Field(16, gt=0, description="spatial patch (visual) or square mel patch")
    tubelet_frames: int = Field(2, gt=0, description="visual only: frames per tubelet")
    patch_stride: int | None = Field(
        None, gt=0, description="audio only: mel patch stride (AST: 10); default: patch_size"
    )
    out_tokens: int = Field(8, gt=0, description="tokens per segment after reduction")
    stem: Literal["tubelet", "conv"] = Field(
        "tubelet",
        description="visual only: tubelet: Motionformer's linear 2x16x16 tubelet embedding; "
        "conv: early convolutions over each tubelet with 2 frames of context on both sides "
        "(docs/MODELS.md, 'Convolutional stem'), for objects smaller than a patch",
    )
    stem_channels: int = Field(32, gt=0, description="visual conv stem: channels of its layers")


class HeadConfig(_Section):
    dim: int = Field(768, gt=0)
    depth: int = Field(3, gt=0)
    heads: int = Field(8, gt=0)
    mlp_ratio: float = Field(4.0, gt=0)


class LossWeights(_Section):
    """Weights of the training losses (docs/MODELS.md, "Losses").

    `emd` multiplies the squared EMD, which is summed over the class CDFs and so ranges over
    0..C-1 (0..20): the default 1 / (C - 1) = 0.05 puts it on a 0..1 scale, below cross-entropy
    (ln 21 = 3.04 at chance) instead of above it (4.05 at init, up to 20, at weight 1).
    """

    cross_entropy: float = Field(1.0, ge=0)
    emd: float = Field(
        0.05, ge=0, description="the squared EMD spans 0..C-1; 1/(C-1) scales it to 0..1"
    )
    contrastive: float = Field(0.1, ge=0)
    snapshot: float = Field(
        1.0,
        ge=0,
        description="AS-Synchformer: cross-entropy + weighted EMD on the history-conditioned "
        "snapshot module's own per-window logits (deep supervision of what it accumulates)",
    )
    diversity: float = Field(
        0.1, ge=0, description="AS-Synchformer: penalty on similar streaming tokens of a window"
    )


class ModelConfig(_Section):
    preset: Literal["tiny", "full", "custom"] = "tiny"
    kind: Literal["snapshot", "apa", "streamsync", "as_synchformer"] = "as_synchformer"
    audio_encoder: EncoderConfig = EncoderConfig(out_tokens=6, patch_stride=10)
    visual_encoder: EncoderConfig = EncoderConfig(out_tokens=8)
    sync: HeadConfig = HeadConfig()
    streaming: HeadConfig = HeadConfig()
    streaming_tokens: int = Field(4, gt=0, description="K streaming tokens emitted per window")
    history_windows: int = Field(
        16, gt=0, description="bounded token history the streaming module attends to"
    )
    contrastive_dim: int = Field(256, gt=0)
    contrastive_temperature: float = Field(
        0.07, gt=0, le=1, description="initial InfoNCE temperature (learned during training)"
    )
    dropout: float = Field(
        0.0, ge=0, lt=1, description="dropout in the encoders (Motionformer and AST: 0)"
    )
    sync_dropout: float = Field(
        0.1, ge=0, lt=1,
        description="dropout in the sync transformer and the streaming parts (Synchformer: 0.1)",
    )
    drop_path: float = Field(
        0.2, ge=0, lt=1,
        description="visual encoder stochastic depth, rising linearly to this (Motionformer: 0.2)",
    )
    audio_drop_path: float = Field(0.0, ge=0, lt=1, description="audio encoder (AST: 0)")
    activation_checkpointing: bool = Field(
        False, description="recompute encoder blocks in the backward pass instead of saving them"
    )
    encode_chunk_windows: int = Field(
        0, ge=0, description="windows per encoder call in forward (0: all at once)"
    )
    autocast_bf16: bool = Field(
        False, description="run encoders and transformers under bf16 autocast (losses stay fp32)"
    )
    apa_average: Literal["probabilities", "logits"] = Field(
        "probabilities", description="APA: average the windows' softmax outputs, or their logits"
    )
    lag_correlation: bool = Field(
        True,
        description="the sync transformer also scores each offset class by the similarity of "
        "visual and audio tokens that many seconds apart (docs/MODELS.md, 'Lag correlation')",
    )
    encoder_regime: Literal["frozen", "partial", "full"] = "full"
    trainable_encoder_blocks: int = Field(
        2, ge=0, description="with encoder_regime=partial: how many last blocks train"
    )
    losses: LossWeights = LossWeights()
    pretrained_checkpoint: str | None = Field(
        None, description="local path to a Synchformer-format checkpoint"
    )
    init_from: str | None = Field(
        None,
        description="start training from one of our models: models:/NAME@ALIAS, runs:/ID/model, "
        "a model.pt or a training checkpoint folder (matching weights are copied)",
    )


class TrainConfig(_Section):
    """Fine-tuning on Ray Train (docs/TRAINING.md). Sizes are per worker unless named global."""

    shards: str | tuple[str, ...] = Field(
        "data/shards",
        description="finished preprocess output(s) to train on: one URL, or a list; an entry "
        "ROOT/* takes every finished shard set directly under ROOT (e.g. <output>/batches/*)",
    )
    train_split: Literal["train", "val", "test"] = "train"
    val_split: Literal["train", "val", "test"] | None = Field(
        "val", description="split scored after each epoch; null: no validation"
    )
    objective: Literal["offsets", "segment_contrastive", "visual_onset"] = Field(
        "offsets",
        description="offsets: CE + squared EMD + InfoNCE (model.losses); segment_contrastive: "
        "Synchformer's stage 1 (audio-visual contrastive pre-training of the encoders); "
        "visual_onset: stage 1 that teaches the visual encoder when the in-sync audio has an "
        "onset (docs/TRAINING.md, 'Visual onset pre-training')",
    )
    epochs: int = Field(2, gt=0)
    max_steps_per_epoch: int | None = Field(
        None, gt=0, description="stop an epoch early after this many steps (smoke runs)"
    )
    batch_size: int = Field(4, gt=0, description="stream samples per worker and step")
    learning_rate: float = Field(1e-4, gt=0)
    encoder_lr_scale: float = Field(
        1.0, ge=0, description="encoders train at learning_rate times this (pretrained weights)"
    )
    min_learning_rate: float = Field(1e-6, ge=0, description="end of the cosine decay")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up before the cosine decay")
    weight_decay: float = Field(0.05, ge=0)
    grad_accum_steps: int = Field(1, gt=0, description="micro-batches per optimizer step")
    grad_clip_norm: float | None = Field(1.0, gt=0, description="clip the global grad norm")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16: autocast on the device")
    find_unused_parameters: bool | None = Field(
        None, description="DDP flag; null: true (which parameters a step uses depends on its "
        "batch for every kind)"
    )
    seed: int = 0
    resample_offsets: bool = Field(
        True, description="draw a fresh offset per sample and epoch within the stored margin"
    )
    contrastive_cuts: int = Field(
        2, ge=0,
        description="AS-Synchformer (objective offsets, model.losses.contrastive > 0): audio "
        "candidates per train stream for the contrastive loss, re-cut from the stored margin at "
        "other offsets, the in-sync one first (0: only streams labelled 0 s contribute); other "
        "kinds and validation cut none",
    )
    shuffle_buffer: int = Field(16, ge=0, description="rows in each worker's shuffle buffer")
    select_metric: Literal["acc1", "acc1_pm1", "emd_sec", "loss", "onset_auc"] = Field(
        "acc1", description="validation metric (after the last window) that ranks checkpoints; "
        "onset_auc: the visual onset probe's held-out AUC (objective visual_onset only)"
    )
    early_stopping_patience: int | None = Field(
        None, gt=0, description="stop after this many epochs without a better select_metric"
    )
    log_every_steps: int = Field(10, gt=0)
    num_workers: int = Field(
        2, gt=0, description="Ray Train workers (in-process without Ray: assynch.train.local)"
    )
    cpus_per_worker: float = Field(
        1.0, gt=0, description="CPUs reserved per worker (fractions leave Ray Data some CPU)"
    )
    use_gpu: bool = False
    data_cpus: float = Field(
        0.5, gt=0, description="CPUs per Ray Data read/decode task feeding the workers"
    )
    run_name: str | None = Field(
        None, description="Ray Train run name (storage_path/run_name); default: a new name"
    )
    storage_path: str = Field("runs", description="Ray Train run storage (local or s3://)")
    keep_checkpoints: int = Field(2, gt=0, description="checkpoints kept (best ones by metric)")
    max_failures: int = Field(2, ge=0, description="worker-group restarts from a checkpoint")
    tracking: bool = Field(True, description="log to MLflow (assynch.tracking) from rank 0")

    @model_validator(mode="after")
    def _select_metric_reported(self) -> TrainConfig:
        if self.select_metric == "onset_auc" and self.objective != "visual_onset":
            raise ValueError(
                f"train.select_metric=onset_auc is only reported by train.objective="
                f"visual_onset (this run: {self.objective}); pick acc1, acc1_pm1, emd_sec or "
                "loss"
            )
        return self

    @model_validator(mode="after")
    def _shards_named(self) -> TrainConfig:
        entries = [self.shards] if isinstance(self.shards, str) else list(self.shards)
        if not entries or not all(entry.strip() for entry in entries):
            raise ValueError(
                f"train.shards must name at least one shard set (a URL, or ROOT/*), got "
                f"{self.shards!r}"
            )
        return self


class TrackingConfig(_Section):
    """MLflow (docs/TRACKING.md). Read by `assynch.tracking` only."""

    tracking_uri: str | None = Field(
        None,
        description="http(s)://host:port of an MLflow server or sqlite:///path.db; null: "
        "$MLFLOW_TRACKING_URI, else sqlite:///<working folder>/mlflow.db",
    )
    experiment: str = Field("assynch", description="MLflow experiment of training runs")
    registered_model: str = Field("as-synchformer", description="registry name of trained models")
    alias: str = Field("candidate", description="alias set on each newly registered version")
    connect_timeout_sec: float = Field(
        5.0, gt=0, description="how long to wait for the tracking server before failing"
    )


class EvalConfig(_Section):
    """The evaluation job (pipelines/evaluate.py, docs/EVALUATION.md)."""

    model: str = Field(
        "models:/as-synchformer@candidate",
        description="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/model or a checkpoint",
    )
    shards: str = Field("data/shards", description="a finished shard set (preprocess output)")
    split: Literal["train", "val", "test"] = "test"
    modes: tuple[Literal["snapshot", "streaming"], ...] = Field(
        ("snapshot", "streaming"),
        min_length=1,
        description="snapshot: each window alone; streaming: windows in order, the model's state",
    )
    batch_size: int = Field(4, gt=0, description="stream samples per forward pass")
    num_workers: int = Field(2, gt=0, description="Ray actors, each holding one model copy")
    cpus_per_worker: float = Field(1.0, gt=0)
    output: str = Field("reports", description="folder for report.json/.md, plots, predictions")
    bootstrap_resamples: int = Field(1000, ge=10, description="resamples of the video bootstrap")
    bootstrap_seed: int = 0
    confidence: float = Field(0.95, gt=0, lt=1, description="bootstrap interval coverage")
    reliability_bins: int = Field(10, gt=0)
    experiment: str | None = Field(
        None, description="MLflow experiment of evaluation runs; default: the model's run's"
    )
    promote_margin: float = Field(
        1.0, ge=0, description="ACC@1 points a candidate must gain over the champion"
    )
    champion_alias: str = Field("champion", min_length=1)


class SyntheticClips(_Section):
    """Synthetic egocentric clips written into `preprocess.input` before preprocessing."""

    count: int = Field(8, gt=0)
    duration_sec: float = Field(40.0, gt=0)
    seed: int = 0


class Stage1Config(_Section):
    """The optional `encoders` asset: Synchformer's stage 1 (segment-level audio-visual
    contrastive pre-training of the encoders) before the offsets model, which then starts from
    it through `model.init_from` (docs/DAG.md)."""

    enabled: bool = Field(False, description="add the encoders asset between shards and model")
    objective: Literal["segment_contrastive", "visual_onset"] = Field(
        "segment_contrastive",
        description="train.objective of the stage-1 run: Synchformer's segment InfoNCE, or the "
        "visual onset pre-training (docs/TRAINING.md)",
    )
    epochs: int | None = Field(None, gt=0, description="stage-1 epochs; null: train.epochs")
    max_steps_per_epoch: int | None = Field(
        None, gt=0, description="stage-1 steps per epoch at most; null: train.max_steps_per_epoch"
    )
    encoder_regime: Literal["frozen", "partial", "full"] = Field(
        "full", description="model.encoder_regime of the stage-1 run (it trains the encoders)"
    )
    registered_model: str | None = Field(
        None, min_length=1,
        description="registry name of stage-1 models; null: <tracking.registered_model>-encoders",
    )
    overrides: tuple[str, ...] = Field(
        (), description="more SECTION.FIELD=VALUE overrides for the stage-1 run only"
    )

    @model_validator(mode="after")
    def _overrides_are_assignments(self) -> Stage1Config:
        bad = [item for item in self.overrides if "=" not in item or "." not in item.split("=")[0]]
        if bad:
            raise ValueError(
                f"dag.stage1.overrides must be SECTION.FIELD=VALUE items, got {', '.join(bad)}"
            )
        return self


class DagConfig(_Section):
    """The pipeline as a Dagster graph (pipelines/dag.py, `assynch pipeline run`)."""

    dagster_home: str = Field(
        "data/dagster", description="Dagster instance folder: run history and asset versions"
    )
    ray_address: str | None = Field(
        None,
        description="Ray dashboard URL to submit each job to (dagster-ray); "
        "None runs each job module here on a local Ray",
    )
    synthetic_clips: SyntheticClips | None = Field(
        None, description="write synthetic clips into preprocess.input first (embedded default)"
    )
    incoming: str | None = Field(
        None,
        description="folder or s3:// prefix watched for new videos, one sub-folder per batch; "
        "each batch becomes a partition of batch_shards (incremental ingestion)",
    )
    stage1: Stage1Config = Field(
        Stage1Config(), description="optional stage-1 pre-training of the encoders (encoders asset)"
    )
    max_retries: int = Field(2, ge=0, description="retries of a failed step (alone)")
    retry_delay_sec: float = Field(1.0, ge=0)


class AssynchConfig(_Section):
    time: TimeBase = TimeBase()
    video: VideoFeatures = VideoFeatures()
    audio: AudioFeatures = AudioFeatures()
    storage: StorageConfig = StorageConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    tracking: TrackingConfig = TrackingConfig()
    dag: DagConfig = DagConfig()
    eval: EvalConfig = EvalConfig()

    @model_validator(mode="after")
    def _audio_margin_covers_offsets(self) -> AssynchConfig:
        if self.preprocess.audio_margin_sec + 1e-9 < self.time.max_offset_sec:
            raise ValueError(
                f"preprocess.audio_margin_sec ({self.preprocess.audio_margin_sec}) must be at "
                f"least the largest offset ({self.time.max_offset_sec} s)"
            )
        return self

    @model_validator(mode="after")
    def _contrastive_cuts_fit_the_grid(self) -> AssynchConfig:
        # A stream has at least half the grid's classes as distinct cuts within its margin.
        most = self.time.num_offset_classes // 2
        if self.train.contrastive_cuts > most:
            raise ValueError(
                f"train.contrastive_cuts ({self.train.contrastive_cuts}) must be at most {most} "
                f"(half the {self.time.num_offset_classes} offset classes: the distinct re-cuts "
                f"every stream has within its stored audio margin)"
            )
        return self

    def content_hash(self, *sections: str) -> str:
        """A short stable hash of the named sections (all when none is named)."""
        dumped = self.model_dump(mode="json")
        chosen = {name: dumped[name] for name in (sections or tuple(dumped))}
        text = json.dumps(chosen, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Loading


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml_tree(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise ConfigError(f"config 'extends' forms a cycle: {chain}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}. Pass an existing YAML file (configs/).")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, not {type(data)}")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    base = _read_yaml_tree(path.parent / str(parent), (*seen, path))
    return _deep_merge(base, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=c` -> (["a", "b"], c), the value read as YAML (so 3, 0.5, true, [1, 2] work)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.field=value")
    dotted, raw = text.split("=", 1)
    keys = [k for k in dotted.strip().split(".") if k]
    if not keys:
        raise ConfigError(f"override '{text}' names no field")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return keys, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    result = dict(data)
    for text in overrides:
        keys, value = parse_override(text)
        nested: Any = value
        for key in reversed(keys):
            nested = {key: nested}
        result = _deep_merge(result, nested)
    return result


def _describe_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid config ({source}):"]
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown field (check its spelling and section)"
        elif error["type"] == "literal_error":
            expected = error.get("ctx", {}).get("expected", "")
            message = f"must be one of {expected}; got {error.get('input')!r}"
        lines.append(f"  {field}: {message}")
    return "\n".join(lines)


def build_config(data: dict[str, Any], source: str = "dict") -> AssynchConfig:
    try:
        return AssynchConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe_validation_error(exc, source)) from None


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> AssynchConfig:
    """Read a YAML config (following `extends:`), apply `a.b=c` overrides, and validate."""
    data = _read_yaml_tree(Path(path)) if path is not None else {}
    data = apply_overrides(data, list(overrides or []))
    return build_config(data, str(path) if path is not None else "defaults")


def dump_config(config: AssynchConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
