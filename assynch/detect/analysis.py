"""From per-window offset probabilities to what `assynch detect` reports (numpy only).

- Evidence: a window counts when its audio is not silent (its loudest 0.64 s segment is above
  `SILENT_DB`) and its picture is not static (mean absolute frame difference above
  `STATIC_MOTION`). Other windows are shown in the timeline but weigh nothing.
- Overall: the mean of the evidence windows' probability vectors; the offset is its most
  probable class and the confidence the mass within one class (0.2 s) of it.
- Segments (drift): the piecewise-constant offset path that minimises the sum over evidence
  windows of -log p(offset) (probabilities floored at `PROBABILITY_FLOOR`) plus `SWITCH_NATS`
  per change (Viterbi over the 21 classes, linear in the number of windows).
- Verdict: `undecided` with fewer than `MIN_EVIDENCE_WINDOWS` evidence windows or an overall
  confidence under `MIN_CONFIDENCE`; `drifting` when the path has several segments whose
  offsets differ by more than one class; else `in_sync` / `audio_early` / `audio_late` from the
  overall offset (positive = audio early, DESIGN.md).
See docs/DETECT.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SILENT_DB = -50.0
STATIC_MOTION = 0.25
MIN_EVIDENCE_WINDOWS = 2
MIN_CONFIDENCE = 0.5
PROBABILITY_FLOOR = 1e-3
SWITCH_NATS = 8.0

VERDICTS = ("in_sync", "audio_early", "audio_late", "drifting", "undecided")
OUT_OF_SYNC = ("audio_early", "audio_late", "drifting")


@dataclass(frozen=True)
class Segment:
    start_sec: float
    end_sec: float
    first_window: int
    last_window: int
    offset_sec: float
    offset_class: int
    confidence: float
    evidence_windows: int


@dataclass(frozen=True)
class Analysis:
    offset_sec: float | None
    offset_class: int | None
    confidence: float
    verdict: str
    reason: str
    probabilities: np.ndarray  # (C,) overall distribution (uniform when there is no evidence)
    evidence_windows: int
    segments: list[Segment]

    @property
    def drifting(self) -> bool:
        return self.verdict == "drifting"


def mass_within_one(probabilities: np.ndarray, offset_class: int) -> float:
    low, high = max(offset_class - 1, 0), offset_class + 2
    return float(np.sum(probabilities[..., low:high], axis=-1))


def evidence_mask(audio_db: np.ndarray, motion: np.ndarray) -> np.ndarray:
    return (np.asarray(audio_db) > SILENT_DB) & (np.asarray(motion) > STATIC_MOTION)


def offset_path(probabilities: np.ndarray, evidence: np.ndarray,
                switch_nats: float = SWITCH_NATS) -> np.ndarray:
    """(K, C) probabilities -> (K,) classes: Viterbi with a cost of `switch_nats` per change.

    Windows without evidence cost nothing in any class, so a segment runs through them.
    """
    count, classes = probabilities.shape
    cost = -np.log(np.maximum(probabilities, PROBABILITY_FLOOR))
    cost[~evidence] = 0.0
    total = cost[0].copy()
    back = np.zeros((count, classes), dtype=np.int8)
    for k in range(1, count):
        best = int(np.argmin(total))
        switch = total[best] + switch_nats
        stay = total <= switch
        back[k] = np.where(stay, np.arange(classes), best)
        total = np.minimum(total, switch) + cost[k]
    path = np.zeros(count, dtype=np.int64)
    path[-1] = int(np.argmin(total))
    for k in range(count - 1, 0, -1):
        path[k - 1] = back[k, path[k]]
    return path


def segments_of(
    path: np.ndarray,
    probabilities: np.ndarray,
    evidence: np.ndarray,
    centers_sec: np.ndarray,
    duration_sec: float,
    offsets_sec: np.ndarray,
) -> list[Segment]:
    """Runs of one class in `path` as segments; a boundary lies halfway between the centres of
    the last window of one run and the first of the next."""
    starts = [0] + [k for k in range(1, len(path)) if path[k] != path[k - 1]]
    segments = []
    for index, first in enumerate(starts):
        last = (starts[index + 1] if index + 1 < len(starts) else len(path)) - 1
        offset_class = int(path[first])
        chosen = evidence[first : last + 1]
        mean = probabilities[first : last + 1][chosen].mean(axis=0) if chosen.any() else None
        start = 0.0 if first == 0 else float((centers_sec[first - 1] + centers_sec[first]) / 2)
        end = duration_sec if last == len(path) - 1 else float(
            (centers_sec[last] + centers_sec[last + 1]) / 2
        )
        segments.append(Segment(
            start_sec=round(start, 3), end_sec=round(end, 3), first_window=first,
            last_window=last, offset_sec=float(offsets_sec[offset_class]),
            offset_class=offset_class,
            confidence=0.0 if mean is None else round(mass_within_one(mean, offset_class), 4),
            evidence_windows=int(chosen.sum()),
        ))
    return segments


def analyse(
    probabilities: np.ndarray,
    evidence: np.ndarray,
    centers_sec: np.ndarray,
    duration_sec: float,
    offsets_sec: np.ndarray,
) -> Analysis:
    """Overall offset, confidence, segments and verdict of one video's windows."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    classes = len(offsets_sec)
    center = classes // 2
    evidence = np.asarray(evidence, dtype=bool)
    count = int(evidence.sum())
    if count == 0:
        uniform = np.full(classes, 1.0 / classes)
        segments = [] if len(probabilities) == 0 else [Segment(
            start_sec=0.0, end_sec=round(duration_sec, 3), first_window=0,
            last_window=len(probabilities) - 1, offset_sec=0.0, offset_class=center,
            confidence=0.0, evidence_windows=0,
        )]
        return Analysis(None, None, 0.0, "undecided",
                        "no window has both sound and motion (silent or static video)",
                        uniform, 0, segments)
    overall = probabilities[evidence].mean(axis=0)
    offset_class = int(np.argmax(overall))
    confidence = mass_within_one(overall, offset_class)
    path = offset_path(probabilities, evidence)
    segments = segments_of(path, probabilities, evidence, centers_sec, duration_sec, offsets_sec)
    decided = [s for s in segments if s.evidence_windows > 0]
    offset_sec = float(offsets_sec[offset_class])
    spread = max(s.offset_class for s in decided) - min(s.offset_class for s in decided)
    if count < MIN_EVIDENCE_WINDOWS:
        verdict, reason = "undecided", (
            f"only {count} window(s) with sound and motion; at least {MIN_EVIDENCE_WINDOWS} needed"
        )
    elif spread > 1:
        verdict, reason = "drifting", (
            f"the offset changes along the video ({len(decided)} segments)"
        )
    elif confidence < MIN_CONFIDENCE:
        verdict, reason = "undecided", (
            f"confidence {confidence:.2f} is below {MIN_CONFIDENCE} (the windows disagree)"
        )
    elif offset_class == center:
        verdict, reason = "in_sync", "the offset is 0 s within the 0.2 s grid"
    elif offset_sec > 0:
        verdict, reason = "audio_early", f"the sound comes {offset_sec:.1f} s before the picture"
    else:
        verdict, reason = "audio_late", f"the sound comes {-offset_sec:.1f} s after the picture"
    return Analysis(
        offset_sec=offset_sec, offset_class=offset_class, confidence=round(confidence, 4),
        verdict=verdict, reason=reason, probabilities=overall, evidence_windows=count,
        segments=segments,
    )
