"""ACC@1, ACC@1±1 and EMD in seconds (DESIGN.md's Metrics), and their streaming report."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from assynch.eval.metrics import (
    StreamingMetricAccumulator,
    accuracy_at_1,
    accuracy_within_one,
    emd_seconds,
    offset_metrics,
    streaming_metrics,
    streaming_window_counts,
)

CLASSES = 21
STEP = 0.2


def one_hot(predicted: list[int]) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(predicted), CLASSES).double()


def test_accuracies_count_exact_and_neighbouring_classes() -> None:
    target = [10, 10, 10, 10, 0]
    probs = one_hot([10, 11, 9, 12, 1])
    assert accuracy_at_1(probs, target) == pytest.approx(1 / 5)
    assert accuracy_within_one(probs, target) == pytest.approx(4 / 5)


def test_emd_of_a_one_hot_prediction_is_its_distance_in_seconds() -> None:
    for distance in range(11):
        assert emd_seconds(one_hot([10 + distance]), [10]) == pytest.approx(distance * STEP)
        assert emd_seconds(one_hot([10 - distance]), [10]) == pytest.approx(distance * STEP)


def test_emd_equals_the_expected_absolute_offset_error() -> None:
    # W1 between a distribution and a point mass is E|X - t|: an independent formula.
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(CLASSES), size=8)
    target = rng.integers(0, CLASSES, size=8)
    offsets = (np.arange(CLASSES) - 10) * STEP
    expected = np.mean([
        np.sum(row * np.abs(offsets - offsets[t])) for row, t in zip(probs, target, strict=True)
    ])
    assert emd_seconds(probs, target) == pytest.approx(expected)


def test_metrics_accept_numpy_and_report_all_three() -> None:
    metrics = offset_metrics(np.eye(CLASSES)[[3, 4]], np.array([3, 5]))
    assert metrics == pytest.approx({"acc1": 0.5, "acc1_pm1": 1.0, "emd_sec": 0.1})


def test_logits_and_bad_targets_are_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="softmax"):
        offset_metrics(torch.randn(2, CLASSES) * 3, [1, 2])
    with pytest.raises(ValueError, match="0..20"):
        offset_metrics(one_hot([1]), [21])
    with pytest.raises(ValueError, match="class indices"):
        offset_metrics(one_hot([1]), [0.4])
    with pytest.raises(ValueError, match="2 predictions but 1 targets"):
        offset_metrics(one_hot([1, 2]), [1])


def test_streaming_window_counts_double_and_end_at_the_stream_length() -> None:
    assert streaming_window_counts(1) == [1]
    assert streaming_window_counts(6) == [1, 2, 4, 6]
    assert streaming_window_counts(8) == [1, 2, 4, 8]


def test_streaming_metrics_score_the_prediction_after_each_window_count() -> None:
    # Sample 0 becomes right after 2 windows, sample 1 after 4.
    predicted = [[0, 5, 5, 5, 5], [0, 0, 0, 7, 7]]
    probs = torch.stack([one_hot(row) for row in predicted])
    report = streaming_metrics(probs, [5, 7])
    assert list(report) == [1, 2, 4, 5]
    assert [report[count]["acc1"] for count in report] == [0.0, 0.5, 1.0, 1.0]
    assert report[1]["emd_sec"] == pytest.approx((5 + 7) * STEP / 2)


def test_accumulated_batches_equal_one_pass() -> None:
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(CLASSES), size=(10, 4))
    target = rng.integers(0, CLASSES, size=10)
    accumulator = StreamingMetricAccumulator()
    accumulator.update(probs[:3], target[:3])
    accumulator.update(probs[3:], target[3:])
    together = streaming_metrics(probs, target)
    for count, metrics in accumulator.compute().items():
        assert metrics == pytest.approx(together[count])
    with pytest.raises(ValueError, match="4 windows"):
        accumulator.update(probs[:, :2], target)
