"""Cut stream samples out of one streaming decode, holding only what pending samples need.

`StreamSampleCutter` takes the chunks of `iter_decode` in order and returns each planned sample
once its frames and its audio (with margins) have been decoded: the same arrays as
`assynch.samples.plan.cut_stream_sample` gives on the whole decoded video, plus the sample's
normalised log-mel as float16. Decoded data before the earliest frame or audio sample that a
pending sample still needs is dropped after every chunk, so memory is bounded by the span of the
samples being assembled, not by the length of the video.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from assynch.config import AudioFeatures, TimeBase
from assynch.media.decode import DecodedChunk
from assynch.media.features import normalised_log_mel
from assynch.samples.plan import (
    SamplePlan,
    sample_audio_range,
    sample_frame_range,
    window_starts_sec,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CutSample:
    """One finished stream sample."""

    plan: SamplePlan
    frames: np.ndarray  # uint8 (T, H, W, 3), frame 0 at plan.start_sec
    audio: np.ndarray  # float32 (A,), sample 0 at start + offset - margin
    mel: np.ndarray  # float16 (n_mels, F), normalised log-mel of `audio`
    window_starts_sec: tuple[float, ...]  # video time of each window's first frame
    audio_start_sec: float


class IndexedBuffer:
    """Contiguous items [start, stop) of one stream, kept as the pieces they arrived in."""

    def __init__(self) -> None:
        self.pieces: list[tuple[int, np.ndarray]] = []

    @property
    def start(self) -> int | None:
        return self.pieces[0][0] if self.pieces else None

    @property
    def stop(self) -> int | None:
        if not self.pieces:
            return None
        first, array = self.pieces[-1]
        return first + int(array.shape[0])

    def append(self, first: int, array: np.ndarray) -> None:
        if array.shape[0] == 0:
            return
        stop = self.stop
        if stop is not None and first > stop:
            self.pieces.clear()  # a gap between decode spans: nothing before it is needed
        elif stop is not None and first < stop:
            array = array[stop - first :]
            first = stop
            if array.shape[0] == 0:
                return
        self.pieces.append((first, array))

    def covers(self, first: int, stop: int) -> bool:
        start, end = self.start, self.stop
        return start is not None and end is not None and start <= first and stop <= end

    def reaches(self, stop: int) -> bool:
        end = self.stop
        return end is not None and end >= stop

    def take(self, first: int, stop: int) -> np.ndarray:
        parts = []
        for piece_first, array in self.pieces:
            piece_stop = piece_first + int(array.shape[0])
            if piece_stop <= first or piece_first >= stop:
                continue
            parts.append(array[max(first - piece_first, 0) : min(stop, piece_stop) - piece_first])
        return parts[0].copy() if len(parts) == 1 else np.concatenate(parts)

    def drop_before(self, index: int) -> None:
        kept: list[tuple[int, np.ndarray]] = []
        for first, array in self.pieces:
            stop = first + int(array.shape[0])
            if stop <= index:
                continue
            if first < index:
                array, first = array[index - first :], index
            kept.append((first, array))
        self.pieces = kept

    @property
    def nbytes(self) -> int:
        return sum(array.nbytes for _, array in self.pieces)


class StreamSampleCutter:
    """Assemble planned samples from streaming chunks; samples come out in plan order."""

    def __init__(
        self,
        plans: Sequence[SamplePlan],
        *,
        time: TimeBase,
        audio: AudioFeatures,
        audio_margin_sec: float,
    ) -> None:
        self.time = time
        self.audio_cfg = audio
        self.audio_margin_sec = audio_margin_sec
        self.plans = sorted(plans, key=lambda plan: (plan.start_sec, plan.sample_id))
        self.frame_ranges = [sample_frame_range(plan, time) for plan in self.plans]
        self.audio_ranges = [
            sample_audio_range(plan, time, audio_margin_sec) for plan in self.plans
        ]
        for plan, (first, _), (audio_first, _) in zip(
            self.plans, self.frame_ranges, self.audio_ranges, strict=True
        ):
            if first < 0 or audio_first < 0:
                raise ValueError(
                    f"sample {plan.sample_id} starts before the video (frame {first}, audio "
                    f"sample {audio_first}); plan samples with plan_stream_samples"
                )
        self._relative_window_starts = window_starts_sec(time)
        self._frames = IndexedBuffer()
        self._audio = IndexedBuffer()
        self._pending = list(range(len(self.plans)))
        self._finished: dict[int, CutSample] = {}
        self._next_out = 0
        self.lost: list[SamplePlan] = []
        self.peak_buffer_bytes = 0

    def decode_spans_sec(self, merge_gap_sec: float = 10.0) -> list[tuple[float, float]]:
        """[start, end) spans of video time that hold every sample's frames and audio, with
        spans closer than `merge_gap_sec` merged (decoding a short gap beats a seek)."""
        spans = sorted(
            (
                min(f0 / self.time.fps, a0 / self.time.sample_rate),
                max(f1 / self.time.fps, a1 / self.time.sample_rate),
            )
            for (f0, f1), (a0, a1) in zip(self.frame_ranges, self.audio_ranges, strict=True)
        )
        merged: list[tuple[float, float]] = []
        for start, end in spans:
            if merged and start - merged[-1][1] <= merge_gap_sec:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        # A little beyond the last needed sample so that rounding never cuts one short.
        return [(start, end + 1.0 / self.time.fps) for start, end in merged]

    @property
    def done(self) -> bool:
        return not self._pending

    def push(self, chunk: DecodedChunk) -> list[CutSample]:
        """Add one decoded chunk; return the samples now complete, in plan order."""
        self._frames.append(chunk.first_frame, chunk.frames)
        self._audio.append(chunk.first_sample, chunk.audio)
        self.peak_buffer_bytes = max(
            self.peak_buffer_bytes, self._frames.nbytes + self._audio.nbytes
        )
        still_pending = []
        for index in self._pending:
            frame_first, frame_stop = self.frame_ranges[index]
            audio_first, audio_stop = self.audio_ranges[index]
            if not (self._frames.reaches(frame_stop) and self._audio.reaches(audio_stop)):
                still_pending.append(index)
                continue
            if self._frames.covers(frame_first, frame_stop) and self._audio.covers(
                audio_first, audio_stop
            ):
                self._finished[index] = self._cut(index)
            else:
                self._lose(index, "its start was not decoded")
        self._pending = still_pending
        self._drop_unneeded()
        return self._release()

    def finish(self) -> list[CutSample]:
        """End of the decode: samples still pending are lost (the media ended early)."""
        for index in self._pending:
            self._lose(index, "the video or its audio ends before the sample does")
        self._pending = []
        self._frames = IndexedBuffer()
        self._audio = IndexedBuffer()
        return self._release()

    def _lose(self, index: int, why: str) -> None:
        plan = self.plans[index]
        log.warning("sample %s dropped: %s", plan.sample_id, why)
        self.lost.append(plan)

    def _cut(self, index: int) -> CutSample:
        plan = self.plans[index]
        frames = self._frames.take(*self.frame_ranges[index])
        audio_first, audio_stop = self.audio_ranges[index]
        audio = self._audio.take(audio_first, audio_stop)
        mel = normalised_log_mel(audio, self.audio_cfg, self.time.sample_rate)
        return CutSample(
            plan=plan,
            frames=frames,
            audio=audio,
            mel=mel.numpy().astype(np.float16),
            window_starts_sec=tuple(
                round(plan.start_sec + w, 6) for w in self._relative_window_starts
            ),
            audio_start_sec=round(audio_first / self.time.sample_rate, 6),
        )

    def _drop_unneeded(self) -> None:
        if self._pending:
            self._frames.drop_before(min(self.frame_ranges[i][0] for i in self._pending))
            self._audio.drop_before(min(self.audio_ranges[i][0] for i in self._pending))
        else:
            self._frames.drop_before(self._frames.stop or 0)
            self._audio.drop_before(self._audio.stop or 0)

    def _release(self) -> list[CutSample]:
        released = []
        lost_ids = {plan.sample_id for plan in self.lost}
        while self._next_out < len(self.plans):
            if self._next_out in self._finished:
                released.append(self._finished.pop(self._next_out))
            elif self.plans[self._next_out].sample_id not in lost_ids:
                break
            self._next_out += 1
        return released


def cut_all(
    chunks: Iterable[DecodedChunk], cutter: StreamSampleCutter
) -> list[CutSample]:
    """Feed every chunk to `cutter` and collect all samples (convenience for small inputs)."""
    samples: list[CutSample] = []
    for chunk in chunks:
        samples.extend(cutter.push(chunk))
        if cutter.done:
            break
    samples.extend(cutter.finish())
    return samples
