"""The per-worker training loop (plain torch): setup, train epoch, eval epoch, checkpoint.

Ray Train runs `train_worker` on every worker (pipelines/train.py); the local runner
(assynch/train/local.py) runs it in-process. Everything Ray-specific comes in through
`WorkerEnv`. With several ranks (torch.distributed initialised by the runner) the model is
wrapped in DDP here.

Uneven shares: Ray Data's streaming split gives every sample to exactly one rank, so ranks may
get different numbers of batches. Each step all-reduces the ranks' batch sizes; a rank that ran
out joins with a zero-weight copy of a batch, and every rank scales its loss by
(its samples x world size / all samples), so DDP's gradient average is the mean over the real
samples of the step and all ranks take the same optimizer steps (identical weights and optimizer
states, which a checkpoint from rank 0 relies on).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import math
import platform
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from assynch.config import AssynchConfig
from assynch.eval.metrics import METRIC_NAMES, StreamingMetricAccumulator, streaming_window_counts
from assynch.models import StreamingModel, build_model
from assynch.models.visual_onset import AUC_BINS, auc_from_counts, onset_score_counts
from assynch.shards.format import shard_layout
from assynch.train.checkpoint import (
    MODEL_FILE,
    TrainProgress,
    load_training_checkpoint,
    save_training_checkpoint,
    set_rng_state,
)
from assynch.train.env import WorkerEnv
from assynch.train.inputs import (
    StreamBatch,
    draw_contrastive_classes,
    draw_offset_classes,
    to_model_inputs,
)
from assynch.train.objective import (
    TrainingObjective,
    contrastive_cuts,
    count_trainable,
    loss_terms,
    needs_find_unused_parameters,
)
from assynch.train.optim import build_optimizer, build_scheduler
from assynch.train.tracking import Tracker, open_tracker

log = logging.getLogger("assynch.train")

HIGHER_IS_BETTER = {"acc1": True, "acc1_pm1": True, "emd_sec": False, "loss": False,
                    "onset_auc": True}


# ---------------------------------------------------------------------------------------------
# Setup


def steps_per_epoch(config: AssynchConfig, train_samples: int, world_size: int) -> int:
    """Optimizer steps in one epoch (the longest rank's share, rounded up)."""
    train = config.train
    micro = math.ceil(train_samples / max(1, world_size) / train.batch_size)
    if train.max_steps_per_epoch is not None:
        micro = min(micro, train.max_steps_per_epoch * train.grad_accum_steps)
    return max(1, math.ceil(micro / train.grad_accum_steps))


def build_training_model(config: AssynchConfig) -> StreamingModel:
    """The model of `model.kind` with its pretrained weights, `model.init_from` and regime."""
    torch.manual_seed(config.train.seed)  # same initial weights on every rank
    model = build_model(config)
    if config.model.init_from:
        from assynch.train.init import load_init_weights

        load_init_weights(model, config.model.init_from, config)
    # The visual onset probe only serves its stage 1: frozen otherwise (build_model's default).
    model.snapshot.visual_onset_head.requires_grad_(config.train.objective == "visual_onset")
    return model


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    if not (dist.is_available() and dist.is_initialized()):
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def parameter_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def dummy_batch(config: AssynchConfig) -> StreamBatch:
    """A zero sample with the shard layout's shapes, for a rank that has no data at all."""
    layout = shard_layout(config)
    return StreamBatch(
        sample_id=["<none>"], frames=torch.zeros((1, *layout.frames_shape), dtype=torch.uint8),
        mel=torch.zeros((1, *layout.mel_shape)), offset_sec=torch.zeros(1, dtype=torch.float64),
        offset_class=torch.full((1,), config.time.num_offset_classes // 2),
        audio_margin_sec=torch.full((1,), config.preprocess.audio_margin_sec,
                                    dtype=torch.float64),
    )


# ---------------------------------------------------------------------------------------------
# One training epoch


def train_epoch(
    ddp: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    config: AssynchConfig,
    env: WorkerEnv,
    progress: TrainProgress,
    tracker: Tracker | None,
    total_steps: int,
) -> tuple[dict[str, float], list[str]]:
    """Train one epoch; returns its metrics (means over all ranks) and this rank's sample ids."""
    train, device = config.train, env.device
    epoch = progress.epoch
    ddp.train()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                              enabled=train.precision == "bf16")
    max_micro = (train.max_steps_per_epoch * train.grad_accum_steps
                 if train.max_steps_per_epoch else None)
    cuts = contrastive_cuts(config)
    batches: Iterator[Any] = iter(env.train_batches(epoch))
    previous: StreamBatch | None = None
    seen: list[str] = []
    sums: dict[str, float] = {}
    samples_total = 0.0
    micro = 0
    epoch_started = time.perf_counter()
    wait = 0.0
    interval = {"started": time.perf_counter(), "samples": 0.0, "wait": 0.0,
                "step": float(progress.step)}
    planned = steps_per_epoch(config, env.train_samples, env.world_size)
    optimizer.zero_grad(set_to_none=True)
    while max_micro is None or micro < max_micro:
        waited = time.perf_counter()
        columns = next(batches, None)
        wait_now = time.perf_counter() - waited
        wait += wait_now
        interval["wait"] += wait_now
        batch = StreamBatch.from_columns(columns) if columns is not None else None
        local = float(len(batch)) if batch is not None else 0.0
        (global_samples,) = all_reduce_sum([local], device)
        if global_samples == 0:
            break
        if batch is None:
            batch = previous if previous is not None else dummy_batch(config)
        previous = batch
        if local:
            seen.extend(batch.sample_id)
        labels = (draw_offset_classes(batch, config, epoch=epoch, seed=train.seed)
                  if train.resample_offsets and train.objective == "offsets" else None)
        recuts = (draw_contrastive_classes(batch, batch.offset_class if labels is None else labels,
                                           cuts, config, epoch=epoch, seed=train.seed)
                  if cuts else None)
        inputs = to_model_inputs(batch, config, device=device, offset_class=labels,
                                 contrastive_classes=recuts)
        weight = local * env.world_size / global_samples
        micro += 1
        is_step = micro % train.grad_accum_steps == 0
        sync = contextlib.nullcontext() if is_step or not hasattr(ddp, "no_sync") else ddp.no_sync()
        with sync:
            with autocast:
                losses = ddp(inputs.video, inputs.audio, inputs.offset_class,
                             inputs.contrastive_audio, inputs.contrastive_hypotheses,
                             inputs.source_ids)
            (losses["total"] * weight / train.grad_accum_steps).backward()
        for name, value in loss_terms(losses).items():
            sums[name] = sums.get(name, 0.0) + float(value.detach()) * local
        if inputs.contrastive_audio is not None:  # candidates per stream the model was given
            sums["contrastive_cuts"] = (sums.get("contrastive_cuts", 0.0)
                                        + inputs.contrastive_audio.shape[2] * local)
        samples_total += global_samples
        interval["samples"] += global_samples
        if not is_step:
            continue
        if train.grad_clip_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_(ddp.parameters(), train.grad_clip_norm)
            sums["grad_norm"] = sums.get("grad_norm", 0.0) + float(norm) * local
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        progress.step += 1
        if progress.step % train.log_every_steps == 0 and env.rank == 0:
            _log_progress(progress, losses, optimizer, interval,
                          (micro // train.grad_accum_steps, planned), total_steps, tracker)
    if micro % train.grad_accum_steps:  # a last, partial accumulation (run under no_sync)
        _average_gradients(ddp, env.world_size)
        if train.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(ddp.parameters(), train.grad_clip_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        progress.step += 1
    names = sorted(sums)
    totals = all_reduce_sum([sums[n] for n in names] + [wait], device)
    elapsed = time.perf_counter() - epoch_started
    metrics = {f"train/{n}": totals[i] / max(samples_total, 1.0) for i, n in enumerate(names)}
    metrics["train/samples"] = samples_total
    metrics["train/samples_per_sec"] = samples_total / elapsed
    metrics["train/data_wait_share"] = totals[-1] / env.world_size / elapsed
    metrics["train/epoch_sec"] = elapsed
    progress.samples += int(samples_total)
    return metrics, seen


def _average_gradients(module: torch.nn.Module, world_size: int) -> None:
    """What DDP's backward would have done: average the gradients over the ranks."""
    if world_size < 2 or not (dist.is_available() and dist.is_initialized()):
        return
    for parameter in module.parameters():
        if parameter.requires_grad:
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
            dist.all_reduce(parameter.grad)
            parameter.grad /= world_size


def _log_progress(
    progress: TrainProgress, losses: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
    interval: dict[str, float], epoch_steps: tuple[int, int], total_steps: int,
    tracker: Tracker | None,
) -> None:
    """rank 0, every train.log_every_steps: one progress line, and the step metrics to MLflow."""
    now = time.perf_counter()
    elapsed = max(now - interval["started"], 1e-9)
    step_sec = elapsed / max(1.0, progress.step - interval["step"])
    metrics = {f"step/{n}": float(v.detach()) for n, v in loss_terms(losses).items()}
    metrics["step/samples_per_sec"] = interval["samples"] / elapsed
    metrics["step/data_wait_share"] = interval["wait"] / elapsed
    for group in optimizer.param_groups:
        metrics[f"lr/{group['name']}"] = group["lr"]
    eta = int(max(0, total_steps - progress.step) * step_sec)
    log.info(
        "epoch %d step %d (%d/%d) loss %.4f | %.2f samples/s | data wait %.0f%% | ETA %dm%02ds",
        progress.epoch + 1, progress.step, *epoch_steps, metrics["step/total"],
        metrics["step/samples_per_sec"], 100 * metrics["step/data_wait_share"], eta // 60,
        eta % 60,
    )
    if tracker is not None:
        tracker.log_metrics(metrics, step=progress.step)
    interval.update(started=now, samples=0.0, wait=0.0, step=float(progress.step))


# ---------------------------------------------------------------------------------------------
# One evaluation epoch


@torch.no_grad()
def evaluate(
    model: StreamingModel, config: AssynchConfig, env: WorkerEnv, epoch: int
) -> tuple[dict[str, float], np.ndarray]:
    """Validation metrics over all ranks (stored offsets, never re-drawn) and the confusion
    matrix (true x predicted class after the last window)."""
    assert env.val_batches is not None
    classes = config.time.num_offset_classes
    windows = config.time.windows_per_sample
    counts = streaming_window_counts(windows)
    objective = TrainingObjective(model, config)
    model.eval()
    accumulator = StreamingMetricAccumulator(config.time.offset_step_sec)
    confusion = torch.zeros((classes, classes), dtype=torch.float64)
    loss_sums: dict[str, float] = {}
    # visual onset pre-training: its probe's logit counts per bin, for the held-out AUC
    onset_counts = torch.zeros((2, AUC_BINS), dtype=torch.float64)
    samples = 0
    autocast = torch.autocast(env.device.type, dtype=torch.bfloat16,
                              enabled=config.train.precision == "bf16")
    for columns in env.val_batches(epoch):
        batch = StreamBatch.from_columns(columns)
        inputs = to_model_inputs(batch, config, device=env.device)
        with autocast:
            losses = objective(inputs.video, inputs.audio, inputs.offset_class,
                               source_ids=inputs.source_ids)
        for name, value in loss_terms(losses).items():
            loss_sums[name] = loss_sums.get(name, 0.0) + float(value) * len(batch)
        if "onset_logits" in losses:
            onset_counts += onset_score_counts(losses["onset_logits"],
                                               losses["onset_targets"]).cpu()
        samples += len(batch)
        logits = losses.get("logits")
        if logits is None:
            continue
        probs = logits.float().softmax(-1).cpu()
        accumulator.update(probs, batch.offset_class)
        predicted = probs[:, -1].argmax(-1)
        confusion.index_put_((batch.offset_class, predicted), torch.ones(len(batch),
                             dtype=torch.float64), accumulate=True)
    model.train()
    names = sorted(loss_sums) if samples else _loss_names(config)
    scored = accumulator.samples
    metric_sums = []
    if scored:
        computed = accumulator.compute()
        metric_sums = [computed[c][m] * scored for c in counts for m in METRIC_NAMES]
    else:
        metric_sums = [0.0] * (len(counts) * len(METRIC_NAMES))
    local = [float(samples), float(scored)] + [loss_sums.get(n, 0.0) for n in names] + metric_sums
    onset = config.train.objective == "visual_onset"  # every rank adds the same-sized counts
    if onset:
        local += onset_counts.flatten().tolist()
    totals = all_reduce_sum(local, env.device)
    if onset:
        counts_total = torch.tensor(totals[-2 * AUC_BINS:], dtype=torch.float64)
        totals = totals[: -2 * AUC_BINS]
    if dist.is_available() and dist.is_initialized():
        confusion = confusion.to(env.device)
        dist.all_reduce(confusion)
    total_samples, total_scored = totals[0], totals[1]
    metrics: dict[str, float] = {"val/samples": total_samples}
    for index, name in enumerate(names):
        metrics[f"val/{name}"] = totals[2 + index] / max(total_samples, 1.0)
    metrics["val/loss"] = metrics.get("val/total", float("nan"))
    if onset:  # did stage 1 start: its probe's ranking of the held-out onset steps
        metrics["val/onset_auc"] = auc_from_counts(counts_total.view(2, AUC_BINS))
    offset = 2 + len(names)
    if config.train.objective != "offsets":  # stage 1 has no offset predictions to score
        counts = []
    for c_index, count in enumerate(counts):
        for m_index, metric in enumerate(METRIC_NAMES):
            value = totals[offset + c_index * len(METRIC_NAMES) + m_index] / max(total_scored, 1)
            suffix = "" if count == windows else f"_w{count}"  # MLflow names: no "@"
            metrics[f"val/{metric}{suffix}"] = value
    return metrics, confusion.cpu().numpy().astype(np.int64)


def _loss_names(config: AssynchConfig) -> list[str]:
    """The loss terms a rank without validation samples reports (as zeros): exactly the keys
    `compute_losses` returns, sorted, or the ranks' all-reduces would differ in size."""
    if config.train.objective != "offsets":  # a stage-1 objective: its own term only
        return sorted([config.train.objective, "total"])
    names = ["contrastive", "cross_entropy", "emd", "total"]
    if config.model.kind == "as_synchformer":  # its streaming tokens add the diversity term
        names.append("diversity")
        if config.model.losses.snapshot > 0:  # and its snapshot logits their own term
            names.append("snapshot")
    return sorted(names)


# ---------------------------------------------------------------------------------------------
# The run


def train_worker(config: AssynchConfig, env: WorkerEnv) -> TrainProgress:
    """Train `config` on this worker; every rank returns the same progress record."""
    train = config.train
    distributed = dist.is_available() and dist.is_initialized() and env.world_size > 1
    model = build_training_model(config).to(env.device)
    objective = TrainingObjective(model, config)
    ddp: torch.nn.Module = objective
    if distributed:
        ddp = DistributedDataParallel(
            objective, device_ids=[env.device.index] if env.device.type == "cuda" else None,
            find_unused_parameters=needs_find_unused_parameters(config),
        )
    optimizer = build_optimizer(model, train)
    per_epoch = steps_per_epoch(config, env.train_samples, env.world_size)
    total_steps = per_epoch * train.epochs
    scheduler = build_scheduler(optimizer, total_steps=total_steps, train=train)
    progress = TrainProgress()
    best_state: dict[str, torch.Tensor] | None = None  # None: the current weights are the best
    best_confusion: np.ndarray | None = None
    previous_state: dict[str, torch.Tensor] | None = None  # weights after the last epoch
    with env.latest_checkpoint() as folder:
        if folder is not None:
            restored = load_training_checkpoint(folder)
            model.load_state_dict(restored.model_state)
            optimizer.load_state_dict(restored.optimizer)
            scheduler.load_state_dict(restored.scheduler)
            set_rng_state(restored.rng)
            progress = restored.progress
            progress.restarts += 1
            best_state = restored.best_model_state
            previous_state = {k: v.clone() for k, v in restored.model_state.items()}
            log.info("rank %d continues from %s: %d epochs, %d steps done", env.rank, folder,
                     progress.epoch, progress.step)
    if env.rank == 0:
        log.info("%s (%s): %.2f M trainable parameters, %d workers, %d steps per epoch, %d "
                 "epochs, %d contrastive audio cuts per stream", config.model.kind,
                 train.objective, count_trainable(model) / 1e6, env.world_size, per_epoch,
                 train.epochs, contrastive_cuts(config))
    tags = {"assynch.world_size": str(env.world_size), "assynch.device": str(env.device),
            "assynch.host": platform.node(), "assynch.objective": train.objective}
    with open_tracker(config, rank=env.rank, run_id=progress.tracking_run_id, tags=tags) as tracker:
        if tracker is not None:
            progress.tracking_run_id = tracker.run_id
            if progress.restarts == 0:
                _log_datasets(tracker, config)
        while progress.epoch < train.epochs and not progress.stopped_early:
            train_metrics, seen = train_epoch(ddp, optimizer, scheduler, config, env, progress,
                                              tracker, total_steps)
            metrics = {"epoch": float(progress.epoch + 1), "step": float(progress.step),
                       **train_metrics}
            confusion = None
            if env.val_batches is not None:
                val_metrics, confusion = evaluate(model, config, env, progress.epoch)
                metrics.update(val_metrics)
            score = _score(metrics, train.select_metric)
            metrics["score"] = score
            improved = progress.best_score is None or score > progress.best_score
            if improved:
                progress.best_epoch, progress.best_score = progress.epoch + 1, score
                progress.epochs_without_improvement = 0
                best_state, best_confusion = None, confusion
            else:
                progress.epochs_without_improvement += 1
                if best_state is None:  # the previous epoch's weights were the best
                    best_state = previous_state
            progress.epoch += 1
            progress.history.append(metrics)
            patience = train.early_stopping_patience
            if patience is not None and progress.epochs_without_improvement >= patience:
                progress.stopped_early = True
                if env.rank == 0:
                    log.info("early stop: %s did not improve for %d epochs", train.select_metric,
                             patience)
            previous_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            if env.sample_log is not None:
                env.sample_log({"epoch": progress.epoch, "rank": env.rank, "sample_ids": seen,
                                "param_digest": parameter_digest(model)})
            if env.rank == 0:
                _log_epoch(metrics, train.select_metric)
                if tracker is not None:
                    tracker.log_epoch_metrics(metrics, epoch=progress.epoch)
            with _checkpoint_folder(env.rank) as checkpoint:
                if checkpoint is not None:
                    save_training_checkpoint(
                        checkpoint, model=model, config=config, optimizer=optimizer,
                        scheduler=scheduler, progress=progress, best_model_state=best_state,
                    )
                env.report(metrics, checkpoint)
        if env.rank == 0:
            _finish(model, best_state, best_confusion, config, progress, tracker)
    return progress


def _score(metrics: dict[str, float], select: str) -> float:
    """Higher is better: `val/<select>`; without it (no validation, or stage 1 without offset
    logits) minus the validation loss, else minus the train loss."""
    key = f"val/{select}"
    if key in metrics:
        return metrics[key] if HIGHER_IS_BETTER[select] else -metrics[key]
    if "val/total" in metrics:
        return -metrics["val/total"]
    return -metrics.get("train/total", float("inf"))


@contextlib.contextmanager
def _checkpoint_folder(rank: int) -> Iterator[str | None]:
    if rank != 0:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="assynch-checkpoint-") as folder:
        yield folder


def _log_datasets(tracker: Tracker, config: AssynchConfig) -> None:
    """The shard sets as the run's dataset inputs (train and val), and the resolved config."""
    import yaml

    from assynch.shards.reader import read_manifest
    from assynch.shards.sets import shard_entries

    with tempfile.TemporaryDirectory(prefix="assynch-config-") as folder:
        path = Path(folder) / "config.yaml"  # without the storage section (credentials)
        path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude={"storage"}),
                                       sort_keys=False))
        tracker.log_artifact(str(path), "config")

    splits = [config.train.train_split] + ([config.train.val_split] if config.train.val_split
                                           else [])
    urls = shard_entries(config.train.shards)  # resolved by the driver: no ROOT/* left
    for url in urls:
        manifest = read_manifest(url, config.storage)
        for split in splits:  # with several sets, only those holding samples of the split
            if len(urls) == 1 or manifest.get("splits", {}).get(split, {}).get("samples"):
                tracker.log_shard_dataset(url, split, manifest)


def _log_epoch(metrics: dict[str, float], select: str) -> None:
    shown = ["train/total", "val/loss", "val/acc1", "val/acc1_pm1", "val/emd_sec"]
    parts = [f"{k.split('/')[-1] if k != 'val/loss' else 'val_loss'} {metrics[k]:.4f}"
             for k in shown if k in metrics]
    log.info("epoch %d done (step %d): %s | %.2f samples/s, data wait %.0f%%",
             int(metrics["epoch"]), int(metrics["step"]), ", ".join(parts),
             metrics["train/samples_per_sec"], 100 * metrics["train/data_wait_share"])


def _finish(
    model: StreamingModel, best_state: dict[str, torch.Tensor] | None,
    best_confusion: np.ndarray | None, config: AssynchConfig, progress: TrainProgress,
    tracker: Tracker | None,
) -> None:
    """rank 0: log curves, the best epoch's confusion matrix and register the best model."""
    best_row = progress.history[(progress.best_epoch or 1) - 1] if progress.history else {}
    log.info("\n%s", summary_table(progress, best_row))
    if tracker is None:
        return
    best = model
    if best_state is not None:
        best = copy.deepcopy(model).cpu()
        best.load_state_dict(best_state)
    with tempfile.TemporaryDirectory(prefix="assynch-best-") as folder:
        from assynch.models import save_model_checkpoint

        path = save_model_checkpoint(best, config, Path(folder) / MODEL_FILE)
        classes = config.time.num_offset_classes
        confusion = (best_confusion if best_confusion is not None
                     else np.zeros((classes, classes), np.int64))
        tracker.log_curves_and_confusion(progress.history, confusion, progress.best_epoch or 1)
        registered = tracker.log_and_register_model(
            str(path), config, {k: float(v) for k, v in best_row.items()}
        )
        log.info("registered %s", registered)


def summary_table(progress: TrainProgress, best_row: dict[str, float]) -> str:
    rows = [("epochs", str(progress.epoch)), ("optimizer steps", str(progress.step)),
            ("samples seen", str(progress.samples)), ("best epoch", str(progress.best_epoch)),
            ("restarts from a checkpoint", str(progress.restarts)),
            ("stopped early", str(progress.stopped_early))]
    rows += [(k, f"{v:.4f}") for k, v in best_row.items()
             if k.startswith("val/") and "_w" not in k]
    if progress.tracking_run_id:
        rows.append(("MLflow run", progress.tracking_run_id))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)

