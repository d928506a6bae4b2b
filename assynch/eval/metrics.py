"""The offset metrics of DESIGN.md, one implementation for training, evaluation and benchmarks.

- ACC@1 (`acc1`): the most probable class is the true class.
- ACC@1±1 (`acc1_pm1`): the most probable class is within one class (0.2 s) of the true class.
- EMD (`emd_sec`): the 1-Wasserstein distance between the predicted offset distribution and the
  true offset, in seconds: sum over classes of |CDF_pred - CDF_true| times the class step.
All three are means over samples. Streaming metrics are reported after 1, 2, 4, ... windows seen
and after the last window.

Inputs are probabilities (softmax of the logits), not logits, so that averaged or calibrated
distributions can be scored too. Arrays may be numpy or torch.
"""

from __future__ import annotations

from typing import Any

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
