"""The verdict rule and the drift segmentation on made-up per-window probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from assynch.config import TimeBase
from assynch.detect.analysis import analyse, evidence_mask, offset_path
from assynch.samples.offsets import offset_grid_sec

OFFSETS = offset_grid_sec(TimeBase())
HOP, WINDOW = 2.4, 4.8


def peaked(classes: list[int], mass: float = 0.8) -> np.ndarray:
    """One distribution per window with `mass` on its class and the rest spread evenly."""
    probabilities = np.full((len(classes), 21), (1 - mass) / 20)
    probabilities[np.arange(len(classes)), classes] = mass
    return probabilities


def run(classes: list[int], evidence: np.ndarray | None = None, mass: float = 0.8):
    count = len(classes)
    centers = np.arange(count) * HOP + WINDOW / 2
    evidence = np.ones(count, bool) if evidence is None else evidence
    return analyse(peaked(classes, mass), evidence, centers, (count - 1) * HOP + WINDOW, OFFSETS)


@pytest.mark.parametrize(("offset_class", "verdict"), [
    (10, "in_sync"), (13, "audio_early"), (6, "audio_late"),
])
def test_constant_offset_gives_one_segment_and_its_verdict(offset_class: int, verdict: str) -> None:
    result = run([offset_class] * 12)
    assert result.verdict == verdict
    assert result.offset_sec == pytest.approx(OFFSETS[offset_class])
    assert len(result.segments) == 1 and result.segments[0].start_sec == 0.0
    assert result.confidence == pytest.approx(0.8 + 2 * 0.01)


def test_one_outlier_window_does_not_open_a_segment() -> None:
    classes = [10] * 12
    classes[5] = 16
    result = run(classes)
    assert result.verdict == "in_sync" and len(result.segments) == 1


def test_a_change_of_offset_is_a_drift_with_its_boundary_between_the_windows() -> None:
    classes = [10] * 10 + [14] * 10
    result = run(classes)
    assert result.verdict == "drifting"
    first, second = result.segments
    assert (first.offset_class, second.offset_class) == (10, 14)
    assert (first.last_window, second.first_window) == (9, 10)
    # Halfway between the centres of windows 9 and 10.
    assert first.end_sec == second.start_sec == pytest.approx(9.5 * HOP + WINDOW / 2)


def test_neighbouring_classes_are_not_a_drift() -> None:
    result = run([10] * 10 + [11] * 10)
    assert result.verdict != "drifting"


def test_silent_or_static_windows_do_not_count() -> None:
    evidence = evidence_mask(np.array([-80.0, -20.0, -20.0, -90.0]), np.array([5, 0.0, 5, 5]))
    assert evidence.tolist() == [False, False, True, False]
    result = run([3, 3, 10, 3], evidence=evidence)
    assert result.verdict == "undecided" and result.evidence_windows == 1
    nothing = run([3, 3, 3], evidence=np.zeros(3, bool))
    assert nothing.verdict == "undecided" and nothing.offset_sec is None


def test_flat_distributions_are_undecided() -> None:
    result = run([10] * 8, mass=0.1)
    assert result.verdict == "undecided"
    assert "confidence" in result.reason


def test_viterbi_path_is_linear_and_runs_through_windows_without_evidence() -> None:
    classes = [4] * 3000 + [12] * 3000
    probabilities = peaked(classes)
    evidence = np.ones(6000, bool)
    evidence[2990:3010] = False
    path = offset_path(probabilities, evidence)
    changes = np.flatnonzero(np.diff(path))
    assert len(changes) == 1 and 2989 <= changes[0] <= 3010
