"""Stream samples: where they start and what they hold (numpy only; model inputs are in
`assynch.samples.model_inputs`).

A stream sample is `time.windows_per_sample` consecutive windows of one video (hop
`time.stream_hop_sec`) sharing one offset d. Sign (DESIGN.md, as in Synchformer): positive d means
the audio is early; the sample shows video [t, t + L) with audio [t + d, t + d + L), so a sound
appears d seconds before its picture. Audio is stored with a margin m on both sides:
[t + d - m, t + L + d + m], so training can draw a fresh offset d' with |d' - d| <= m.

All positions are integer frame / sample / mel-frame counts, rounded once from seconds, so
nothing drifts along a long stream.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from assynch.config import TimeBase
from assynch.samples.offsets import class_to_offset_sec


@dataclass(frozen=True)
class SamplePlan:
    """One stream sample of a video: where it starts and the offset it is labelled with."""

    sample_id: str
    start_sec: float
    offset_class: int
    offset_sec: float


# ---------------------------------------------------------------------------------------------
# Integer positions


def window_hop_frames(time: TimeBase) -> int:
    return int(round(time.stream_hop_sec * time.fps))


def sample_frames(time: TimeBase) -> int:
    """Video frames one stream sample covers: (W - 1) * hop + window frames (540 by default)."""
    return (time.windows_per_sample - 1) * window_hop_frames(time) + time.window_frames


def segment_samples(time: TimeBase) -> int:
    """Audio samples of one segment (10240 = 0.64 s at 16 kHz)."""
    return int(round(time.segment_frames / time.fps * time.sample_rate))


def margin_samples(time: TimeBase, audio_margin_sec: float) -> int:
    return int(round(audio_margin_sec * time.sample_rate))


def sample_audio_samples(time: TimeBase, audio_margin_sec: float) -> int:
    """Audio samples stored per stream sample: the sample's duration plus a margin each side."""
    duration = int(round(sample_frames(time) / time.fps * time.sample_rate))
    return duration + 2 * margin_samples(time, audio_margin_sec)


def window_starts_sec(time: TimeBase) -> list[float]:
    """Window starts relative to the sample start: 0, 2.4, 4.8, ..."""
    hop = window_hop_frames(time)
    return [round(w * hop / time.fps, 6) for w in range(time.windows_per_sample)]


def segment_starts_sec(time: TimeBase) -> list[float]:
    """Segment starts relative to the window start: 0, 0.32, 0.64, ..."""
    stride = time.segment_stride_frames
    return [round(s * stride / time.fps, 6) for s in range(time.segments_per_window)]


def sample_frame_range(plan: SamplePlan, time: TimeBase) -> tuple[int, int]:
    """[first, stop) output frame indices of the sample's video."""
    first = int(round(plan.start_sec * time.fps))
    return first, first + sample_frames(time)


def sample_audio_range(
    plan: SamplePlan, time: TimeBase, audio_margin_sec: float
) -> tuple[int, int]:
    """[first, stop) audio sample indices of the sample's audio with margins: from t + d - m."""
    first_frame, _ = sample_frame_range(plan, time)
    first = (
        int(round(first_frame / time.fps * time.sample_rate))
        + int(round(plan.offset_sec * time.sample_rate))
        - margin_samples(time, audio_margin_sec)
    )
    return first, first + sample_audio_samples(time, audio_margin_sec)


# ---------------------------------------------------------------------------------------------
# Planning


def _rng(video_uid: str, seed: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{video_uid}\0{seed}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def plan_stream_samples(
    video_uid: str,
    duration_sec: float,
    *,
    time: TimeBase,
    samples: int,
    seed: int,
    audio_margin_sec: float,
) -> list[SamplePlan]:
    """Up to `samples` stream samples of one video, deterministic for (video_uid, seed).

    A sample with offset d starting at t needs video [t, t + L) and audio [t + d - m,
    t + L + d + m] inside [0, duration_sec); so t lies in [m - d, D - L - m - d], an interval of
    the same width W = D - L - 2m for every d. Samples are spread evenly over that range with a
    random jitter, spaced at least L + 2 * max_offset apart so that their video never overlaps;
    a video too short for `samples` of them gets fewer (none when W < 0). Offsets are uniform over
    the classes. `duration_sec` should be the common duration of video and audio.
    """
    if samples < 0:
        raise ValueError(f"samples must be >= 0, got {samples}")
    if audio_margin_sec + 1e-9 < time.max_offset_sec:
        raise ValueError(
            f"audio_margin_sec ({audio_margin_sec}) must be at least the largest offset "
            f"({time.max_offset_sec} s)"
        )
    fps = time.fps
    length_frames = sample_frames(time)
    margin_frames = int(np.ceil(audio_margin_sec * fps - 1e-6))
    total_frames = int(np.floor(duration_sec * fps + 1e-6))
    # Range of u = start_frame - (m - d) in frames, the same for every offset.
    width = total_frames - length_frames - 2 * margin_frames
    if width < 0 or samples == 0:
        return []
    # +1 frame absorbs the rounding of jittered positions.
    spacing_min = length_frames + 2 * int(np.ceil(time.max_offset_sec * fps - 1e-6)) + 1
    count = min(samples, width // spacing_min + 1)
    rng = _rng(video_uid, seed)
    classes = rng.integers(0, time.num_offset_classes, size=count)
    if count == 1:
        positions = [int(rng.integers(0, width + 1))]
    else:
        spacing = width / (count - 1)
        slack = (spacing - spacing_min) / 2
        positions = []
        for i in range(count):
            jitter = rng.uniform(-slack, slack) if slack > 0 else 0.0
            positions.append(int(np.clip(round(i * spacing + jitter), 0, width)))
    plans = []
    for i, (offset_class, position) in enumerate(zip(classes, positions, strict=True)):
        offset_sec = class_to_offset_sec(int(offset_class), time)
        offset_frames = int(round(offset_sec * fps))
        start_frame = margin_frames - offset_frames + position
        plans.append(
            SamplePlan(
                sample_id=f"{video_uid}-{i:03d}",
                start_sec=round(start_frame / fps, 6),
                offset_class=int(offset_class),
                offset_sec=offset_sec,
            )
        )
    return plans


# ---------------------------------------------------------------------------------------------
# Cutting (in memory) and turning into model inputs


def cut_stream_sample(
    frames: np.ndarray,
    audio: np.ndarray,
    plan: SamplePlan,
    *,
    time: TimeBase,
    audio_margin_sec: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The sample's frames (T, H, W, 3) and its audio with margins, from whole decoded streams.

    `frames[i]` is at i / fps and `audio[j]` at j / sample_rate (as `decode_all` returns them).
    """
    first_frame, stop_frame = sample_frame_range(plan, time)
    first_sample, stop_sample = sample_audio_range(plan, time, audio_margin_sec)
    if first_frame < 0 or stop_frame > frames.shape[0]:
        raise ValueError(
            f"sample {plan.sample_id}: frames [{first_frame}, {stop_frame}) are outside the "
            f"{frames.shape[0]} decoded frames; plan samples with the decoded duration"
        )
    if first_sample < 0 or stop_sample > audio.shape[0]:
        raise ValueError(
            f"sample {plan.sample_id}: audio [{first_sample}, {stop_sample}) is outside the "
            f"{audio.shape[0]} decoded samples; plan samples with the decoded duration"
        )
    return frames[first_frame:stop_frame], audio[first_sample:stop_sample]


def source_video_uid(sample_id: str) -> str:
    """The video a stream sample was cut from: sample ids are `{video_uid}-{index:03d}`."""
    return sample_id.rsplit("-", 1)[0]
