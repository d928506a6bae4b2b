"""Frozen encoders, cached features: train and evaluate the heads of any model kind on encoder
features computed once per stream sample and offset class (docs/TRAINING.md, "Frozen encoders
with cached features").

With `model.encoder_regime: frozen` nothing upstream of the projections learns, so a window's
encoder features (`SegmentFeatures`) never change during training. Computing them once turns a
CPU step from seconds (two ViTs over 14 segments per window) into a fraction of a second, and
the audio of every offset class is encoded once too: the offset of a training example is then
a free index (21x offset augmentation), and AS-Synchformer's contrastive candidates (the same
windows' audio at other offsets) cost nothing more.

Audio at neighbouring offsets, segments and windows overlaps: the segment starting at mel frame
f serves every (offset, window, segment) with that start, so each distinct start is encoded once
(about 3x fewer segments than 21 offsets x W x S for 4-window samples).

Plain torch; no Ray, MLflow or decoding.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from assynch.config import AssynchConfig
from assynch.media.features import segment_mels
from assynch.models import SegmentFeatures, StreamingModel, total_loss
from assynch.models.contrastive import contrastive_offset_classes
from assynch.models.regimes import apply_encoder_regime
from assynch.samples.model_inputs import audio_segment_start_frames, batch_video_segments
from assynch.samples.offsets import offset_grid_sec
from assynch.samples.plan import segment_samples
from assynch.shards.dataset import ShardDataset
from assynch.train.inputs import source_ids
from assynch.train.optim import build_scheduler

FEATURE_COLUMNS = (
    "sample_id", "video_uid", "offset_sec", "offset_class", "audio_margin_sec", "frames", "mel",
)


@dataclass
class FeatureSet:
    """Encoder features of one split's stream samples, with the audio at every offset class.

    visual: (N, W, S, Tv, Dv) and audio: (N, C, W, S, Ta, Da), stored as float16 (the heads run
    in float32): `audio[n, c]` is sample n's audio shown at offset class c (the video never
    moves). stored_class: the class the shard stored for each sample.
    """

    visual: Tensor
    audio: Tensor
    stored_class: Tensor
    sample_ids: list[str]
    video_uids: list[str]
    encode_sec: float = 0.0

    def __len__(self) -> int:
        return self.visual.shape[0]

    @property
    def num_classes(self) -> int:
        return self.audio.shape[1]

    def inputs(self, index: Tensor, classes: Tensor) -> SegmentFeatures:
        """Samples `index` (B,) shown at `classes` (B,) -> SegmentFeatures (B, W, ...)."""
        return SegmentFeatures(self.visual[index].float(), self.audio[index, classes].float())

    def candidates(self, index: Tensor, classes: Tensor) -> Tensor:
        """Samples `index` (B,) with their audio at `classes` (B, N) -> (B, W, N, S, Ta, Da)."""
        picked = self.audio[index[:, None], classes]  # (B, N, W, S, Ta, Da)
        return picked.transpose(1, 2).float()

    def source_ids(self, index: Tensor) -> Tensor:
        """(B,) one integer per source video (streams of one video are not each other's
        contrastive negatives)."""
        return source_ids([self.sample_ids[int(i)] for i in index])


def _all_class_audio_starts(
    config: AssynchConfig, stored_offset_sec: float, margin_sec: float, sample_id: str
) -> Tensor:
    """(C, W, S) mel start frame of every segment of every window at every offset class."""
    grid = offset_grid_sec(config.time)
    shifts = grid - stored_offset_sec
    if np.abs(shifts).max() > margin_sec + 1e-6:
        raise ValueError(
            f"sample {sample_id}: its stored audio margin of {margin_sec} s cannot show every "
            f"offset class (stored offset {stored_offset_sec} s, grid +-{grid.max()} s). "
            f"Preprocess with preprocess.audio_margin_sec >= "
            f"{abs(stored_offset_sec) + grid.max():g} (e.g. 4.0) to cache all offsets"
        )
    return torch.stack([
        audio_segment_start_frames(
            config.time, config.audio, audio_margin_sec=margin_sec, shift_sec=float(shift)
        )
        for shift in shifts
    ])


@torch.no_grad()
def encode_sample(
    model: StreamingModel,
    frames_u8: Tensor,
    mel: Tensor,
    *,
    stored_offset_sec: float,
    audio_margin_sec: float,
    config: AssynchConfig,
    sample_id: str = "?",
) -> tuple[Tensor, Tensor]:
    """One stored stream sample -> visual features (W, S, Tv, Dv) and audio features at every
    offset class (C, W, S, Ta, Da), each distinct audio segment encoded once."""
    snapshot = model.snapshot
    device = snapshot.sync.off_token.device
    video = batch_video_segments(frames_u8.unsqueeze(0).to(device), config.time, config.video)[0]
    visual = snapshot.encode_video(video, leading=1)
    starts = _all_class_audio_starts(config, stored_offset_sec, audio_margin_sec, sample_id)
    unique, inverse = torch.unique(starts.flatten(), return_inverse=True)
    segments = segment_mels(
        mel.float().cpu(), unique, audio_cfg=config.audio,
        segment_samples=segment_samples(config.time),
    )  # (U, n_mels, T)
    encoded = snapshot.encode_audio(segments.unsqueeze(0).to(device), leading=1)[0]  # (U, Ta, Da)
    inverse = inverse.to(device)
    audio = encoded[inverse].view(*starts.shape, *encoded.shape[1:])
    return visual, audio


def encode_split(
    model: StreamingModel,
    shards: str,
    split: str,
    config: AssynchConfig,
    *,
    rows_per_read: int = 4,
    progress: Callable[[int], None] | None = None,
) -> FeatureSet:
    """Every stream sample of `split` of a finished shard set through `model`'s encoders."""
    model.eval()
    started = time.perf_counter()
    dataset = ShardDataset(
        shards, split, batch_size=rows_per_read, storage=config.storage,
        columns=list(FEATURE_COLUMNS),
    )
    visual, audio, stored, sample_ids, video_uids = [], [], [], [], []
    for batch in dataset:
        for row in range(len(batch["sample_id"])):
            features = encode_sample(
                model, batch["frames"][row], batch["mel"][row],
                stored_offset_sec=float(batch["offset_sec"][row]),
                audio_margin_sec=float(batch["audio_margin_sec"][row]),
                config=config, sample_id=batch["sample_id"][row],
            )
            visual.append(features[0].half())
            audio.append(features[1].half())
            stored.append(int(batch["offset_class"][row]))
            sample_ids.append(batch["sample_id"][row])
            video_uids.append(batch["video_uid"][row])
        if progress is not None:
            progress(len(sample_ids))
    if not sample_ids:
        raise ValueError(f"{shards} has no stream samples in split {split!r}")
    return FeatureSet(
        torch.stack(visual), torch.stack(audio), torch.tensor(stored), sample_ids, video_uids,
        encode_sec=time.perf_counter() - started,
    )


# ---------------------------------------------------------------------------------------------
# Training the heads


@dataclass
class HeadTraining:
    """How the heads are trained on a FeatureSet (the benchmark's budget per system)."""

    steps: int = 300
    batch_size: int = 16
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 20
    grad_clip_norm: float = 1.0
    contrastive_candidates: int = 3
    eval_every: int = 50
    seed: int = 0


@dataclass
class TrainingCurve:
    """Train loss (mean over the last `eval_every` steps) and, when given, the evaluation's
    metrics at each checkpoint step."""

    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    eval_metrics: list[dict[str, float]] = field(default_factory=list)
    wall_sec: float = 0.0


def train_heads(
    model: StreamingModel,
    train: FeatureSet,
    config: AssynchConfig,
    settings: HeadTraining,
    evaluate: Callable[[StreamingModel], dict[str, float]] | None = None,
) -> TrainingCurve:
    """Train everything after the encoders (frozen here) on cached features.

    Each step draws `batch_size` samples and, per sample, a uniform offset class; the loss is
    the model's own (`total_loss` with `config.model.losses`: CE, squared EMD, and for
    AS-Synchformer the contrastive term over `contrastive_candidates` re-cut audios and the
    token diversity). AdamW with linear warm-up and cosine decay, gradient clipping.
    """
    apply_encoder_regime(model, "frozen")
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        parameters, lr=settings.learning_rate, weight_decay=settings.weight_decay
    )

    # The trainer's warm-up + cosine schedule, decaying to 2% of the peak rate.
    schedule = config.train.model_copy(update={
        "learning_rate": settings.learning_rate,
        "min_learning_rate": 0.02 * settings.learning_rate,
        "warmup_steps": settings.warmup_steps,
    })
    scheduler = build_scheduler(optimizer, total_steps=settings.steps, train=schedule)
    classes = train.num_classes
    curve = TrainingCurve()
    window: list[float] = []
    started = time.perf_counter()
    uses_candidates = model.uses_contrastive_audio and settings.contrastive_candidates > 0 and (
        config.model.losses.contrastive > 0
    )
    device = model.snapshot.sync.off_token.device
    for step in range(settings.steps):
        model.train()
        index = torch.randint(len(train), (settings.batch_size,), generator=generator)
        labels = torch.randint(classes, (settings.batch_size,), generator=generator)
        extra: tuple[Tensor, ...] = ()
        if uses_candidates:
            # Every class is cached, so no stored margin bounds the cuts.
            chosen, hypotheses = contrastive_offset_classes(
                labels, settings.contrastive_candidates, classes, generator
            )
            extra = (train.candidates(index, chosen), hypotheses)
        output = model.forward_features(train.inputs(index, labels), *extra)
        losses = total_loss(
            output, labels.to(device), config.model.losses, train.source_ids(index).to(device)
        )
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(parameters, settings.grad_clip_norm)
        optimizer.step()
        scheduler.step()
        window.append(float(losses["total"].detach()))
        last = step + 1 == settings.steps
        if (step + 1) % settings.eval_every == 0 or last:
            curve.steps.append(step + 1)
            curve.train_loss.append(float(np.mean(window)))
            window = []
            if evaluate is not None:
                curve.eval_metrics.append(evaluate(model))
    curve.wall_sec = time.perf_counter() - started
    model.eval()
    return curve


# ---------------------------------------------------------------------------------------------
# Evaluation


@dataclass
class FeaturePredictions:
    """Per-window probabilities (M, W, C) of every (sample, offset class) pair evaluated, with
    the targets (M,) and each row's video."""

    probs: Tensor
    targets: Tensor
    video_uids: list[str]


@torch.no_grad()
def predict_all_offsets(
    model: StreamingModel,
    features: FeatureSet,
    *,
    classes: Sequence[int] | None = None,
    batch_size: int = 32,
) -> FeaturePredictions:
    """Every sample shown at every offset class (default: all; the test set is then balanced
    over the classes and each stream counts once per class), run as a stream (the model's own
    state, window after window; `forward` equals stepping)."""
    model.eval()
    classes = list(range(features.num_classes)) if classes is None else list(classes)
    pairs = [(n, c) for n in range(len(features)) for c in classes]
    probs = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        index = torch.tensor([n for n, _ in chunk])
        labels = torch.tensor([c for _, c in chunk])
        output = model.forward_features(features.inputs(index, labels))
        probs.append(output.logits.float().softmax(dim=-1))
    return FeaturePredictions(
        torch.cat(probs),
        torch.tensor([c for _, c in pairs]),
        [features.video_uids[n] for n, _ in pairs],
    )
