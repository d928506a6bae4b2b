"""Window and segment starts, and stream-sample plans."""

from __future__ import annotations

import numpy as np
import pytest

from assynch.config import AudioFeatures, TimeBase
from assynch.samples.plan import (
    SamplePlan,
    plan_stream_samples,
    sample_audio_range,
    sample_frame_range,
    segment_starts_sec,
    window_starts_sec,
)

AUDIO = AudioFeatures()
TIME = TimeBase()
MARGIN = 2.0
TOLERANCE_SEC = 0.04

def test_window_and_segment_starts() -> None:
    assert window_starts_sec(TIME) == pytest.approx([0, 2.4, 4.8, 7.2, 9.6, 12.0, 14.4, 16.8])
    assert segment_starts_sec(TIME) == pytest.approx([0.32 * s for s in range(14)])


def test_plans_are_deterministic_and_depend_on_video_and_seed() -> None:
    def plan(uid: str, seed: int) -> list[SamplePlan]:
        return plan_stream_samples(
            uid, 480.0, time=TIME, samples=6, seed=seed, audio_margin_sec=MARGIN
        )

    assert plan("v1", 0) == plan("v1", 0)
    assert plan("v1", 0) != plan("v1", 1)
    assert plan("v1", 0) != plan("v2", 0)
    assert len({p.sample_id for p in plan("v1", 0)}) == 6


@pytest.mark.parametrize("duration", [25.0, 25.6, 30.0, 47.0, 60.0, 131.3, 480.0, 3600.0])
def test_plans_stay_inside_the_media_and_do_not_overlap(duration: float) -> None:
    for seed in range(5):
        plans = plan_stream_samples(
            f"vid{duration}", duration, time=TIME, samples=8, seed=seed, audio_margin_sec=MARGIN
        )
        total_frames = int(duration * TIME.fps + 1e-6)
        total_samples = int(duration * TIME.sample_rate + 1e-6)
        for plan in plans:
            first, stop = sample_frame_range(plan, TIME)
            audio_first, audio_stop = sample_audio_range(plan, TIME, MARGIN)
            assert 0 <= first and stop <= total_frames
            assert 0 <= audio_first and audio_stop <= total_samples
            assert plan.offset_sec == pytest.approx((plan.offset_class - 10) * 0.2)
            assert abs(plan.start_sec * TIME.fps - round(plan.start_sec * TIME.fps)) < 1e-6
        ranges = sorted(sample_frame_range(plan, TIME) for plan in plans)
        for (_, stop), (first, _) in zip(ranges, ranges[1:], strict=False):
            assert first >= stop
    expected = min(8, int((duration - 21.6 - 4.0) * 25) // (540 + 100 + 1) + 1)
    assert len(plans) == (expected if duration >= 25.6 else 0)


def test_plans_spread_over_long_videos_and_cover_all_offsets() -> None:
    classes: list[int] = []
    for index in range(300):
        plans = plan_stream_samples(
            f"video{index}", 600.0, time=TIME, samples=8, seed=0, audio_margin_sec=MARGIN
        )
        assert plans[0].start_sec < 100 and plans[-1].start_sec > 480
        classes.extend(plan.offset_class for plan in plans)
    counts = np.bincount(classes, minlength=21)
    assert counts.min() > 0.6 * len(classes) / 21 and counts.max() < 1.4 * len(classes) / 21


def test_plans_need_a_margin_that_covers_the_offsets() -> None:
    with pytest.raises(ValueError, match="audio_margin_sec"):
        plan_stream_samples("v", 100.0, time=TIME, samples=2, seed=0, audio_margin_sec=1.0)


# ---------------------------------------------------------------------------------------------
# Model inputs


