"""Write a copy of a video whose audio is moved back into sync (PyAV remux; no ffmpeg binary).

The video packets are copied unchanged (never re-encoded). The audio:
- one shift for the whole file: its packets are copied with their timestamps moved by the shift
  (packets that would start before 0 s are dropped: a cut at packet granularity, no re-encode);
- several shifts (one per drift segment): the audio is decoded, each segment's stretch is taken
  from where its own shift says, and the result re-encoded (the input's codec when FFmpeg can
  encode it, else AAC). Where the shift grows at a boundary, the gap is silence (nothing
  repeats); where it shrinks, the overlap is skipped.

Sign (DESIGN.md): a detected offset d > 0 means the audio is early, so the fix delays the audio by
d: output audio at t = input audio at t - d.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from assynch.errors import UserError
from assynch.samples.cutter import IndexedBuffer

log = logging.getLogger(__name__)

OUTPUT_FRAME_SAMPLES = 1024


class FixError(UserError):
    """The corrected copy cannot be written."""


@dataclass(frozen=True)
class Shift:
    """Delay the audio by `shift_sec` over video time [start_sec, end_sec)."""

    start_sec: float
    end_sec: float
    shift_sec: float


def _first_video_time(path: str) -> float:
    with av.open(path) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            if frame.pts is not None:
                return float(frame.pts * frame.time_base)
    raise FixError(f"{path}: no video frame decodes; cannot fix it")


def _copy_audio_packet(packet: av.Packet, shift_sec: float) -> bool:
    """Move an audio packet by `shift_sec`; False when it would start before 0 s (drop it)."""
    delta = int(round(shift_sec / packet.time_base))
    if packet.pts is not None:
        if packet.pts + delta < 0:
            return False
        packet.pts += delta
    if packet.dts is not None:
        packet.dts = max(packet.dts + delta, 0)
    return True


class _SegmentedAudio:
    """Builds the output audio of several shifts from the decoded input audio, in order."""

    def __init__(self, shifts: Sequence[Shift], origin: float, rate: int, channels: int) -> None:
        self.shifts = shifts
        self.origin = origin
        self.rate = rate
        self.channels = channels
        self.source = IndexedBuffer()  # (samples, channels), index = container time * rate
        self.next_out = 0
        self.ended = False
        self.max_ahead = int(np.ceil(max(0.0, -min(s.shift_sec for s in shifts)) * rate)) + 1
        self.max_behind = int(np.ceil(max(0.0, max(s.shift_sec for s in shifts)) * rate)) + 1
        # Output sample index (container time * rate) where each shift stops applying.
        self.ends = [int(round((origin + s.end_sec) * rate)) for s in shifts[:-1]] + [2**62]
        self.shift_samples = [int(round(s.shift_sec * rate)) for s in shifts]

    def _runs(self, first: int, stop: int) -> list[tuple[int, int, int]]:
        """[first, stop) split where the shift changes: (run_first, run_stop, shift_samples)."""
        runs = []
        index = first
        for boundary, shift in zip(self.ends, self.shift_samples, strict=True):
            if index >= stop:
                break
            if boundary <= index:
                continue
            run_stop = min(boundary, stop)
            runs.append((index, run_stop, shift))
            index = run_stop
        if index < stop:
            runs.append((index, stop, self.shift_samples[-1]))
        return runs

    def push(self, samples: np.ndarray, first_index: int) -> None:
        self.source.append(first_index, samples)

    def _source_samples(self, first: int, stop: int) -> np.ndarray:
        out = np.zeros((stop - first, self.channels), np.float32)
        start, end = self.source.start, self.source.stop
        if start is None or end is None:
            return out
        lo, hi = max(first, start), min(stop, end)
        if hi > lo:
            out[lo - first : hi - first] = self.source.take(lo, hi)
        return out

    def ready(self) -> list[tuple[int, np.ndarray]]:
        """Output blocks whose source audio has been decoded (all of them once `ended`)."""
        blocks = []
        source_end = self.source.stop or 0
        total_end = source_end + self.max_behind
        while True:
            first, stop = self.next_out, self.next_out + OUTPUT_FRAME_SAMPLES
            if not self.ended and stop + self.max_ahead > source_end:
                break
            if self.ended and first >= total_end:
                break
            block = np.zeros((OUTPUT_FRAME_SAMPLES, self.channels), np.float32)
            for run_first, run_stop, shift in self._runs(first, stop):
                block[run_first - first : run_stop - first] = self._source_samples(
                    run_first - shift, run_stop - shift
                )
            blocks.append((first, block))
            self.next_out = stop
        self.source.drop_before(max(self.next_out - self.max_behind, 0))
        return blocks


def _audio_codec_for(codec_name: str) -> str:
    try:
        av.codec.Codec(codec_name, "w")
        return codec_name
    except Exception:  # not encodable by this FFmpeg build
        return "aac"


def write_fixed_copy(source: str, target: str | Path, shifts: Sequence[Shift]) -> dict[str, Any]:
    """Write `target` from `source` with the audio moved by `shifts`; returns what was done."""
    if not shifts:
        raise ValueError("no shift to apply")
    target = Path(target)
    if target.resolve() == Path(source).resolve():
        raise FixError(f"--fix {target}: would overwrite the input; choose another path")
    target.parent.mkdir(parents=True, exist_ok=True)
    constant = len({round(s.shift_sec, 6) for s in shifts}) == 1
    temporary = target.with_name(f".{target.stem}.{os.getpid()}.tmp{target.suffix}")
    try:
        if constant:
            _remux_constant(source, temporary, shifts[0].shift_sec)
        else:
            _remux_segmented(source, temporary, shifts)
        os.replace(temporary, target)
    except (av.error.FFmpegError, ValueError) as exc:
        raise FixError(f"--fix {target}: cannot write the corrected copy of {source}: "
                       f"{str(exc).splitlines()[0]}") from None
    finally:
        temporary.unlink(missing_ok=True)
    return {
        "path": str(target),
        "shifts": [
            {"start_sec": round(s.start_sec, 3), "end_sec": round(s.end_sec, 3),
             "shift_sec": round(s.shift_sec, 3)} for s in shifts
        ],
        "video_reencoded": False,
        "audio_reencoded": not constant,
    }


def _open_output(path: Path, source_format: str) -> av.container.OutputContainer:
    guess = None if path.suffix else source_format.split(",")[0]
    return av.open(str(path), "w", format=guess)


def _remux_constant(source: str, target: Path, shift_sec: float) -> None:
    with av.open(source) as inp:
        video_in = inp.streams.video[0]
        audio_in = inp.streams.audio[0]
        with _open_output(target, inp.format.name) as out:
            video_out = out.add_stream_from_template(video_in)
            audio_out = out.add_stream_from_template(audio_in)
            for packet in inp.demux(video_in, audio_in):
                if packet.dts is None and packet.pts is None:
                    continue  # demuxer flush packet
                if packet.stream is video_in:
                    packet.stream = video_out
                else:
                    if not _copy_audio_packet(packet, shift_sec):
                        continue
                    packet.stream = audio_out
                out.mux(packet)


def _remux_segmented(source: str, target: Path, shifts: Sequence[Shift]) -> None:
    origin = _first_video_time(source)
    with av.open(source) as inp:
        video_in = inp.streams.video[0]
        audio_in = inp.streams.audio[0]
        rate = audio_in.codec_context.sample_rate
        layout = audio_in.codec_context.layout.name
        channels = audio_in.codec_context.layout.nb_channels
        with _open_output(target, inp.format.name) as out:
            video_out = out.add_stream_from_template(video_in)
            audio_out = out.add_stream(
                _audio_codec_for(audio_in.codec_context.name), rate=rate, layout=layout
            )
            audio_out.codec_context.time_base = Fraction(1, rate)
            if audio_in.codec_context.bit_rate:
                audio_out.codec_context.bit_rate = audio_in.codec_context.bit_rate
            to_planar = av.AudioResampler(format="fltp", layout=layout, rate=rate)
            builder = _SegmentedAudio(shifts, origin, rate, channels)
            state = {"next_source": None}

            def add_frames(frames: list[av.AudioFrame]) -> None:
                for frame in frames:
                    if frame.pts is not None and state["next_source"] is None:
                        state["next_source"] = int(round(float(frame.pts * frame.time_base)
                                                         * rate))
                    first = state["next_source"] or 0
                    samples = frame.to_ndarray().T.astype(np.float32)  # (n, channels)
                    builder.push(np.ascontiguousarray(samples), first)
                    state["next_source"] = first + samples.shape[0]

            def encode_ready() -> None:
                for first, block in builder.ready():
                    frame = av.AudioFrame.from_ndarray(
                        np.ascontiguousarray(block.T), format="fltp", layout=layout
                    )
                    frame.sample_rate = rate
                    frame.pts = first
                    frame.time_base = Fraction(1, rate)
                    for packet in audio_out.encode(frame):
                        out.mux(packet)

            for packet in inp.demux(video_in, audio_in):
                if packet.dts is None and packet.pts is None:
                    continue
                if packet.stream is video_in:
                    packet.stream = video_out
                    out.mux(packet)
                    continue
                for frame in packet.decode():
                    add_frames(to_planar.resample(frame))
                encode_ready()
            add_frames(to_planar.resample(None))
            builder.ended = True
            encode_ready()
            for packet in audio_out.encode(None):
                out.mux(packet)


def shifts_from_segments(segments: Sequence[Any], duration_sec: float) -> list[Shift]:
    """One shift per drift segment (its detected offset), covering [0, duration)."""
    return [
        Shift(start_sec=float(s.start_sec), end_sec=float(s.end_sec),
              shift_sec=float(s.offset_sec))
        for s in segments
    ] or [Shift(0.0, duration_sec, 0.0)]
