"""The quality benchmark: which system finds the offset, at two difficulty levels (issue 10).

    .venv/bin/python benchmarks/quality.py --scale ci [--levels easy hard] [--seeds 0 1 2]
        [--work DIR] [--json FILE] [--plots DIR] [--device cpu|cuda] [--workers N]
        [--steps N] [--regime-steps N] [--regime-levels hard] [--ablation-levels hard]
        [--visual-stem tubelet|conv] [--stage1-steps N] [--stage1-attempts N]

Per level (docs/BENCHMARKS.md, "Quality"):
1. **Data.** `assynch.synth` clips of the level, turned into shards by the real preprocessing
   job (`run_local`, configs/quickstart.yaml's time base: 4 windows of 4.8 s per stream sample,
   64 px frames) with a 4 s audio margin, so that every stream sample can be shown at every one
   of the 21 offset classes. Train/val/test split by clip (the job's own hash split).
2. **Encoders, once.** One set of encoder weights per level (seed `--encoder-seed`; the visual
   encoder's embedding `--visual-stem tubelet|conv`), optionally trained by a shared stage 1 of
   `--stage1-steps` on in-sync train windows (`--stage1-objective`: Synchformer's segment-level
   contrastive pre-training, or visual onset pre-training with targets from the audio or, as a
   diagnostic, the synthetic clips' listed onsets or the audio's on-screen onsets,
   `--stage1-targets`), then frozen. A visual onset stage 1 can restart from the next encoder
   seed where its held-out onset AUC has not reached `--stage1-min-auc` by
   `--stage1-check-step` (`--stage1-attempts`). Left out on the command line, these settings
   are the level's own (`LEVEL_ENCODERS`: `easy` random tubelet encoders, `hard` the conv stem
   and a label-free visual onset stage 1 with up to 3 attempts); given, they hold for every
   level. Every sample's encoder features are computed once, with its audio at all 21 offsets
   (`assynch.train.frozen_features`); with `--reuse-data` the stage-1 weights and the features
   are kept in `--work` and reused.
3. **Systems, same budget.** Each learned system trains everything after the encoders for
   `--steps` steps of `--batch-size` streams (a fresh uniform offset per stream and step), one
   run per seed: the snapshot model (APA is the same run, its predictions averaged over the
   windows seen), StreamSync, AS-Synchformer and its ablations (one streaming token; no
   contrastive loss; no EMD loss) at `--ablation-levels`. Learning curves: validation ACC@1
   every `--eval-every` steps. An ablation is recorded as not run where AS-Synchformer itself
   is at chance on validation (its final val ACC@1, mean over seeds, not above twice a
   constant prediction's): it could only compare chance with chance (`--always-ablate` runs it
   anyway).
4. **Encoder regimes** (smaller budget, `--regime-levels`): from each seed's trained frozen
   AS-Synchformer, `--regime-steps` more steps with the encoders frozen, partly trained (the
   last blocks and pooling) or fully trained, on raw frames and log-mels.
5. **Test.** Every test stream at every offset class (balanced over the 21 classes; each stream
   counts once per class), as a stream: ACC@1, ACC@1+-1 and EMD (s) after the last window and
   over the windows seen. The non-learned peer (onset cross-correlation) is scored on the very
   same (stream, offset) pairs.

Scales: `ci` (this file's defaults; sized for two CPU cores: 45 minutes for both levels, the
ablations and regimes at `hard` only) and `full` (more clips and steps, for a GPU; point
`--shards-root` at preprocessed Ego4D shards with a 4 s audio margin to skip the synthetic data).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from assynch.config import AssynchConfig, load_config
from assynch.eval.metrics import offset_metrics, streaming_metrics
from assynch.eval.onset_baseline import DEFAULT_SCALE, streaming_logits, window_correlations
from assynch.models import StreamingModel, build_model, total_loss
from assynch.models.regimes import apply_encoder_regime
from assynch.models.streaming import log_mean_probabilities
from assynch.models.visual_onset import (
    AUC_BINS,
    auc_from_counts,
    onset_score_counts,
    two_path_onset_loss,
)
from assynch.preprocess.job import run_local
from assynch.preprocess.plan import preprocess_config_hash
from assynch.samples.model_inputs import selected_video_segments
from assynch.samples.offsets import center_class, offset_grid_sec
from assynch.shards.dataset import ShardDataset
from assynch.synth.clips import SynthSpec, generate_clips
from assynch.train.frozen_features import (
    FeatureSet,
    HeadTraining,
    encode_split,
    predict_all_offsets,
    train_heads,
)
from assynch.train.inputs import StreamBatch, audio_at_offsets, to_model_inputs

log = logging.getLogger("quality")
REPO = Path(__file__).resolve().parents[1]

SCALES: dict[str, dict[str, Any]] = {
    "ci": {"clips": 40, "seconds": 60.0, "samples_per_video": 4, "steps": 300,
           "batch_size": 8, "eval_every": 50, "regime_steps": 10, "regime_batch": 4,
           "ablation_levels": ["hard"], "regime_levels": ["hard"]},
    "full": {"clips": 200, "seconds": 120.0, "samples_per_video": 8, "steps": 5000,
             "batch_size": 64, "eval_every": 250, "regime_steps": 1000, "regime_batch": 16,
             "ablation_levels": ["easy", "hard"], "regime_levels": ["hard"]},
}
# A scale's settings that differ by level (where the command line leaves them out). `ci`: with
# the onset stage 1 every `hard` system leaves chance by its first evaluation (step 50 of 300,
# docs/BENCHMARKS.md), so `hard`'s 18 head runs take 150 steps each; `easy`'s leave it at
# steps 100-200 and keep 300. The regimes run on raw frames through the conv stem (60-130 s a
# run for 20 steps), so `ci` gives them 10 steps: 20 made the whole scale 45.6 minutes.
SCALE_LEVELS: dict[str, dict[str, dict[str, Any]]] = {
    "ci": {"hard": {"steps": 150}},
    "full": {},
}
# The encoders per level, where the command line leaves them out (a flag given there holds for
# every level). `easy`'s events are found by global frame change, so random frozen tubelet
# encoders do; `hard`'s are contacts of small objects under head motion, which random encoders
# do not see: a convolutional stem and the label-free visual onset stage 1, restarted from the
# next encoder seed where its held-out onset AUC is under --stage1-min-auc at the check step.
# Whether that stage 1 leaves its plateau within a CPU budget depends on the initialisation:
# on the `ci` hard clips seeds 1234, 1235 and 1236 were still at AUC 0.47-0.53 at step 350,
# seed 7 had started by step 400 (docs/BENCHMARKS.md), so `hard` tries 7, 8, 9.
LEVEL_ENCODERS: dict[str, dict[str, Any]] = {
    "easy": {"visual_stem": "tubelet", "stage1_steps": 0},
    "hard": {"visual_stem": "conv", "stage1_objective": "visual_onset",
             "stage1_targets": "audio", "stage1_steps": 600, "stage1_lr": 1e-3,
             "encoder_seed": 7, "stage1_attempts": 3, "stage1_check_step": 400},
}
ENCODER_DEFAULTS: dict[str, Any] = {
    "visual_stem": "tubelet", "stage1_steps": 0, "stage1_objective": "segment_contrastive",
    "stage1_targets": "audio", "stage1_lr": 3e-4, "encoder_seed": 1234, "stage1_attempts": 1,
    "stage1_check_step": 400,
}
# name -> (model kind, config overrides)
SYSTEMS: dict[str, tuple[str, list[str]]] = {
    "snapshot": ("snapshot", []),
    "streamsync": ("streamsync", []),
    "as_synchformer": ("as_synchformer", []),
    "as_no_selection": ("as_synchformer", ["model.streaming_tokens=1"]),
    "as_no_contrastive": ("as_synchformer", ["model.losses.contrastive=0"]),
    "as_no_emd": ("as_synchformer", ["model.losses.emd=0"]),
}
ROW_ORDER = [
    "onset_peer", "snapshot", "apa", "apa_logits", "apa_calibrated", "streamsync",
    "as_synchformer", "as_no_selection", "as_no_contrastive", "as_no_emd",
]
REGIMES = ("frozen", "partial", "full")
METRICS = ("acc1", "acc1_pm1", "emd_sec")
VAL_CLASSES = list(range(0, 21, 2))
# Every system: frozen encoders; AS-Synchformer's history ring holds the 4 windows of a stream
# sample (a longer ring would only hold masked, empty slots here, at a cost).
MODEL_OVERRIDES = ["model.encoder_regime=frozen", "model.history_windows=4"]


def model_config(args: argparse.Namespace, *overrides: str) -> AssynchConfig:
    """The config every model of the run is built from: `--config`, the visual stem, then
    `overrides` (the encoders' weights move between models, so their shapes must agree)."""
    return load_config(args.config, [f"model.visual_encoder.stem={args.visual_stem}", *overrides])


def level_config(args: argparse.Namespace, level: str, *extra: str) -> AssynchConfig:
    work = Path(args.work) / level
    overrides = [
        f"preprocess.input={work / 'clips'}",
        f"preprocess.samples_per_video={args.samples_per_video}",
        "preprocess.audio_margin_sec=4.0",
        f"preprocess.splits.train={args.splits[0]}",
        f"preprocess.splits.val={args.splits[1]}",
        f"preprocess.splits.test={args.splits[2]}",
        f"preprocess.num_workers={args.workers}",
        "model.encoder_regime=frozen",
        f"model.visual_encoder.stem={args.visual_stem}",
        *extra,
    ]
    config = load_config(args.config, overrides)
    shards = args.shards_root or str(work / f"shards-{preprocess_config_hash(config)[:12]}")
    return load_config(args.config, [*overrides, f"preprocess.output={shards}"])


def make_data(args: argparse.Namespace, level: str) -> tuple[AssynchConfig, dict[str, float]]:
    config = level_config(args, level)
    walls: dict[str, float] = {}
    finished = Path(config.preprocess.output, "_manifest.json").is_file()
    if args.shards_root is None and args.reuse_data and finished:
        log.info("%s: reusing the finished shards %s (--reuse-data)", level,
                 config.preprocess.output)
    elif args.shards_root is None:
        started = time.perf_counter()
        generate_clips(
            config.preprocess.input, count=args.clips, duration_sec=args.seconds,
            seed=args.data_seed, spec=SynthSpec(difficulty=level), workers=args.workers,
        )
        walls["generate"] = time.perf_counter() - started
        started = time.perf_counter()
        report = run_local(config, workers=args.workers)
        walls["preprocess"] = time.perf_counter() - started
        log.info("%s: shards %s: %d samples, %d errors", level, config.preprocess.output,
                 report.manifest["samples"], report.manifest["errors"])
    return config, walls


# ---------------------------------------------------------------------------------------------
# Encoders: one set per level, optionally a shared stage 1


def load_rows(shards: str, split: str, config: AssynchConfig) -> StreamBatch:
    columns = ["sample_id", "offset_sec", "offset_class", "audio_margin_sec", "frames", "mel"]
    parts = list(ShardDataset(shards, split, batch_size=64, columns=columns))
    merged = {
        name: (sum((list(p[name]) for p in parts), []) if name == "sample_id"
               else torch.cat([torch.as_tensor(p[name]) for p in parts]))
        for name in columns
    }
    return StreamBatch.from_columns(merged)


def subset(batch: StreamBatch, index: torch.Tensor) -> StreamBatch:
    return StreamBatch(
        [batch.sample_id[int(i)] for i in index], batch.frames[index], batch.mel[index],
        batch.offset_sec[index], batch.offset_class[index], batch.audio_margin_sec[index],
    )


@dataclass
class Stage1Attempt:
    """One stage-1 run from one encoder seed: its model, optimiser and sampling state."""
    seed: int
    model: StreamingModel
    parameters: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    losses: list[float]


def stage1_attempt(seed: int, args: argparse.Namespace, device: str) -> Stage1Attempt:
    """Fresh encoders from `seed`, every encoder weight trainable (and the stage-1 objective's
    own head), with their optimiser and the segment sampler seeded alike."""
    torch.manual_seed(seed)
    model = build_model(model_config(args, "model.kind=snapshot")).to(device)
    snapshot = model.snapshot
    apply_encoder_regime(model, "full")
    if args.stage1_objective == "segment_contrastive":
        snapshot.segment_logit_scale.requires_grad_(True)
    else:  # the onset probe is part of what stage 1 trains
        snapshot.visual_onset_head.requires_grad_(True)
    parameters = [p for p in snapshot.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=args.stage1_lr, weight_decay=0.05)
    return Stage1Attempt(seed, model, parameters, optimizer,
                         torch.Generator().manual_seed(seed), [])


def stage1_steps(
    attempt: Stage1Attempt, steps: int, config: AssynchConfig, rows: StreamBatch,
    onset_targets: torch.Tensor | None, args: argparse.Namespace, device: str,
) -> None:
    """`steps` more stage-1 steps of `attempt` (segment InfoNCE without onset targets)."""
    snapshot = attempt.model.snapshot
    centre = torch.full((args.stage1_batch,), center_class(config.time))
    attempt.model.train()
    for _ in range(steps):
        if onset_targets is None:
            index = torch.randint(len(rows), (args.stage1_batch,), generator=attempt.generator)
            inputs = to_model_inputs(subset(rows, index), config, device=device,
                                     offset_class=centre)
            loss = snapshot.segment_contrastive_loss(inputs.video.flatten(0, 1),
                                                     inputs.audio.flatten(0, 1))
        else:
            loss = onset_stage1_loss(snapshot, config, rows, onset_targets,
                                     args.stage1_segments, attempt.generator, device)
        attempt.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(attempt.parameters, 1.0)
        attempt.optimizer.step()
        attempt.losses.append(float(loss.detach()))
        log_progress(attempt.losses, f"stage 1 {args.stage1_objective} (seed {attempt.seed})")


def shared_encoders(
    config: AssynchConfig, rows: StreamBatch | None, args: argparse.Namespace, device: str,
    stored: Path | None = None,
) -> tuple[StreamingModel, dict[str, Any]]:
    """The level's encoders: random (seeded) or after `--stage1-steps` of a shared stage 1 on
    in-sync train windows (`--stage1-objective`: Synchformer's segment-level InfoNCE, or visual
    onset pre-training on segments of which half hold an audio onset), then frozen. With
    `stored`, the stage-1 weights and report are read from that file when it exists (same
    shards and settings: stage 1 would train the same weights again) and written to it after
    a stage 1 otherwise.

    Restarts (visual onset stage 1, `--stage1-attempts` > 1): whether that stage 1 leaves its
    plateau within a CPU budget depends on the initialisation (docs/BENCHMARKS.md, session 9).
    Each attempt trains from its own encoder seed (`--encoder-seed`, +1, ...) for
    `--stage1-check-step` steps and is scored by the held-out onset AUC on the val split; the
    first that reaches `--stage1-min-auc` goes on to `--stage1-steps`, and where none does,
    the best of them. Decided on validation, never on the test split."""
    report: dict[str, Any] = {"objective": args.stage1_objective, "losses": []}
    reuse = stored is not None and stored.is_file()
    if reuse or not args.stage1_steps or rows is None:  # no stage 1 to run
        torch.manual_seed(args.encoder_seed)
        model = build_model(model_config(args, "model.kind=snapshot")).to(device)
        if reuse:
            saved = torch.load(stored, weights_only=False)
            model.load_state_dict(saved["state_dict"])
            report = saved["report"]
            log.info("reusing the stage-1 encoders %s (--reuse-data)", stored)
        apply_encoder_regime(model, "frozen")
        return model.eval(), report
    onset = args.stage1_objective == "visual_onset"
    onset_targets = val_rows = val_targets = None
    attempt = stage1_attempt(args.encoder_seed, args, device)
    if onset:
        onset_targets = stage1_onset_targets(args.stage1_targets, attempt.model.snapshot,
                                             config, "train", rows)
        log.info("stage 1 visual onset: %s targets, %.4f of steps", args.stage1_targets,
                 float(onset_targets.mean()))
        val_rows = load_rows(config.preprocess.output, "val", config)
        val_targets = stage1_onset_targets(args.stage1_targets, attempt.model.snapshot, config,
                                           "val", val_rows)
    check = min(args.stage1_check_step, args.stage1_steps) if onset else args.stage1_steps
    attempts = args.stage1_attempts if onset and check < args.stage1_steps else 1
    tried: list[dict[str, Any]] = []
    best: Stage1Attempt | None = None
    best_auc = -1.0
    for number in range(attempts):
        if number:
            attempt = stage1_attempt(args.encoder_seed + number, args, device)
        stage1_steps(attempt, check, config, rows, onset_targets, args, device)
        if attempts == 1:
            best = attempt
            break
        auc = onset_auc(attempt.model.snapshot, config, val_rows, val_targets, device)
        tried.append({"seed": attempt.seed, "step": check, "val_auc": auc})
        log.info("stage 1 attempt %d (encoder seed %d): validation AUC %.3f at step %d "
                 "(goes on at >= %.2f)", number + 1, attempt.seed, auc, check,
                 args.stage1_min_auc)
        if auc > best_auc:
            best, best_auc = attempt, auc
        if auc >= args.stage1_min_auc:
            break
    assert best is not None
    stage1_steps(best, args.stage1_steps - len(best.losses), config, rows, onset_targets,
                 args, device)
    report.update(losses=best.losses, seed=best.seed)
    if tried:
        report["attempts"] = tried
    if onset:
        report["val_auc"] = onset_auc(best.model.snapshot, config, val_rows, val_targets,
                                      device)
        log.info("stage 1 visual onset (encoder seed %d): validation AUC %.3f", best.seed,
                 report["val_auc"])
    model = best.model
    if stored is not None:
        torch.save({"state_dict": model.state_dict(), "report": report}, stored)
    apply_encoder_regime(model, "frozen")
    return model.eval(), report


def stage1_onset_targets(kind: str, snapshot: Any, config: AssynchConfig, split: str,
                         rows: StreamBatch) -> torch.Tensor:
    """(N, W, S, steps) visual onset targets, `--stage1-targets`: `audio` (the objective as
    shipped: the in-sync audio's onsets), or two diagnostics for synthetic clips that real
    footage cannot have: `listed` (the clips' listed audio-visual onsets) and `on_screen` (the
    audio's onsets, kept only where the clip lists an audio-visual onset in that step: the
    audio targets without the off-screen sounds)."""
    if kind == "audio":
        return in_sync_onset_targets(snapshot, config, rows)
    listed = listed_onset_targets(config, split, rows)
    if kind == "listed":
        return listed
    return in_sync_onset_targets(snapshot, config, rows) * listed


@torch.no_grad()
def in_sync_onset_targets(snapshot: Any, config: AssynchConfig, rows: StreamBatch) -> torch.Tensor:
    """(N, W, S, steps) visual onset targets of every stream's segments, from its in-sync
    audio (offset 0 s re-cut from the stored margin)."""
    targets = []
    for index in range(len(rows)):
        audio = audio_at_offsets(
            rows.mel[index].float(), stored_offset_sec=float(rows.offset_sec[index]),
            audio_margin_sec=float(rows.audio_margin_sec[index]), offsets_sec=[0.0],
            config=config,
        )[0]  # (W, S, n_mels, T)
        targets.append(snapshot.visual_onset_targets(audio))
    return torch.stack(targets)


def listed_onset_targets(config: AssynchConfig, split: str, rows: StreamBatch) -> torch.Tensor:
    """(N, W, S, steps) targets from the synthetic clips' own metadata instead of the audio: 1
    at the tubelet step that holds a listed audio-visual onset (`--stage1-targets listed`, a
    diagnostic: real footage has no such list)."""
    time, visual = config.time, config.model.visual_encoder
    step_sec = visual.tubelet_frames / time.fps
    columns = ["sample_id", "video_uid", "window_starts_sec"]
    starts, clips = {}, {}
    for batch in ShardDataset(config.preprocess.output, split, batch_size=64, columns=columns):
        for sample, clip, window_starts in zip(batch["sample_id"], batch["video_uid"],
                                               batch["window_starts_sec"], strict=True):
            starts[sample], clips[sample] = [float(t) for t in window_starts], clip
    targets = torch.zeros(len(rows), time.windows_per_sample, time.segments_per_window,
                          visual.out_tokens)
    for index, sample in enumerate(rows.sample_id):
        sidecar = Path(config.preprocess.input) / f"{clips[sample]}.json"
        events = json.loads(sidecar.read_text())["events"]
        onsets = [t for event in events if event["audio_visual"] for t in event["onsets_sec"]]
        for window, window_start in enumerate(starts[sample]):
            for segment in range(time.segments_per_window):
                first = window_start + segment * time.segment_stride_sec
                for onset in onsets:
                    step = math.floor((onset - first) / step_sec + 1e-6)
                    if 0 <= step < visual.out_tokens:
                        targets[index, window, segment, step] = 1.0
    return targets


def onset_stage1_loss(
    snapshot: Any, config: AssynchConfig, rows: StreamBatch, targets: torch.Tensor,
    segments: int, generator: torch.Generator, device: str,
) -> torch.Tensor:
    """Visual onset pre-training on `segments` segments from across the train streams: half
    drawn among the segments whose in-sync audio has an onset (salient), the rest uniformly;
    each flipped left-right with probability 1/2 (the sound does not change)."""
    flat = targets.flatten(0, 2)  # (N*W*S, steps)
    salient = torch.nonzero(flat.amax(dim=1) > 0.5).flatten()
    half = min(segments // 2, salient.numel())
    picked = torch.cat((
        salient[torch.randint(salient.numel(), (half,), generator=generator)],
        torch.randint(flat.shape[0], (segments - half,), generator=generator),
    ))
    windows, per_window = targets.shape[1], targets.shape[2]
    stream = picked // (windows * per_window)
    window = picked // per_window % windows
    video = selected_video_segments(rows.frames, config.time, config.video, stream, window,
                                    picked % per_window)
    flip = torch.rand(segments, generator=generator) < 0.5
    video[flip] = video[flip].flip(-1)
    logits = snapshot.visual_onset_logits(video.to(device))
    return two_path_onset_loss(*logits, flat[picked].to(device))


@torch.no_grad()
def onset_auc(snapshot: Any, config: AssynchConfig, rows: StreamBatch, targets: torch.Tensor,
              device: str, streams: int = 32) -> float:
    """How well the pre-trained visual encoder finds the onsets on held-out streams: the ROC
    AUC of its pooled-token onset logits, steps with target 1 against the rest (the training
    loop's `val/onset_auc`)."""
    snapshot.eval()
    windows, segments = targets.shape[1], targets.shape[2]
    counts = torch.zeros(2, AUC_BINS, dtype=torch.float64)
    for index in range(min(streams, len(rows))):
        window = torch.arange(windows).repeat_interleave(segments)
        segment = torch.arange(segments).repeat(windows)
        video = selected_video_segments(rows.frames, config.time, config.video,
                                        torch.full_like(window, index), window, segment)
        logits = snapshot.visual_onset_logits(video.to(device))[0].cpu()
        counts += onset_score_counts(logits, targets[index].flatten(0, 1))
    return auc_from_counts(counts)


def log_progress(losses: list[float], what: str, every: int = 100) -> None:
    """Every `every` steps, the mean of the last `every` losses: long runs (a GPU lease, a
    call's time limit) show in their log that they move, and what they reached."""
    if len(losses) % every == 0:
        log.info("step %d: %s %.3f (mean of the last %d)", len(losses), what,
                 float(np.mean(losses[-every:])), every)


def with_encoders(model: StreamingModel, encoders: StreamingModel) -> StreamingModel:
    """`model` with the level's shared encoders (the cached features belong to them)."""
    model.snapshot.visual_encoder.load_state_dict(encoders.snapshot.visual_encoder.state_dict())
    model.snapshot.audio_encoder.load_state_dict(encoders.snapshot.audio_encoder.state_dict())
    return model


# ---------------------------------------------------------------------------------------------
# Scoring


@dataclass
class Scored:
    final: dict[str, float]  # after the last window
    streaming: dict[int, dict[str, float]]  # windows seen -> metrics


def score(probs: torch.Tensor, targets: torch.Tensor) -> Scored:
    probs, targets = probs.float().cpu(), targets.cpu()
    return Scored(offset_metrics(probs[:, -1], targets), streaming_metrics(probs, targets))


# Inverse temperatures tried for the calibrated APA row: 1/4 .. 32 in steps of 2^(1/4).
SHARPNESS_GRID = torch.logspace(-2, 5, 29, base=2.0)


def sharpened_logits(probs: torch.Tensor, sharpness: float | torch.Tensor) -> torch.Tensor:
    """s * log p: averaged beliefs at inverse temperature s, as logits (the accumulation
    AS-Synchformer's sharpness applies, `log_mean_probabilities`)."""
    return sharpness * log_mean_probabilities(probs.float())


def fit_sharpness(probs: torch.Tensor, targets: torch.Tensor) -> float:
    """Temperature scaling (Guo et al., 2017) of averaged beliefs: the inverse temperature s of
    softmax(s * log p) with the lowest cross-entropy after the last window. probs (N, W, C)."""
    losses = [torch.nn.functional.cross_entropy(sharpened_logits(probs[:, -1], s), targets)
              for s in SHARPNESS_GRID]
    return float(SHARPNESS_GRID[int(torch.stack(losses).argmin())])


def sharpened(probs: torch.Tensor, sharpness: float) -> torch.Tensor:
    return sharpened_logits(probs, sharpness).softmax(dim=-1)


def onset_peer(config: AssynchConfig, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The non-learned peer on every (test stream, offset class) pair, like the models."""
    grid = offset_grid_sec(config.time)
    rows = load_rows(config.preprocess.output, split, config)
    probs, targets = [], []
    for index in range(len(rows)):
        frames = rows.frames[index].numpy()
        mel = rows.mel[index].numpy()
        stored = float(rows.offset_sec[index])
        for offset_class, offset in enumerate(grid):
            correlations = window_correlations(
                frames, mel, time=config.time, audio=config.audio,
                audio_margin_sec=float(rows.audio_margin_sec[index]),
                shift_sec=float(offset) - stored,
            )
            logits = torch.as_tensor(streaming_logits(correlations, DEFAULT_SCALE))
            probs.append(logits.float().softmax(dim=-1))
            targets.append(offset_class)
    return torch.stack(probs), torch.tensor(targets)


# ---------------------------------------------------------------------------------------------
# One level


def train_system(
    name: str,
    seed: int,
    args: argparse.Namespace,
    encoders: StreamingModel,
    train: FeatureSet,
    val: FeatureSet,
    device: str,
) -> tuple[StreamingModel, AssynchConfig, dict[str, Any]]:
    kind, overrides = SYSTEMS[name]
    config = model_config(args, f"model.kind={kind}", *MODEL_OVERRIDES, *overrides)
    torch.manual_seed(1000 + seed)
    model = with_encoders(build_model(config), encoders).to(device)
    def evaluate(trained: StreamingModel) -> dict[str, float]:
        # Every other offset class (the centre included): the learning curve's points cost
        # half as much, and the classes stay spread over the whole range.
        predictions = predict_all_offsets(trained, val, classes=VAL_CLASSES)
        return offset_metrics(predictions.probs[:, -1].cpu(), predictions.targets)

    settings = HeadTraining(
        steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
        warmup_steps=max(1, args.steps // 20), eval_every=args.eval_every, seed=seed,
        contrastive_candidates=args.contrastive_candidates,
    )
    curve = train_heads(model, train, config, settings, evaluate)
    return model, config, {
        "steps": curve.steps, "train_loss": curve.train_loss,
        "val": curve.eval_metrics, "train_sec": curve.wall_sec,
    }


def regime_runs(
    start: StreamingModel,
    config: AssynchConfig,
    shards: str,
    seed: int,
    rows: StreamBatch,
    test: FeatureSet,
    args: argparse.Namespace,
    device: str,
) -> dict[str, dict[str, Any]]:
    """From a trained frozen AS-Synchformer: the same extra steps in each encoder regime, on raw
    frames and log-mels (the encoders run, and learn when the regime allows), then the test."""
    results = {}
    for regime in REGIMES:
        model = build_model(config).to(device)
        model.load_state_dict(start.state_dict())
        apply_encoder_regime(model, regime, config.model.trainable_encoder_blocks)
        parameters = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(parameters, lr=args.learning_rate * 0.3,
                                      weight_decay=0.05)
        generator = torch.Generator().manual_seed(seed)
        started = time.perf_counter()
        losses = []
        for _ in range(args.regime_steps):
            model.train()
            index = torch.randint(len(rows), (args.regime_batch,), generator=generator)
            labels = torch.randint(config.time.num_offset_classes, (args.regime_batch,),
                                   generator=generator)
            inputs = to_model_inputs(subset(rows, index), config, device=device,
                                     offset_class=labels)
            output = model(inputs.video, inputs.audio)
            loss = total_loss(output, inputs.offset_class, config.model.losses)["total"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            losses.append(float(loss.detach()))
            log_progress(losses, f"regime {regime} seed {seed} loss")
        wall = time.perf_counter() - started
        model.eval()
        # The test on features of the *updated* encoders would need a re-encode; the encoders
        # changed only in partial/full, so those are re-encoded from the raw test rows.
        if regime == "frozen":
            predictions = predict_all_offsets(model, test)
            probs, targets = predictions.probs, predictions.targets
        else:
            fresh = encode_split(model, shards, "test", config)
            predictions = predict_all_offsets(model, fresh)
            probs, targets = predictions.probs, predictions.targets
        scored = score(probs, targets)
        results[regime] = {"final": scored.final, "train_loss": losses, "train_sec": wall}
        log.info("regime %s seed %d: test %s (train %.0f s)", regime, seed,
                 {k: round(v, 3) for k, v in scored.final.items()}, wall)
    return results


def level_args(args: argparse.Namespace, level: str) -> argparse.Namespace:
    """`args` with the settings the command line left out filled in for `level`: the scale's
    (`SCALE_LEVELS`) and the encoders' (`LEVEL_ENCODERS`, then `ENCODER_DEFAULTS`)."""
    filled = argparse.Namespace(**vars(args))
    for key, value in SCALE_LEVELS[args.scale].get(level, {}).items():
        if key not in args.command_line:
            setattr(filled, key, value)
    for key, default in ENCODER_DEFAULTS.items():
        if getattr(filled, key) is None:
            setattr(filled, key, LEVEL_ENCODERS.get(level, {}).get(key, default))
    return filled


def run_level(level: str, args: argparse.Namespace, device: str) -> dict[str, Any]:
    args = level_args(args, level)
    config, walls = make_data(args, level)
    shards = config.preprocess.output
    needs_rows = bool(args.stage1_steps) or level in args.regime_levels
    rows = load_rows(shards, "train", config) if needs_rows else None
    restarts = (f"-a{args.stage1_attempts}c{args.stage1_check_step}m{args.stage1_min_auc:g}"
                if args.stage1_attempts > 1 else "")
    stage1_name = (f"{args.stage1_objective}-{args.stage1_targets}-{args.stage1_steps}"
                   f"-lr{args.stage1_lr:g}-b{args.stage1_batch}-s{args.stage1_segments}"
                   f"{restarts}" if args.stage1_steps else "none")  # all that shapes its weights
    name = f"{args.encoder_seed}-{args.visual_stem}-{stage1_name}"
    cache = Path(args.work) / level / f"features-{name}.pt"
    stored_encoders = (Path(args.work) / level / f"encoders-{name}.pt"
                       if args.reuse_data and args.stage1_steps else None)
    started = time.perf_counter()
    encoders, stage1 = shared_encoders(config, rows, args, device, stored_encoders)
    walls["stage1"] = time.perf_counter() - started
    started = time.perf_counter()
    if args.reuse_data and cache.is_file():  # same shards, same encoders: same features
        features = torch.load(cache, weights_only=False)
    else:
        features = {
            split: encode_split(encoders, shards, split, config)  # on the encoders' device
            for split in ("train", "val", "test")
        }
        if args.reuse_data:
            torch.save(features, cache)
    walls["encode"] = time.perf_counter() - started
    if args.save_features:  # (train, test) for benchmarks/contrastive_probe.py and experiments
        out = Path(args.save_features)
        out.mkdir(parents=True, exist_ok=True)
        torch.save((features["train"], features["test"]), out / f"features_{level}.pt")
    counts = {split: {"samples": len(f), "clips": len(set(f.video_uids))}
              for split, f in features.items()}
    log.info("%s: %s; so far %s", level, counts, {k: round(v) for k, v in walls.items()})

    started = time.perf_counter()
    peer_probs, peer_targets = onset_peer(config, "test")
    walls["peer"] = time.perf_counter() - started
    systems: dict[str, Any] = {"onset_peer": {"seeds": [asdict(score(peer_probs, peer_targets))]}}
    regimes: dict[str, list[dict[str, Any]]] = {regime: [] for regime in REGIMES}
    skipped: dict[str, str] = {}
    started = time.perf_counter()
    for name in args.systems:
        reason = ablation_skip_reason(name, level, systems, args)
        if reason:
            skipped[name] = reason
            log.info("%s %s: not run (%s)", level, name, reason)
            continue
        for seed in args.seeds:
            model, system_config, history = train_system(
                name, seed, args, encoders, features["train"], features["val"], device
            )
            predictions = predict_all_offsets(model, features["test"])
            result = {**asdict(score(predictions.probs, predictions.targets)), **history,
                      "seed": seed}
            systems.setdefault(name, {"seeds": []})["seeds"].append(result)
            log.info("%s %s seed %d: test %s (train %.0f s)", level, name, seed,
                     {k: round(v, 3) for k, v in result["final"].items()}, history["train_sec"])
            if name == "snapshot":
                # APA is the same weights with their predictions averaged over the windows seen
                # (the paper's: the probabilities); beside it, the same average in log space
                # (the logits), which is how much the averaging rule alone moves the metrics.
                for row, average in (("apa", "probabilities"), ("apa_logits", "logits")):
                    averaged = build_model(model_config(
                        args, "model.kind=apa", f"model.apa_average={average}", *MODEL_OVERRIDES
                    )).to(device)
                    averaged.load_state_dict(model.state_dict())
                    apa_predictions = predict_all_offsets(averaged, features["test"])
                    apa = score(apa_predictions.probs, apa_predictions.targets)
                    systems.setdefault(row, {"seeds": []})["seeds"].append(
                        {**asdict(apa), **history, "seed": seed}
                    )
                    if row == "apa":
                        # A reference for EMD: APA's average made as sharp as the validation
                        # split supports (one inverse temperature, fitted by cross-entropy on
                        # val). It cannot change ACC@1; it shows how much of an EMD gain is
                        # calibration alone.
                        val_predictions = predict_all_offsets(averaged, features["val"])
                        sharpness = fit_sharpness(val_predictions.probs, val_predictions.targets)
                        calibrated = score(sharpened(apa_predictions.probs, sharpness),
                                           apa_predictions.targets)
                        systems.setdefault("apa_calibrated", {"seeds": []})["seeds"].append(
                            {**asdict(calibrated), **history, "seed": seed,
                             "sharpness": sharpness}
                        )
            if name == "as_synchformer" and level in args.regime_levels and rows is not None:
                for regime, outcome in regime_runs(
                    model, system_config, shards, seed, rows, features["test"], args, device
                ).items():
                    regimes[regime].append({**outcome, "seed": seed})
    walls["systems"] = time.perf_counter() - started
    return {
        "level": level, "counts": counts, "wall_sec": walls, "stage1_losses": stage1["losses"],
        "encoders": {key: getattr(args, key) for key in ENCODER_DEFAULTS},
        "steps": args.steps,
        "stage1": {k: v for k, v in stage1.items() if k != "losses"},
        "systems": systems, "regimes": {k: v for k, v in regimes.items() if v},
        "skipped": skipped,
    }


def ablation_skip_reason(name: str, level: str, systems: dict[str, Any],
                         args: argparse.Namespace) -> str:
    """Why an ablation does not run at this level ('' to run it): the level is not one of
    `--ablation-levels` (the `ci` scale spends that budget at `hard` only), or AS-Synchformer
    was trained here and its final validation ACC@1, averaged over the seeds, is not above
    twice what one constant prediction scores on the validation classes (1/11 on every other
    class), so an ablation could only compare chance with chance. Decided on validation, never
    on the test split; `--always-ablate` runs them anyway. (A single evaluation point of one
    seed is no guide: on 15 val streams a constant class scores 0.091, close to 2/21.)"""
    if not name.startswith("as_no_"):
        return ""
    if level not in args.ablation_levels:
        return (f"ablations run at {', '.join(args.ablation_levels) or 'no level'} at this "
                "scale (--ablation-levels)")
    if args.always_ablate or "as_synchformer" not in systems:
        return ""
    final = np.mean([seed["val"][-1]["acc1"] for seed in systems["as_synchformer"]["seeds"]])
    bar = 2 / len(VAL_CLASSES)
    if final > bar:
        return ""
    return (f"AS-Synchformer's final validation ACC@1 ({final:.3f}, mean over seeds) is not "
            f"above twice a constant prediction's ({bar:.3f}), so the ablation would compare "
            "chance with chance; --always-ablate runs it")


# ---------------------------------------------------------------------------------------------
# Report


def mean_std(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else 0.0


def summary_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name in ROW_ORDER:
        if name not in result["systems"]:
            continue
        seeds = result["systems"][name]["seeds"]
        row: dict[str, Any] = {"system": name, "seeds": len(seeds)}
        for metric in METRICS:
            row[metric] = mean_std([s["final"][metric] for s in seeds])
        steps_to_leave = [leaves_chance(s) for s in seeds if "val" in s]
        row["leaves_chance_step"] = steps_to_leave
        rows.append(row)
    return rows


def leaves_chance(seed_result: dict[str, Any], margin: float = 2.0) -> int | None:
    """The first evaluation step whose validation ACC@1 exceeds `margin` x chance (1/21)."""
    for step, metrics in zip(seed_result["steps"], seed_result["val"], strict=True):
        if metrics["acc1"] > margin / 21:
            return step
    return None


def encoder_summary(result: dict[str, Any]) -> str:
    """The level's encoders in a few words: stem, seed, and the stage 1 that trained them."""
    encoders, stage1 = result.get("encoders", {}), result.get("stage1", {})
    if not encoders:
        return "n/a"
    text = f"{encoders['visual_stem']} stem, seed {stage1.get('seed', encoders['encoder_seed'])}"
    if not encoders["stage1_steps"]:
        return f"{text}, random (no stage 1)"
    text += f", {encoders['stage1_steps']} steps of {encoders['stage1_objective']} stage 1"
    if "val_auc" in stage1:
        text += f" (held-out onset AUC {stage1['val_auc']:.3f})"
    for attempt in stage1.get("attempts", []):
        text += (f"; seed {attempt['seed']} AUC {attempt['val_auc']:.3f} at step "
                 f"{attempt['step']}")
    return text


def markdown(results: list[dict[str, Any]]) -> str:
    lines = []
    for result in results:
        counts = result["counts"]
        lines.append(
            f"\n**{result['level']}** (train/val/test streams: "
            f"{counts['train']['samples']}/{counts['val']['samples']}/"
            f"{counts['test']['samples']}, clips {counts['train']['clips']}/"
            f"{counts['val']['clips']}/{counts['test']['clips']}; test = every test stream at "
            f"each of the 21 offsets; {result.get('steps')} head steps a run; encoders "
            f"{encoder_summary(result)})\n"
        )
        lines.append("| system | seeds | ACC@1 | ACC@1±1 | EMD (s) | "
                     "val ACC@1 > 2x chance from step |")
        lines.append("| --- | --- | --- | --- | --- | --- |")
        for row in summary_rows(result):
            cells = [f"{row[m][0]:.3f} ± {row[m][1]:.3f}" for m in METRICS]
            leaves = ", ".join("-" if s is None else str(s) for s in row["leaves_chance_step"])
            lines.append(f"| {row['system']} | {row['seeds']} | {' | '.join(cells)} | "
                         f"{leaves or 'n/a'} |")
        skipped = result.get("skipped", {})
        for name in skipped:
            lines.append(f"| {name} | 0 | not run (below) | | | |")
        for reason in sorted(set(skipped.values())):
            lines.append(f"\nNot run: {reason}.")
        if result["regimes"]:
            lines.append("\nEncoder regimes (from each seed's frozen AS-Synchformer, the same "
                         "extra steps on raw inputs):\n")
            lines.append("| regime | seeds | ACC@1 | ACC@1±1 | EMD (s) | train s per run |")
            lines.append("| --- | --- | --- | --- | --- | --- |")
            for regime, runs in result["regimes"].items():
                cells = [
                    "{:.3f} ± {:.3f}".format(*mean_std([r["final"][m] for r in runs]))
                    for m in METRICS
                ]
                wall = np.mean([r["train_sec"] for r in runs])
                lines.append(f"| {regime} | {len(runs)} | {' | '.join(cells)} | {wall:.0f} |")
    return "\n".join(lines)


def targets_check(results: list[dict[str, Any]]) -> list[str]:
    """The issue's ci targets, each with its verdict."""
    verdicts = []
    chance = 1 / 21
    for result in results:
        rows = {row["system"]: row for row in summary_rows(result)}
        peer = rows["onset_peer"]["acc1"][0]
        for name, row in rows.items():
            if name == "onset_peer":
                continue
            mean, std = row["acc1"]
            # "Clearly above": twice chance, and chance outside two standard deviations over the
            # seeds (with one seed there is no spread, so the first rule does the work).
            above_chance = mean - 2 * std > chance and mean >= 2 * chance
            text = (f"{result['level']}: {name} ACC@1 {mean:.3f} ± {std:.3f} vs chance "
                    f"{chance:.3f} (clearly above: >= 2x chance and mean - 2 std > chance)")
            verdicts.append(f"{'PASS' if above_chance else 'FAIL'} {text}")
            if result["level"] == "hard":
                above_peer = mean - 2 * std > peer
                verdicts.append(f"{'PASS' if above_peer else 'FAIL'} hard: {name} above the "
                                f"peer ({peer:.3f})")
        if result["level"] == "hard" and {"as_synchformer", "apa"} <= rows.keys():
            ours, apa = rows["as_synchformer"], rows["apa"]
            gain = ours["acc1"][0] - apa["acc1"][0]
            spread = ours["acc1"][1] + apa["acc1"][1]
            emd_drop = 1 - ours["emd_sec"][0] / apa["emd_sec"][0]
            ok = gain >= 0.03 and gain > spread and emd_drop >= 0.15
            verdicts.append(
                f"{'PASS' if ok else 'FAIL'} hard: AS-Synchformer - APA = {100 * gain:+.1f} ACC@1 "
                f"points (seeds' spread {100 * spread:.1f}), EMD {100 * emd_drop:+.1f}% lower "
                f"(target >= +3 points outside the spread, >= 15% lower EMD)"
            )
            if "apa_calibrated" in rows:  # a reference, not a target
                calibrated = rows["apa_calibrated"]["emd_sec"][0]
                drop = 1 - ours["emd_sec"][0] / calibrated
                verdicts.append(
                    f"INFO hard: AS-Synchformer's EMD is {100 * abs(drop):.1f}% "
                    f"{'lower' if drop >= 0 else 'higher'} than APA's calibrated on val "
                    f"({calibrated:.3f} s): the part of the EMD gain over APA that is not "
                    f"calibration alone"
                )
    return verdicts


def plot(results: list[dict[str, Any]], out: Path) -> list[Path]:
    from assynch.eval.plots import agg_figure, save_figure

    paths = []
    # One colour per system in both panels (the peer and APA have no learning curve).
    colour = {name: f"C{index}" for index, name in enumerate(ROW_ORDER)}
    for result in results:
        figure = agg_figure(12, 4.5)
        learning, streaming = figure.subplots(1, 2, squeeze=True)
        for name in ROW_ORDER:
            system = result["systems"].get(name)
            if system is None:
                continue
            seeds = system["seeds"]
            if "val" in seeds[0] and not name.startswith("apa"):
                steps = seeds[0]["steps"]
                values = np.mean([[m["acc1"] for m in s["val"]] for s in seeds], axis=0)
                learning.plot(steps, values, marker="o", markersize=3, label=name,
                              color=colour[name])
            # Windows seen are int keys in a run, str keys in its JSON (plots from either).
            curves = [{int(k): v["acc1"] for k, v in s["streaming"].items()} for s in seeds]
            counts = sorted(curves[0])
            values = np.mean([[curve[k] for k in counts] for curve in curves], axis=0)
            streaming.plot(counts, values, marker="o", markersize=3, label=name,
                           color=colour[name])
        for axes, xlabel in ((learning, "training step"), (streaming, "windows seen")):
            axes.axhline(1 / 21, color="grey", linestyle=":", linewidth=1, label="chance")
            axes.set_xlabel(xlabel)
            axes.set_ylabel("ACC@1")
            axes.grid(True, alpha=0.3)
            axes.legend(fontsize=7)
        learning.set_title("validation ACC@1 while training (mean over seeds)")
        streaming.set_title("test ACC@1 against windows seen")
        figure.suptitle(f"quality benchmark, {result['level']}")
        paths.append(save_figure(figure, out / f"quality_{result['level']}.png"))
    return paths


def json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="ci")
    parser.add_argument("--levels", nargs="+", default=["easy", "hard"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    parser.add_argument("--config", default=str(REPO / "configs" / "quickstart.yaml"))
    parser.add_argument("--work", default=None, help="data folder (default: a temp folder)")
    parser.add_argument("--shards-root", default=None,
                        help="existing shards (4 s audio margin) instead of synthetic clips")
    parser.add_argument("--clips", type=int)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--samples-per-video", type=int)
    parser.add_argument("--splits", nargs=3, type=float, default=[0.5, 0.2, 0.3],
                        metavar=("TRAIN", "VAL", "TEST"))
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--encoder-seed", type=int, default=None,
                        help="the encoders' seed (easy 1234, hard 7: LEVEL_ENCODERS)")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--eval-every", type=int)
    parser.add_argument("--contrastive-candidates", type=int, default=3)
    parser.add_argument("--always-ablate", action="store_true",
                        help="run AS-Synchformer's ablations at a level even where it is at "
                        "chance on validation (default: recorded as not run)")
    parser.add_argument("--regime-steps", type=int)
    parser.add_argument("--regime-batch", type=int)
    parser.add_argument("--regime-levels", nargs="*", default=None,
                        help="levels that run the encoder regimes (scale's default: hard)")
    parser.add_argument("--ablation-levels", nargs="*", default=None,
                        help="levels that run AS-Synchformer's ablations (ci: hard; full: both)")
    # Encoder settings: left out, each level takes its own (LEVEL_ENCODERS); given, every level.
    parser.add_argument("--stage1-steps", type=int, default=None)
    parser.add_argument("--stage1-batch", type=int, default=4)
    parser.add_argument("--stage1-lr", type=float, default=None)
    parser.add_argument("--stage1-objective", choices=["segment_contrastive", "visual_onset"],
                        default=None)
    parser.add_argument("--stage1-attempts", type=int, default=None,
                        help="visual onset stage 1: encoder seeds to try (--encoder-seed, +1, "
                        "...), each scored by the held-out onset AUC at --stage1-check-step")
    parser.add_argument("--stage1-check-step", type=int, default=None)
    parser.add_argument("--stage1-min-auc", type=float, default=0.6,
                        help="an attempt at least this good at the check step goes on")
    parser.add_argument("--stage1-targets", choices=["audio", "listed", "on_screen"],
                        default=None,
                        help="visual onset stage 1: onsets from the in-sync audio, or (two "
                        "diagnostics for synthetic clips) the clips' listed onsets, or the "
                        "audio's onsets where the clip lists an on-screen one")
    parser.add_argument("--stage1-segments", type=int, default=16,
                        help="visual onset stage 1: segments per step (half with an onset)")
    parser.add_argument("--visual-stem", choices=["tubelet", "conv"], default=None,
                        help="the visual encoder's embedding (docs/MODELS.md); conv is meant "
                        "with --stage1-objective visual_onset")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None)
    parser.add_argument("--plots", default=None)
    parser.add_argument("--reuse-data", action="store_true",
                        help="with --work: keep a level's finished shards and cached features "
                        "from an earlier run instead of making them again")
    parser.add_argument("--save-features", default=None,
                        help="folder for each level's cached (train, test) features")
    args = parser.parse_args(argv)
    args.command_line = sorted(key for key in SCALES[args.scale] if getattr(args, key) is not None)
    for key, value in SCALES[args.scale].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        stream=sys.stderr)
    for noisy in ("assynch", "ray", "numba", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.work is None:
        args.work = tempfile.mkdtemp(prefix="assynch-quality-")
    started = time.perf_counter()
    results = []
    for level in args.levels:
        results.append(run_level(level, args, args.device))
        if args.json:  # after each level, so a long run leaves what it finished
            Path(args.json).write_text(json.dumps(json_ready(
                {"settings": vars(args), "results": results, "complete": False}
            ), indent=1))
    wall = time.perf_counter() - started
    table = markdown(results)
    verdicts = targets_check(results)
    print(table)
    print()
    print("\n".join(verdicts))
    print(f"\nwall {wall:.0f} s ({wall / 60:.1f} min) on {platform.processor() or 'cpu'}, "
          f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}, device "
          f"{args.device}; per level: "
          + "; ".join(f"{r['level']} " + ", ".join(f"{k} {v:.0f} s"
                                                   for k, v in r["wall_sec"].items())
                      for r in results))
    if args.plots:
        out = Path(args.plots)
        out.mkdir(parents=True, exist_ok=True)
        for path in plot(results, out):
            print(f"plot: {path}")
    if args.json:
        Path(args.json).write_text(json.dumps(json_ready(
            {"settings": vars(args), "wall_sec": wall, "results": results, "targets": verdicts,
             "table": table, "complete": True}
        ), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
