"""Test media for `assynch detect`: flash/beep clips with irregular events, and copies of a video
whose audio a test moves by a known amount, written independently of `assynch.detect.fix` (so
`--fix` is checked against something it did not make).

The audio is decoded to samples, moved sample-exactly and encoded again as AAC; the video packets
are copied. `audio_early(t)` is the offset at video time t in DESIGN.md's sign: positive means
the sound comes that many seconds before its picture, i.e. output audio at t = input audio at
t + audio_early(t) (silence where that falls outside the input).
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from media_files import ClipSpec, write_clip

AAC_FRAME = 1024
CLIP_FPS = 25


def event_times(duration_sec: float, seed: int, first: float = 0.5) -> tuple[float, ...]:
    """Irregular flash/beep times (gaps 0.7-2.0 s), on the 25 fps grid, so no offset repeats."""
    rng = np.random.default_rng(seed)
    times, t = [], first
    while t < duration_sec - 0.5:
        times.append(round(t * CLIP_FPS) / CLIP_FPS)
        t += rng.uniform(0.7, 2.0)
    return tuple(times)


def flash_beep_clip(path: Path, duration_sec: float, seed: int,
                    audio_shift: Callable[[float], float] | float = 0.0) -> Path:
    """A 25 fps clip with flashes at irregular times and a beep per flash, the beep moved by
    `audio_shift(t)` seconds (positive: the beep comes early, i.e. audio early)."""
    flashes = event_times(duration_sec, seed)
    shift = audio_shift if callable(audio_shift) else (lambda _t: float(audio_shift))
    beeps = tuple(t - shift(t) for t in flashes if 0.05 < t - shift(t) < duration_sec - 0.2)
    return write_clip(path, ClipSpec(duration_sec=duration_sec, fps=Fraction(CLIP_FPS), width=96,
                                     height=72, flash_times=flashes, beep_times=beeps, seed=seed))


def decoded_audio(path: Path) -> tuple[np.ndarray, int]:
    """The first audio stream as (channels, samples) float32 and its rate, from time 0."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        layout = stream.codec_context.layout.name
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        pieces, first = [], None
        for frame in container.decode(stream):
            if first is None and frame.pts is not None:
                first = int(round(float(frame.pts * frame.time_base) * rate))
            for out in resampler.resample(frame):
                pieces.append(out.to_ndarray())
        for out in resampler.resample(None):
            pieces.append(out.to_ndarray())
    samples = np.concatenate(pieces, axis=1).astype(np.float32)
    lead = max(first or 0, 0)  # audio that starts late: silence before it
    return np.pad(samples, ((0, 0), (lead, 0))), rate


def shifted_copy(source: Path, target: Path, audio_early: Callable[[float], float] | float) -> Path:
    """Write `target`: `source`'s video packets and its audio moved by `audio_early(t)`."""
    early = audio_early if callable(audio_early) else (lambda _t: float(audio_early))
    samples, rate = decoded_audio(source)
    count = samples.shape[1]
    times = np.arange(count) / rate
    moved = np.round(np.vectorize(early)(times[:: rate // 100]) * rate).astype(np.int64)
    shift = np.repeat(moved, rate // 100)[:count]
    shift = np.pad(shift, (0, count - shift.size), mode="edge")
    index = np.arange(count) + shift
    inside = (index >= 0) & (index < count)
    output = np.zeros_like(samples)
    output[:, inside] = samples[:, index[inside]]
    with av.open(str(source)) as inp, av.open(str(target), "w", format="mp4") as out:
        video_in = inp.streams.video[0]
        layout = inp.streams.audio[0].codec_context.layout.name
        video_out = out.add_stream_from_template(video_in)
        audio_out = out.add_stream("aac", rate=rate, layout=layout)
        for packet in inp.demux(video_in):
            if packet.dts is None and packet.pts is None:
                continue
            packet.stream = video_out
            out.mux(packet)
        for first in range(0, count, AAC_FRAME):
            block = np.ascontiguousarray(output[:, first : first + AAC_FRAME])
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = rate, first, Fraction(1, rate)
            out.mux(audio_out.encode(frame))
        out.mux(audio_out.encode(None))
    return target
