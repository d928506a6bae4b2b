"""The offset metrics of DESIGN.md, one implementation for training, evaluation and benchmarks.

- ACC@1 (`acc1`): the most probable class is the true class.
- ACC@1±1 (`acc1_pm1`): the most probable class is within one class (0.2 s) of the true class.
- EMD (`emd_sec`): the 1-Wasserstein distance between the predicted offset distribution and the
  true offset, in seconds: sum over classes of |CDF_pred - CDF_true| times the class step.
All three are means over samples. Streaming metrics are reported after 1, 2, 4, ... windows seen
and after the last window.

Inputs are probabilities (softmax of the logits), not logits, so that averaged or calibrated
distributions can be scored too. Arrays may be numpy or torch.

The evaluation report (assynch/eval/summary.py) adds, from the same per-sample values: a
bootstrap interval that resamples whole videos (`bootstrap_interval`), the confusion matrix, the
reliability of the top-class confidence and the histogram of the offset error in seconds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

METRIC_NAMES = ("acc1", "acc1_pm1", "emd_sec")


def _as_probabilities(probs: Any, target: Any) -> tuple[torch.Tensor, torch.Tensor]:
    probs = torch.as_tensor(probs).detach().to("cpu", torch.float64)
    target = torch.as_tensor(target).detach().to("cpu").reshape(-1)
    if probs.dim() != 2:
        raise ValueError(
            f"probabilities must be (samples, classes), got shape {tuple(probs.shape)}"
        )
    if target.shape[0] != probs.shape[0]:
        raise ValueError(
            f"{probs.shape[0]} predictions but {target.shape[0]} targets; pass one class per sample"
        )
    if target.is_floating_point() and not torch.equal(target, target.round()):
        raise ValueError("targets must be class indices (integers), not offsets in seconds")
    target = target.long()
    classes = probs.shape[1]
    if target.numel() and (target.min() < 0 or target.max() >= classes):
        raise ValueError(f"targets must be classes in 0..{classes - 1}")
    if probs.numel() and (
        probs.min() < -1e-6 or not torch.allclose(probs.sum(dim=1), probs.new_ones(1), atol=1e-3)
    ):
        raise ValueError(
            "each row must be a probability distribution (non-negative, summing to 1); these look "
            "like logits: pass logits.softmax(-1)"
        )
    return probs, target


def _per_sample(
    probs: torch.Tensor, target: torch.Tensor, step_sec: float
) -> dict[str, torch.Tensor]:
    predicted = probs.argmax(dim=1)
    classes = torch.arange(probs.shape[1])
    true_cdf = (classes.unsqueeze(0) >= target.unsqueeze(1)).to(probs.dtype)
    return {
        "acc1": (predicted == target).to(probs.dtype),
        "acc1_pm1": ((predicted - target).abs() <= 1).to(probs.dtype),
        "emd_sec": (probs.cumsum(dim=1) - true_cdf).abs().sum(dim=1) * step_sec,
    }


def per_sample_metrics(probs: Any, target: Any, step_sec: float = 0.2) -> dict[str, np.ndarray]:
    """probs (N, C), target classes (N,) -> {'acc1', 'acc1_pm1', 'emd_sec'}: one value per sample
    (float64 numpy), whose means are `offset_metrics`."""
    probs, target = _as_probabilities(probs, target)
    return {
        name: value.numpy() for name, value in _per_sample(probs, target, step_sec).items()
    }


def offset_metrics(probs: Any, target: Any, step_sec: float = 0.2) -> dict[str, float]:
    """probs (N, C), target classes (N,) -> {'acc1', 'acc1_pm1', 'emd_sec'} averaged over N."""
    probs, target = _as_probabilities(probs, target)
    if probs.shape[0] == 0:
        raise ValueError("no predictions to score")
    per_sample = _per_sample(probs, target, step_sec)
    return {name: float(value.mean()) for name, value in per_sample.items()}


def accuracy_at_1(probs: Any, target: Any) -> float:
    return offset_metrics(probs, target)["acc1"]


def accuracy_within_one(probs: Any, target: Any) -> float:
    """ACC@1±1: the predicted class is at most one class away from the true one."""
    return offset_metrics(probs, target)["acc1_pm1"]


def emd_seconds(probs: Any, target: Any, step_sec: float = 0.2) -> float:
    return offset_metrics(probs, target, step_sec)["emd_sec"]


def streaming_window_counts(num_windows: int) -> list[int]:
    """1, 2, 4, ... up to `num_windows`, and `num_windows` itself (the end of the stream)."""
    if num_windows < 1:
        raise ValueError(f"a stream has at least one window, got {num_windows}")
    counts = [1]
    while counts[-1] * 2 <= num_windows:
        counts.append(counts[-1] * 2)
    if counts[-1] != num_windows:
        counts.append(num_windows)
    return counts


def streaming_metrics(
    probs: Any, target: Any, step_sec: float = 0.2
) -> dict[int, dict[str, float]]:
    """probs (N, W, C) after each window, target (N,) -> {windows seen: metrics} for
    `streaming_window_counts(W)`."""
    accumulator = StreamingMetricAccumulator(step_sec)
    accumulator.update(probs, target)
    return accumulator.compute()


class StreamingMetricAccumulator:
    """Sums metrics batch by batch (exact means at the end, no stored predictions).

    `update(probs, target)` takes (N, W, C) per-window probabilities, or (N, C) for a single
    prediction per sample (counted as one window). All batches must have the same W.
    """

    def __init__(self, step_sec: float = 0.2) -> None:
        self.step_sec = step_sec
        self.windows: int | None = None
        self.samples = 0
        self._sums: dict[int, dict[str, float]] = {}

    def update(self, probs: Any, target: Any) -> None:
        probs = torch.as_tensor(probs).detach()
        if probs.dim() == 2:
            probs = probs.unsqueeze(1)
        if probs.dim() != 3:
            raise ValueError(
                f"streaming probabilities must be (samples, windows, classes), got "
                f"{tuple(probs.shape)}"
            )
        windows = probs.shape[1]
        if self.windows is None:
            self.windows = windows
            self._sums = {
                count: dict.fromkeys(METRIC_NAMES, 0.0)
                for count in streaming_window_counts(windows)
            }
        elif windows != self.windows:
            raise ValueError(f"every batch must have {self.windows} windows, got {windows}")
        for count, sums in self._sums.items():
            scored, checked = _as_probabilities(probs[:, count - 1], target)
            for name, values in _per_sample(scored, checked, self.step_sec).items():
                sums[name] += float(values.sum())
        self.samples += probs.shape[0]

    def compute(self) -> dict[int, dict[str, float]]:
        if not self.samples:
            raise ValueError("no predictions to score")
        return {
            count: {name: total / self.samples for name, total in sums.items()}
            for count, sums in self._sums.items()
        }


# ---------------------------------------------------------------------------------------------
# The evaluation report's extras


def bootstrap_interval(
    values: Any,
    groups: Any,
    *,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    mask: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of a mean over samples, resampling whole groups (videos).

    values (N, ...) per-sample numbers; groups (N,) the group (video) of each sample; mask
    (N, ...) bool, which samples count for each entry of `values.shape[1:]` (e.g. one column per
    offset class). Each resample draws as many groups as there are, with replacement, and takes
    the mean over all samples of the drawn groups (a group drawn twice counts twice). Returns
    (low, high) with the shape of `values.shape[1:]`; NaN where no resample has a sample.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.shape[0] == 0:
        raise ValueError("no samples to bootstrap")
    _, group_index = np.unique(np.asarray(groups).reshape(-1), return_inverse=True)
    if group_index.shape[0] != values.shape[0]:
        raise ValueError(f"{values.shape[0]} values but {group_index.shape[0]} group labels")
    weights_mask = (
        np.ones(values.shape, np.float64) if mask is None else np.asarray(mask, np.float64)
    )
    count = int(group_index.max()) + 1
    flat_values = (values * weights_mask).reshape(values.shape[0], -1)
    flat_mask = weights_mask.reshape(values.shape[0], -1)
    sums = np.zeros((count, flat_values.shape[1]))
    counts = np.zeros((count, flat_values.shape[1]))
    np.add.at(sums, group_index, flat_values)
    np.add.at(counts, group_index, flat_mask)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(count, np.full(count, 1.0 / count), size=resamples).astype(np.float64)
    numerators = draws @ sums
    denominators = draws @ counts
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(denominators > 0, numerators / denominators, np.nan)
    tail = (1.0 - confidence) / 2 * 100
    shape = values.shape[1:]
    low = np.full(flat_values.shape[1], np.nan)
    high = np.full(flat_values.shape[1], np.nan)
    seen = ~np.all(np.isnan(means), axis=0)
    if seen.any():
        low[seen] = np.nanpercentile(means[:, seen], tail, axis=0)
        high[seen] = np.nanpercentile(means[:, seen], 100 - tail, axis=0)
    return low.reshape(shape), high.reshape(shape)


def confusion_matrix(probs: Any, target: Any) -> np.ndarray:
    """(C, C) counts: rows are true classes, columns the most probable class."""
    probs, target = _as_probabilities(probs, target)
    classes = probs.shape[1]
    matrix = np.zeros((classes, classes), np.int64)
    np.add.at(matrix, (target.numpy(), probs.argmax(dim=1).numpy()), 1)
    return matrix


def offset_errors_sec(probs: Any, target: Any, step_sec: float = 0.2) -> np.ndarray:
    """Predicted (most probable) minus true offset per sample, in seconds."""
    probs, target = _as_probabilities(probs, target)
    return ((probs.argmax(dim=1) - target).numpy() * step_sec).astype(np.float64)


def error_histogram(
    probs: Any, target: Any, step_sec: float = 0.2
) -> tuple[np.ndarray, np.ndarray]:
    """Counts of each possible error (-(C-1)..(C-1) classes) -> (errors in seconds, counts)."""
    probs, target = _as_probabilities(probs, target)
    classes = probs.shape[1]
    difference = (probs.argmax(dim=1) - target).numpy() + classes - 1
    counts = np.bincount(difference, minlength=2 * classes - 1)
    errors = (np.arange(2 * classes - 1) - (classes - 1)) * step_sec
    return errors, counts


def reliability(probs: Any, target: Any, bins: int = 10) -> dict[str, Any]:
    """Calibration of the top-class confidence in `bins` equal bins over [0, 1].

    Returns {'bins': [{'low', 'high', 'count', 'confidence', 'accuracy'}], 'ece'}: per bin the
    mean confidence and the ACC@1 of the samples whose confidence falls in it (None when empty),
    and the expected calibration error sum_b n_b / N |accuracy_b - confidence_b|.
    """
    probs, target = _as_probabilities(probs, target)
    if bins < 1:
        raise ValueError(f"bins must be positive, got {bins}")
    confidence, predicted = probs.max(dim=1)
    confidence = confidence.numpy()
    correct = (predicted == target).numpy().astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, bins - 1)
    rows: list[dict[str, Any]] = []
    ece = 0.0
    for number in range(bins):
        chosen = index == number
        count = int(chosen.sum())
        mean_confidence = float(confidence[chosen].mean()) if count else None
        accuracy = float(correct[chosen].mean()) if count else None
        if count:
            ece += count / len(confidence) * abs(accuracy - mean_confidence)  # type: ignore[operator]
        rows.append({
            "low": round(float(edges[number]), 6), "high": round(float(edges[number + 1]), 6),
            "count": count,
            "confidence": mean_confidence, "accuracy": accuracy,
        })
    return {"bins": rows, "ece": float(ece) if len(confidence) else None}
