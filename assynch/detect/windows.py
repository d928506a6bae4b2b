"""Consecutive windows of a whole video, cut from one streaming decode with bounded memory.

Window w starts at output frame w * hop (hop = `time.stream_hop_sec`, 60 frames) and covers
`time.window_frames` frames (4.8 s). Its audio is the same span plus
`INFERENCE_AUDIO_MARGIN_SEC` on both sides (zeros before 0 s and after the audio ends: silence,
as the decoder fills missing audio). Windows come in blocks of up to `block_windows`, as model
inputs built by `assynch.samples.model_inputs.windows_to_model_inputs` (the training path's
cutting), with per-window evidence statistics (loudness, motion). Only the decoded frames and
audio that the next block still needs are kept.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from assynch.config import AssynchConfig
from assynch.media.decode import DecodedChunk, MediaInfo
from assynch.samples.cutter import IndexedBuffer
from assynch.samples.model_inputs import (
    INFERENCE_AUDIO_MARGIN_SEC,
    windows_audio_span,
    windows_to_model_inputs,
)
from assynch.samples.plan import window_hop_frames

log = logging.getLogger(__name__)

# Frames decoded this far ahead of the audio mean the audio has ended: stop reading.
AUDIO_ENDED_AFTER_SEC = 60.0
SILENCE_FLOOR_DB = -120.0


@dataclass(frozen=True)
class WindowBlock:
    """Consecutive windows `first_window`, ... as model inputs, with their evidence stats."""

    first_window: int
    video: torch.Tensor  # (n, S, 16, 3, H, W) normalised
    audio: torch.Tensor  # (n, S, n_mels, 66) normalised log-mel
    audio_db: np.ndarray  # (n,) loudest segment's RMS in dBFS
    motion: np.ndarray  # (n,) mean absolute difference of consecutive frames (0..255)

    @property
    def count(self) -> int:
        return int(self.video.shape[0])


@dataclass
class StreamSummary:
    """What the decode found, filled in as the stream is read."""

    info: MediaInfo | None = None
    frames: int = 0
    audio_samples: int = 0
    padded_samples: int = 0
    windows: int = 0
    audio_ended_early: bool = False
    peak_buffer_bytes: int = 0


def _segment_db(audio: np.ndarray, starts: np.ndarray, length: int) -> float:
    index = starts[:, None] + np.arange(length)[None, :]
    rms = np.sqrt(np.mean(np.square(audio[index].astype(np.float64)), axis=1))
    return float(max(SILENCE_FLOOR_DB, 20 * math.log10(max(float(rms.max()), 1e-12))))


def _motion(frames: np.ndarray) -> float:
    if frames.shape[0] < 2:
        return 0.0
    small = frames[:, ::2, ::2].astype(np.int16)
    return float(np.abs(np.diff(small, axis=0)).mean())


class WindowCutter:
    """Turn `iter_decode` chunks into blocks of consecutive windows (see the module doc)."""

    def __init__(self, config: AssynchConfig, block_windows: int = 8) -> None:
        if block_windows < 1:
            raise ValueError(f"block_windows must be >= 1, got {block_windows}")
        self.config = config
        self.time = config.time
        self.block_windows = block_windows
        self.hop = window_hop_frames(self.time)
        self.margin = INFERENCE_AUDIO_MARGIN_SEC
        self.samples_per_frame = self.time.sample_rate / self.time.fps
        self.frames = IndexedBuffer()
        self.audio = IndexedBuffer()
        self.next_window = 0
        self.summary = StreamSummary()

    # -- positions --------------------------------------------------------------------------

    def _frame_span(self, first_window: int, count: int) -> tuple[int, int]:
        first = first_window * self.hop
        return first, first + (count - 1) * self.hop + self.time.window_frames

    def _audio_span(self, first_window: int, count: int) -> tuple[int, int]:
        return windows_audio_span(first_window * self.hop, count, self.time, self.margin)

    def windows_ready(self, final: bool) -> int:
        """How many windows from `next_window` on can be cut now."""
        frame_stop = self.summary.frames
        audio_stop = self.summary.audio_samples
        if final:
            # The common duration decides which windows exist; beyond the audio is silence.
            common = min(frame_stop, int(audio_stop / self.samples_per_frame + 1e-6))
            last_frame = common
            audio_limit = math.inf
        else:
            last_frame = frame_stop
            audio_limit = audio_stop
        count = 0
        while count < self.block_windows:
            _, frame_end = self._frame_span(self.next_window + count, 1)
            _, audio_end = self._audio_span(self.next_window + count, 1)
            if frame_end > last_frame or audio_end > audio_limit:
                break
            count += 1
        return count

    # -- feeding ------------------------------------------------------------------------------

    def push(self, chunk: DecodedChunk) -> list[WindowBlock]:
        self.summary.info = chunk.info
        self.frames.append(chunk.first_frame, chunk.frames)
        self.audio.append(chunk.first_sample, chunk.audio)
        self.summary.frames = chunk.stop_frame if chunk.frames.shape[0] else self.summary.frames
        if chunk.audio.shape[0]:
            self.summary.audio_samples = chunk.stop_sample
        self.summary.padded_samples += chunk.padded_samples
        self.summary.peak_buffer_bytes = max(
            self.summary.peak_buffer_bytes, self.frames.nbytes + self.audio.nbytes
        )
        return self._cut_ready(final=False)

    def audio_has_ended(self) -> bool:
        """Frames run far ahead of the audio: the audio stream ended before the video."""
        ahead = self.summary.frames / self.time.fps - (
            self.summary.audio_samples / self.time.sample_rate
        )
        return ahead > AUDIO_ENDED_AFTER_SEC

    def finish(self) -> list[WindowBlock]:
        blocks = self._cut_ready(final=True)
        self.frames = IndexedBuffer()
        self.audio = IndexedBuffer()
        return blocks

    def _cut_ready(self, final: bool) -> list[WindowBlock]:
        blocks = []
        while True:
            count = self.windows_ready(final)
            if count == 0 or (count < self.block_windows and not final):
                break
            blocks.append(self._cut(self.next_window, count))
            self.next_window += count
            self.summary.windows += count
        first_frame, _ = self._frame_span(self.next_window, 1)
        first_sample, _ = self._audio_span(self.next_window, 1)
        self.frames.drop_before(first_frame)
        self.audio.drop_before(max(first_sample, 0))
        return blocks

    def _take_audio(self, first: int, stop: int) -> np.ndarray:
        """Audio samples [first, stop), zeros where the decoded audio has none."""
        out = np.zeros(stop - first, np.float32)
        have_first = max(first, self.audio.start if self.audio.start is not None else stop)
        have_stop = min(stop, self.audio.stop if self.audio.stop is not None else first)
        if have_stop > have_first:
            out[have_first - first : have_stop - first] = self.audio.take(have_first, have_stop)
        return out

    def _cut(self, first_window: int, count: int) -> WindowBlock:
        frame_first, frame_stop = self._frame_span(first_window, count)
        audio_first, audio_stop = self._audio_span(first_window, count)
        frames = self.frames.take(frame_first, frame_stop)
        audio = self._take_audio(audio_first, audio_stop)
        video_in, audio_in = windows_to_model_inputs(
            frames, audio, time=self.time, video=self.config.video, audio=self.config.audio,
            audio_margin_sec=self.margin,
        )
        margin = int(round(self.margin * self.time.sample_rate))
        segment = int(round(self.time.segment_frames / self.time.fps * self.time.sample_rate))
        stride = int(round(self.time.segment_stride_frames * self.samples_per_frame))
        audio_db, motion = [], []
        for w in range(count):
            local = w * self.hop
            window_frames = frames[local : local + self.time.window_frames]
            first_sample = margin + int(round(local * self.samples_per_frame))
            starts = first_sample + stride * np.arange(self.time.segments_per_window)
            audio_db.append(_segment_db(audio, starts, segment))
            motion.append(_motion(window_frames))
        return WindowBlock(
            first_window=first_window, video=video_in, audio=audio_in,
            audio_db=np.asarray(audio_db), motion=np.asarray(motion),
        )


def iter_window_blocks(
    chunks: Iterable[DecodedChunk],
    cutter: WindowCutter,
    on_chunk: Callable[[DecodedChunk], None] | None = None,
) -> Iterator[WindowBlock]:
    """Feed decoded chunks to `cutter`; yield window blocks as soon as they are complete."""
    for chunk in chunks:
        yield from cutter.push(chunk)
        if on_chunk is not None:
            on_chunk(chunk)
        if cutter.audio_has_ended():
            cutter.summary.audio_ended_early = True
            log.warning(
                "%s: the audio ends at %.1f s, long before the video; checking the part with "
                "sound only", chunk.info.source, cutter.summary.audio_samples
                / cutter.time.sample_rate,
            )
            break
    yield from cutter.finish()
