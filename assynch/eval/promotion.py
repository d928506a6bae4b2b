"""The promotion rule: when does an evaluated model version take the `champion` alias?

A candidate is promoted when there is no champion yet, or when, on the same shard set and split
and in streaming mode (the prediction at the end of each stream):

    candidate ACC@1 >= champion ACC@1 + margin      (margin in ACC@1 points, 1 point = 0.01)
    and candidate EMD <= champion EMD               (not a worse EMD)

Pure logic: the caller finds the champion and its numbers (assynch/tracking/evaluation.py) and
moves the alias.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

RULE = (
    "promote when there is no champion, or when on the same shard set and split (streaming mode, "
    "end of stream) candidate ACC@1 >= champion ACC@1 + margin points and candidate EMD <= "
    "champion EMD"
)
EPSILON = 1e-9


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str
    candidate_version: str | None
    champion_version: str | None
    candidate_acc1: float
    candidate_emd_sec: float
    champion_acc1: float | None
    champion_emd_sec: float | None
    margin_points: float
    rule: str = RULE

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide_promotion(
    *,
    candidate_version: str | None,
    candidate: dict[str, float],
    champion_version: str | None,
    champion: dict[str, float] | None,
    margin_points: float,
) -> PromotionDecision:
    """`candidate`/`champion`: {'acc1', 'emd_sec'} on the same shard set, split and mode
    (`champion` may be None only when there is no champion or it is the candidate)."""
    common = {
        "candidate_version": candidate_version, "champion_version": champion_version,
        "candidate_acc1": candidate["acc1"], "candidate_emd_sec": candidate["emd_sec"],
        "champion_acc1": champion["acc1"] if champion else None,
        "champion_emd_sec": champion["emd_sec"] if champion else None,
        "margin_points": margin_points,
    }
    if champion_version is not None and candidate_version == champion_version:
        return PromotionDecision(
            promote=False, reason=f"version {candidate_version} is already the champion", **common
        )
    if champion_version is None:
        return PromotionDecision(promote=True, reason="there is no champion yet", **common)
    if champion is None:
        raise ValueError(f"the champion's (version {champion_version}) numbers are needed")
    gain = (candidate["acc1"] - champion["acc1"]) * 100
    needed = f"ACC@1 {candidate['acc1']:.4f} vs champion {champion['acc1']:.4f}"
    if gain + EPSILON < margin_points:
        return PromotionDecision(
            promote=False,
            reason=f"{needed}: a gain of {gain:+.2f} points, below the margin of "
                   f"{margin_points:g} points",
            **common,
        )
    if candidate["emd_sec"] > champion["emd_sec"] + EPSILON:
        return PromotionDecision(
            promote=False,
            reason=f"{needed} (+{gain:.2f} points) but EMD {candidate['emd_sec']:.4f} s is worse "
                   f"than the champion's {champion['emd_sec']:.4f} s",
            **common,
        )
    return PromotionDecision(
        promote=True,
        reason=f"{needed} (+{gain:.2f} points >= {margin_points:g}) and EMD "
               f"{candidate['emd_sec']:.4f} s <= {champion['emd_sec']:.4f} s",
        **common,
    )
