"""Predictions -> the numbers of an evaluation report, per mode.

What a mode scores (its "overall" predictions):
- streaming: the prediction after the last window of each stream sample (the end of the stream);
- snapshot: every window alone, each window one prediction.
Both modes also give curves over the number of windows seen (`streaming_window_counts`): in
streaming mode the prediction after window k, in snapshot mode the prediction of window k alone
(a flat line up to noise, the baseline the streaming curve should rise above).

Every number comes with a bootstrap interval that resamples whole videos (samples of one video
are not independent); a per-video number resamples that video's own predictions instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from assynch.eval.metrics import (
    METRIC_NAMES,
    bootstrap_interval,
    confusion_matrix,
    error_histogram,
    per_sample_metrics,
    reliability,
    streaming_window_counts,
)
from assynch.eval.predict import Prediction

SCORED = {
    "streaming": "the prediction after the last window of each stream sample",
    "snapshot": "every window alone (one prediction per window)",
}


@dataclass(frozen=True)
class SummarySettings:
    step_sec: float = 0.2
    resamples: int = 1000
    seed: int = 0
    confidence: float = 0.95
    reliability_bins: int = 10


def _stat(value: float, low: float, high: float) -> dict[str, Any]:
    def clean(x: float) -> float | None:
        return None if np.isnan(x) else round(float(x), 6)

    return {"value": clean(value), "ci_low": clean(low), "ci_high": clean(high)}


def _metric_block(
    values: dict[str, np.ndarray], groups: np.ndarray, settings: SummarySettings,
    mask: np.ndarray | None = None,
) -> dict[str, dict[str, Any]]:
    """{metric: stat} for the samples selected by the boolean `mask` (all when None)."""
    chosen = np.ones(len(groups), bool) if mask is None else mask
    block = {}
    for name in METRIC_NAMES:
        low, high = bootstrap_interval(
            values[name], groups, resamples=settings.resamples, seed=settings.seed,
            confidence=settings.confidence, mask=chosen,
        )
        block[name] = _stat(float(values[name][chosen].mean()), float(low), float(high))
    return block


def _scored(
    predictions: Sequence[Prediction], mode: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probs (M, C), target (M,), video index (M,)) of a mode's overall predictions."""
    probs = np.stack([p.probs[mode] for p in predictions])  # (N, W, C)
    target = np.array([p.offset_class for p in predictions], np.int64)
    _, videos = np.unique([p.video_uid for p in predictions], return_inverse=True)
    if mode == "streaming":
        return probs[:, -1], target, videos
    windows = probs.shape[1]
    return (
        probs.reshape(-1, probs.shape[-1]), np.repeat(target, windows), np.repeat(videos, windows)
    )


def summarise_mode(
    predictions: Sequence[Prediction], mode: str, settings: SummarySettings
) -> dict[str, Any]:
    """Overall, per class, per video, curve, confusion, reliability and error histogram."""
    if not predictions:
        raise ValueError("no predictions to summarise")
    probs, target, videos = _scored(predictions, mode)
    uids = sorted({p.video_uid for p in predictions})
    values = per_sample_metrics(probs, target, settings.step_sec)
    classes = probs.shape[1]
    centre = classes // 2

    overall = _metric_block(values, videos, settings)
    overall_counts = {"predictions": int(len(target)), "videos": len(uids)}

    per_class = []
    for label in range(classes):
        chosen = target == label
        if not chosen.any():
            continue
        per_class.append({
            "class": label, "offset_sec": round((label - centre) * settings.step_sec, 6),
            "predictions": int(chosen.sum()), **_metric_block(values, videos, settings, chosen),
        })

    per_video = []
    for number, uid in enumerate(uids):
        chosen = videos == number
        own = {name: value[chosen] for name, value in values.items()}
        per_video.append({
            "video_uid": uid, "predictions": int(chosen.sum()),
            # the interval of one video resamples its own predictions
            **_metric_block(own, np.arange(int(chosen.sum())), settings),
        })

    all_probs = np.stack([p.probs[mode] for p in predictions])
    all_target = np.array([p.offset_class for p in predictions], np.int64)
    _, sample_videos = np.unique([p.video_uid for p in predictions], return_inverse=True)
    curve = []
    for count in streaming_window_counts(all_probs.shape[1]):
        window_values = per_sample_metrics(all_probs[:, count - 1], all_target, settings.step_sec)
        curve.append({
            "windows_seen": count, **_metric_block(window_values, sample_videos, settings)
        })

    errors_sec, counts = error_histogram(probs, target, settings.step_sec)
    return {
        "scored": SCORED[mode],
        "overall": {**overall, **overall_counts},
        "per_class": per_class,
        "per_video": per_video,
        "curve": curve,
        "confusion": confusion_matrix(probs, target).tolist(),
        "reliability": reliability(probs, target, settings.reliability_bins),
        "error_histogram": {
            "errors_sec": [round(float(e), 6) for e in errors_sec],
            "counts": [int(c) for c in counts],
        },
    }


def summarise(
    predictions: Sequence[Prediction], modes: Sequence[str], settings: SummarySettings
) -> dict[str, dict[str, Any]]:
    return {mode: summarise_mode(predictions, mode, settings) for mode in modes}


def headline(modes: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Flat `{mode}/{metric}` values of the overall numbers (what MLflow and tables show)."""
    flat = {}
    for mode, summary in modes.items():
        for name in METRIC_NAMES:
            stat = summary["overall"][name]
            flat[f"{mode}/{name}"] = stat["value"]
            flat[f"{mode}/{name}_ci_low"] = stat["ci_low"]
            flat[f"{mode}/{name}_ci_high"] = stat["ci_high"]
    return flat
