"""ACC@1, ACC@1±1 and EMD in seconds (DESIGN.md's Metrics), and their streaming report."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from assynch.eval.metrics import (
    StreamingMetricAccumulator,
    accuracy_at_1,
    accuracy_within_one,
    bootstrap_interval,
    confusion_matrix,
    emd_seconds,
    error_histogram,
    offset_errors_sec,
    offset_metrics,
    per_sample_metrics,
    reliability,
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


# --- a second, independent implementation (plain Python loops over the definition) ------------


def reference_metrics(probs: np.ndarray, target: np.ndarray, step: float) -> dict[str, list[float]]:
    """ACC@1, ACC@1±1 and EMD (seconds) per sample, straight from DESIGN.md's definitions."""
    out: dict[str, list[float]] = {"acc1": [], "acc1_pm1": [], "emd_sec": []}
    for row, true in zip(probs.tolist(), target.tolist(), strict=True):
        best = max(range(len(row)), key=lambda k: (row[k], -k))
        out["acc1"].append(1.0 if best == true else 0.0)
        out["acc1_pm1"].append(1.0 if abs(best - true) <= 1 else 0.0)
        predicted_cdf, distance = 0.0, 0.0
        for k, p in enumerate(row):
            predicted_cdf += p
            true_cdf = 1.0 if k >= true else 0.0
            distance += abs(predicted_cdf - true_cdf) * step
        out["emd_sec"].append(distance)
    return out


@pytest.mark.parametrize("step", [0.2, 0.1])
def test_metrics_equal_an_independent_implementation(step: float) -> None:
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.full(CLASSES, 0.3), size=200)
    target = rng.integers(0, CLASSES, size=200)
    probs[:20] = np.eye(CLASSES)[np.clip(target[:20] + rng.integers(-1, 2, 20), 0, 20)]
    reference = reference_metrics(probs, target, step)
    mine = per_sample_metrics(probs, target, step)
    means = offset_metrics(probs, target, step)
    for name in ("acc1", "acc1_pm1", "emd_sec"):
        np.testing.assert_allclose(mine[name], reference[name], atol=1e-12)
        assert means[name] == pytest.approx(np.mean(reference[name]))


def test_hand_computed_distributions() -> None:
    probs = np.zeros((3, CLASSES))
    probs[0, [10, 12]] = [0.6, 0.4]  # true 10: EMD = 0.4 x 2 steps = 0.16 s
    probs[1, [8, 9, 14]] = [0.25, 0.5, 0.25]  # true 10: 0.25 x 0.4 + 0.5 x 0.2 + 0.25 x 0.8
    probs[2, 20] = 1.0  # true 0: the whole grid away, 4.0 s
    target = np.array([10, 10, 0])
    values = per_sample_metrics(probs, target)
    np.testing.assert_allclose(values["emd_sec"], [0.16, 0.4, 4.0], atol=1e-12)
    np.testing.assert_array_equal(values["acc1"], [1, 0, 0])
    np.testing.assert_array_equal(values["acc1_pm1"], [1, 1, 0])
    matrix = confusion_matrix(probs, target)
    assert matrix[10, 10] == 1 and matrix[10, 9] == 1 and matrix[0, 20] == 1
    assert matrix.sum() == 3
    errors, counts = error_histogram(probs, target)
    assert len(errors) == 41 and errors[0] == pytest.approx(-4.0)
    assert dict(zip(np.round(errors, 6)[counts > 0].tolist(), counts[counts > 0].tolist(),
                    strict=True)) == {-0.2: 1, 0.0: 1, 4.0: 1}
    np.testing.assert_allclose(offset_errors_sec(probs, target), [0.0, -0.2, 4.0])


def test_reliability_bins_and_ece_by_hand() -> None:
    probs = np.zeros((4, CLASSES))
    probs[0, 3], probs[0, 4] = 0.95, 0.05  # bin 9, right
    probs[1, 3], probs[1, 4] = 0.92, 0.08  # bin 9, wrong
    probs[2, 3], probs[2, 4] = 0.35, 0.65  # bin 6, right
    probs[3] = 1 / CLASSES  # bin 0 (confidence 0.048), ties -> class 0, right
    target = np.array([3, 4, 4, 0])
    table = reliability(probs, target, bins=10)
    filled = {index: b for index, b in enumerate(table["bins"]) if b["count"]}
    assert sorted(filled) == [0, 6, 9]
    assert filled[9]["count"] == 2 and filled[9]["accuracy"] == 0.5
    assert filled[9]["confidence"] == pytest.approx(0.935)
    expected = (2 * abs(0.5 - 0.935) + abs(1 - 0.65) + abs(1 - 1 / CLASSES)) / 4
    assert table["ece"] == pytest.approx(expected)


# --- the video bootstrap ------------------------------------------------------------------------


def test_bootstrap_of_one_video_or_equal_videos_is_the_point() -> None:
    values = np.array([0.0, 1.0, 1.0, 0.0])
    low, high = bootstrap_interval(values, ["a"] * 4, resamples=50)
    assert low == high == pytest.approx(0.5)
    low, high = bootstrap_interval(values, ["a", "a", "b", "b"], resamples=50)
    assert low == high == pytest.approx(0.5)  # both videos have mean 0.5 and equal weight


def test_bootstrap_matches_a_loop_over_resampled_videos() -> None:
    """An independent bootstrap (draw videos with replacement, pool their samples) agrees
    within Monte Carlo error."""
    rng = np.random.default_rng(5)
    sizes = rng.integers(1, 6, size=12)
    groups = np.repeat(np.arange(12), sizes)
    values = rng.random(len(groups)) < np.repeat(rng.random(12), sizes)  # per-video accuracy
    low, high = bootstrap_interval(values, groups, resamples=4000, seed=1)
    loop_rng = np.random.default_rng(2)
    means = []
    for _ in range(4000):
        drawn = loop_rng.choice(12, size=12, replace=True)
        pooled = np.concatenate([values[groups == g] for g in drawn])
        means.append(pooled.mean())
    assert low == pytest.approx(np.percentile(means, 2.5), abs=0.03)
    assert high == pytest.approx(np.percentile(means, 97.5), abs=0.03)
    assert low < values.mean() < high


def test_bootstrap_with_a_mask_scores_each_column_on_its_samples() -> None:
    values = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    mask = np.array([[True, False], [True, False], [False, True]])  # class 0: rows 0-1
    low, high = bootstrap_interval(values, ["a", "b", "c"], resamples=200, mask=mask)
    assert low[0] == high[0] == 1.0  # every resample with class-0 rows scores 1
    assert low[1] == high[1] == 1.0
    none = np.zeros((3, 1), bool)
    low, high = bootstrap_interval(values[:, :1], ["a", "b", "c"], resamples=20, mask=none)
    assert np.isnan(low[0]) and np.isnan(high[0])
