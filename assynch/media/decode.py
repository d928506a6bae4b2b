"""Decode a video once, streaming, into frames at the target fps and 16 kHz mono audio (PyAV).

Time origin: video time 0 is the presentation time of the first decoded video frame. Output
frame i shows video time i / fps; output audio sample j plays at j / sample_rate. Audio keeps its
container-timestamp relation to the video: audio before t = 0 is dropped, and a late audio start
(or a gap inside the audio) is filled with zeros, counted in `DecodedChunk.padded_samples`.

Frames are resampled by timestamp: output frame i is the latest input frame whose presentation
time is <= i / fps (+ 1 ms for timestamp rounding). Input frames that no output frame picks are
decoded (the codec needs them) but never converted. Each picked frame is resized (short side ->
`video.short_side`) and turned into RGB in one swscale call, then centre-cropped by slicing.

Audio is decoded, its channels averaged (a true mean, not FFmpeg's weighted downmix), and
resampled to the target rate with FFmpeg's resampler (stateful, so chunk borders are seamless).
See docs/DECODING.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from time import perf_counter as _clock
from typing import Any

import av
import av.error
import fsspec
import numpy as np
from av.stream import Disposition
from av.video.reformatter import VideoReformatter

from assynch.config import TimeBase, VideoFeatures
from assynch.errors import UserError

log = logging.getLogger(__name__)

# An input frame counts as shown at output time T if its pts <= T + this (timestamp rounding).
PTS_TOLERANCE_SEC = 1e-3
# Audio timestamps may jump by this much before we treat it as a gap (zeros) or an overlap.
AUDIO_GAP_TOLERANCE_SEC = 2e-3
# After this many undecodable packets a file counts as corrupt.
MAX_BAD_PACKETS = 32
# How far before start_sec a seek lands, so both streams have data from start_sec on.
SEEK_PREROLL_SEC = 3.0
# Seek only when it saves at least this much decoding.
SEEK_MIN_SEC = 10.0
# Audio held while waiting for the first video frame (which fixes t = 0) is capped at this.
MAX_AUDIO_BEFORE_VIDEO_SEC = 60.0
# With end_sec set and the video done, stop once video packets run this far past end_sec.
STOP_AFTER_END_SEC = 10.0
RESIZE_INTERPOLATION = "BILINEAR"

_CONTAINER_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (4, b"ftyp", "MP4/MOV"),
    (4, b"moov", "MP4/MOV"),
    (4, b"mdat", "MP4/MOV"),
    (4, b"free", "MP4/MOV"),
    (4, b"wide", "MP4/MOV"),
    (0, b"\x1a\x45\xdf\xa3", "Matroska/WebM"),
    (0, b"RIFF", "AVI/WAV"),
    (0, b"\x00\x00\x01\xba", "MPEG-PS"),
    (0, b"\x47", "MPEG-TS"),
    (0, b"OggS", "Ogg"),
    (0, b"FLV", "FLV"),
)


class DecodeError(UserError):
    """A media file that cannot be decoded; `reason` says why and what to do."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


class SourceNotFoundError(DecodeError):
    """The path or URL does not exist."""


class EmptyFileError(DecodeError):
    """The file has zero bytes."""


class NotAVideoError(DecodeError):
    """Not a media container, or a container without a video stream."""


class NoAudioError(DecodeError):
    """The video has no (decodable) audio stream but audio is required."""


class CorruptFileError(DecodeError):
    """The container opens but its data cannot be decoded."""


class TruncatedFileError(CorruptFileError):
    """The file looks like a media container but ends too early to be read (cut off)."""


@dataclass(frozen=True)
class MediaInfo:
    """What the container says about a file, before decoding."""

    source: str
    container_format: str
    video_codec: str
    audio_codec: str | None
    width: int
    height: int
    average_fps: float
    video_duration_sec: float | None
    audio_duration_sec: float | None
    container_duration_sec: float | None
    audio_channels: int
    audio_sample_rate: int
    first_video_pts_sec: float | None
    first_audio_pts_sec: float | None
    av_version: str

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None


@dataclass(frozen=True)
class DecodedChunk:
    """A piece of the decoded run. Chunks are in time order and contiguous per stream."""

    frames: np.ndarray  # uint8 (n, crop, crop, 3) RGB; frame i of the run is at i / fps
    first_frame: int
    audio: np.ndarray  # float32 (m,) mono; sample j of the run is at j / sample_rate
    first_sample: int
    padded_samples: int  # zeros inserted into this chunk's audio (late audio start or gaps)
    info: MediaInfo

    @property
    def stop_frame(self) -> int:
        return self.first_frame + int(self.frames.shape[0])

    @property
    def stop_sample(self) -> int:
        return self.first_sample + int(self.audio.shape[0])


@dataclass(frozen=True)
class DecodedMedia:
    """A whole (short) decoded run, both streams trimmed to their common duration."""

    frames: np.ndarray
    audio: np.ndarray
    info: MediaInfo
    first_frame: int
    first_sample: int
    padded_samples: int


# ---------------------------------------------------------------------------------------------
# Opening


def _is_remote(source: str) -> bool:
    return "://" in source and not source.startswith("file://")


def _sniff_container(head: bytes) -> str | None:
    for offset, magic, name in _CONTAINER_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return name
    return None


@contextlib.contextmanager
def _open_container(
    source: str, storage_options: dict[str, Any] | None
) -> Iterator[av.container.InputContainer]:
    with contextlib.ExitStack() as stack:
        if _is_remote(source):
            try:
                handle = stack.enter_context(fsspec.open(source, "rb", **(storage_options or {})))
            except FileNotFoundError:
                raise SourceNotFoundError(
                    source, "no such object; check the URL and the storage credentials/endpoint"
                ) from None
            head = handle.read(16)
            handle.seek(0)
            target: Any = handle
        else:
            path = source.removeprefix("file://")
            if not os.path.isfile(path):
                raise SourceNotFoundError(source, "no such file; check the path")
            with open(path, "rb") as probe_handle:
                head = probe_handle.read(16)
            target = path
        if not head:
            raise EmptyFileError(source, "the file is empty (0 bytes); re-download or re-export it")
        try:
            container = stack.enter_context(av.open(target, "r", metadata_errors="ignore"))
        except av.error.FFmpegError as exc:
            raise _open_error(source, head, exc) from None
        if _video_stream(container) is None:
            raise NotAVideoError(
                source,
                f"the {container.format.name} file has no video stream; pass a video file",
            )
        yield container


def _open_error(source: str, head: bytes, exc: Exception) -> DecodeError:
    kind = _sniff_container(head)
    if kind is None:
        return NotAVideoError(
            source,
            f"not a video file (FFmpeg cannot read it: {exc}); pass an MP4/MKV/MOV video",
        )
    return TruncatedFileError(
        source,
        f"looks like {kind} but cannot be opened ({exc}); the file is probably cut off or "
        "corrupt, re-download or re-export it",
    )


# ---------------------------------------------------------------------------------------------
# Probing


def _video_stream(container: av.container.InputContainer) -> Any:
    """The first real video stream (cover art / thumbnails are video streams too)."""
    pictures = Disposition.attached_pic | Disposition.timed_thumbnails
    for stream in container.streams.video:
        if not stream.disposition & pictures:
            return stream
    return None


def _audio_stream(container: av.container.InputContainer) -> Any:
    return container.streams.audio[0] if container.streams.audio else None


def _seconds(value: int | None, time_base: Any) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


def _media_info(source: str, container: av.container.InputContainer) -> MediaInfo:
    video = _video_stream(container)
    audio = _audio_stream(container)
    rate = video.average_rate or video.guessed_rate or video.base_rate
    container_duration = (
        container.duration / av.time_base if container.duration is not None else None
    )
    return MediaInfo(
        source=source,
        container_format=container.format.name,
        video_codec=video.codec_context.name,
        audio_codec=audio.codec_context.name if audio is not None else None,
        width=video.codec_context.width,
        height=video.codec_context.height,
        average_fps=float(rate) if rate else 0.0,
        video_duration_sec=_seconds(video.duration, video.time_base),
        audio_duration_sec=_seconds(audio.duration, audio.time_base) if audio else None,
        container_duration_sec=container_duration,
        audio_channels=audio.codec_context.layout.nb_channels if audio is not None else 0,
        audio_sample_rate=audio.codec_context.sample_rate if audio is not None else 0,
        first_video_pts_sec=_seconds(video.start_time, video.time_base),
        first_audio_pts_sec=_seconds(audio.start_time, audio.time_base) if audio else None,
        av_version=av.__version__,
    )


def probe(source: str, storage_options: dict[str, Any] | None = None) -> MediaInfo:
    """Read the container header of a local path or fsspec URL; decodes nothing."""
    with _open_container(source, storage_options) as container:
        return _media_info(source, container)


# ---------------------------------------------------------------------------------------------
# Video: pick output frames by timestamp, convert only the picked ones


def resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) after scaling so that the shorter side has `short_side` pixels."""
    if width <= height:
        return short_side, max(short_side, int(round(height * short_side / width)))
    return max(short_side, int(round(width * short_side / height))), short_side


class _FrameConverter:
    def __init__(self, video: VideoFeatures) -> None:
        self.short_side = video.short_side
        self.crop = video.crop
        # One reformatter for the whole run: swscale keeps its context (a fresh one per frame
        # costs several times the conversion itself).
        self.reformatter = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        width, height = resized_size(frame.width, frame.height, self.short_side)
        rgb = self.reformatter.reformat(
            frame, width=width, height=height, format="rgb24", interpolation=RESIZE_INTERPOLATION
        ).to_ndarray()
        top, left = (height - self.crop) // 2, (width - self.crop) // 2
        return rgb[top : top + self.crop, left : left + self.crop]


class _FramePicker:
    """Turns input frames (with times relative to t0) into output frames at `fps`."""

    def __init__(
        self, fps: float, first_index: int, stop_index: int | None, convert: _FrameConverter
    ) -> None:
        self.fps = fps
        self.next_index = first_index
        self.stop_index = stop_index
        self.convert = convert
        self.previous: av.VideoFrame | None = None
        self.previous_time = 0.0
        self.previous_rgb: np.ndarray | None = None
        self.last_interval: float | None = None

    @property
    def done(self) -> bool:
        return self.stop_index is not None and self.next_index >= self.stop_index

    def _emit_until(self, limit_sec: float, out: list[np.ndarray]) -> None:
        """Emit `previous` for every output time < limit_sec."""
        while not self.done and self.next_index / self.fps < limit_sec - PTS_TOLERANCE_SEC:
            if self.previous_rgb is None:
                assert self.previous is not None
                self.previous_rgb = self.convert(self.previous)
            out.append(self.previous_rgb)
            self.next_index += 1

    def push(self, frame: av.VideoFrame, time_sec: float, out: list[np.ndarray]) -> None:
        if self.previous is None:
            # Before the first input frame there is nothing to show; the first one is nearest.
            self.previous, self.previous_time = frame, time_sec
            self._emit_until(time_sec, out)
            return
        if time_sec <= self.previous_time:
            return  # a duplicate or out-of-order timestamp: keep the earlier frame
        self._emit_until(time_sec, out)
        self.last_interval = time_sec - self.previous_time
        self.previous, self.previous_time, self.previous_rgb = frame, time_sec, None

    def finish(self, fallback_interval: float, out: list[np.ndarray]) -> float:
        """Emit the last input frame for the rest of its duration; returns the video end time."""
        if self.previous is None:
            return 0.0
        duration = 0.0
        if self.previous.duration and self.previous.time_base is not None:
            duration = float(self.previous.duration * self.previous.time_base)
        if duration <= 0:
            duration = self.last_interval or fallback_interval
        end = self.previous_time + duration
        self._emit_until(end, out)
        return end


# ---------------------------------------------------------------------------------------------
# Audio: average channels, resample, place on the output sample grid


def _frame_to_float(frame: av.AudioFrame) -> np.ndarray:
    """(channels, samples) float32 in [-1, 1] from any FFmpeg sample format."""
    array = frame.to_ndarray()
    channels = frame.layout.nb_channels
    if not frame.format.is_planar:
        array = array.reshape(-1, channels).T
    name = frame.format.name.rstrip("p")
    if name == "s16":
        return array.astype(np.float32) / 32768.0
    if name == "s32":
        return (array.astype(np.float64) / 2147483648.0).astype(np.float32)
    if name == "u8":
        return (array.astype(np.float32) - 128.0) / 128.0
    if name == "s64":
        return (array.astype(np.float64) / 9.223372036854776e18).astype(np.float32)
    return array.astype(np.float32, copy=False)


class _AudioAssembler:
    """Mono audio at `sample_rate`, placed so that output sample j plays at j / sample_rate."""

    def __init__(self, sample_rate: int, first_index: int, stop_index: int | None) -> None:
        self.sample_rate = sample_rate
        self.next_index = first_index  # next output index to emit
        self.stop_index = stop_index
        self.position: int | None = None  # output index of the next resampled sample
        self.input_rate = 0
        self.input_expected: float | None = None  # input time (s) where the next frame starts
        self.resampler: av.AudioResampler | None = None
        self.padded = 0  # zeros emitted: before a late audio start, and in timestamp gaps

    @property
    def done(self) -> bool:
        return self.stop_index is not None and self.next_index >= self.stop_index

    def push(self, frame: av.AudioFrame, time_sec: float | None, out: list[np.ndarray]) -> None:
        if self.done:
            return
        mono = _frame_to_float(frame).mean(axis=0)
        if self.resampler is None or frame.sample_rate != self.input_rate:
            self._start(frame.sample_rate, time_sec or 0.0, out)
        elif time_sec is not None and self.input_expected is not None:
            drift = time_sec - self.input_expected
            if drift > AUDIO_GAP_TOLERANCE_SEC:
                gap = int(round(drift * self.input_rate))
                self.padded += int(round(gap * self.sample_rate / self.input_rate))
                self.input_expected += gap / self.input_rate
                self._resample(np.zeros(gap, dtype=np.float32), out)
            elif drift < -AUDIO_GAP_TOLERANCE_SEC:
                mono = mono[int(round(-drift * self.input_rate)) :]
        if self.input_expected is not None:
            self.input_expected += mono.shape[0] / self.input_rate
        self._resample(mono, out)

    def _start(self, input_rate: int, time_sec: float, out: list[np.ndarray]) -> None:
        if self.resampler is not None:
            self.finish(out)  # the sample rate changed mid-stream: flush and start again
        self.input_rate = input_rate
        self.input_expected = time_sec
        self.resampler = av.AudioResampler(format="flt", layout="mono", rate=self.sample_rate)
        if self.position is None:
            self.position = int(round(time_sec * self.sample_rate))

    def _resample(self, mono: np.ndarray, out: list[np.ndarray]) -> None:
        if mono.shape[0] == 0:
            return
        assert self.resampler is not None
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(mono[None, :]), format="flt", layout="mono"
        )
        frame.sample_rate = self.input_rate
        for resampled in self.resampler.resample(frame):
            self._place(resampled.to_ndarray()[0], out)

    def _place(self, samples: np.ndarray, out: list[np.ndarray]) -> None:
        assert self.position is not None
        start = self.position
        self.position += samples.shape[0]
        if start > self.next_index:
            gap = start - self.next_index
            if self.stop_index is not None:
                gap = min(gap, self.stop_index - self.next_index)
            out.append(np.zeros(gap, dtype=np.float32))
            self.padded += gap
            self.next_index += gap
        skip = self.next_index - start
        stop = samples.shape[0]
        if self.stop_index is not None:
            stop = min(stop, self.stop_index - start)
        if stop > skip:
            out.append(samples[skip:stop])
            self.next_index = start + stop

    def finish(self, out: list[np.ndarray]) -> None:
        if self.resampler is None:
            return
        for resampled in self.resampler.resample(None):
            self._place(resampled.to_ndarray()[0], out)
        self.resampler = None


# ---------------------------------------------------------------------------------------------
# The streaming pass


class _ChunkBuffer:
    """Collects frames and audio and cuts them into chunks of about `chunk_sec`."""

    def __init__(self, time: TimeBase, chunk_sec: float, first_frame: int, first_sample: int):
        self.chunk_frames = max(1, int(round(chunk_sec * time.fps)))
        self.chunk_samples = max(1, int(round(chunk_sec * time.sample_rate)))
        self.frames: list[np.ndarray] = []
        self.audio: list[np.ndarray] = []
        self.audio_count = 0
        self.first_frame = first_frame
        self.first_sample = first_sample
        self.padded_pending = 0

    def ready(self, video_done: bool, audio_done: bool) -> bool:
        enough_video = len(self.frames) >= self.chunk_frames or video_done
        enough_audio = self.audio_count >= self.chunk_samples or audio_done
        overflow = (
            len(self.frames) >= 4 * self.chunk_frames
            or self.audio_count >= 4 * self.chunk_samples
        )
        has_data = bool(self.frames) or self.audio_count > 0
        return has_data and ((enough_video and enough_audio) or overflow)

    def take(self, crop: int, padded_total: int, info: MediaInfo) -> DecodedChunk:
        frame_count = min(len(self.frames), self.chunk_frames)
        frames = (
            np.stack(self.frames[:frame_count])
            if frame_count
            else np.zeros((0, crop, crop, 3), dtype=np.uint8)
        )
        del self.frames[:frame_count]
        audio = self._take_audio(min(self.audio_count, self.chunk_samples))
        chunk = DecodedChunk(
            frames=frames,
            first_frame=self.first_frame,
            audio=audio,
            first_sample=self.first_sample,
            padded_samples=padded_total - self.padded_pending,
            info=info,
        )
        self.padded_pending = padded_total
        self.first_frame += frame_count
        self.first_sample += audio.shape[0]
        return chunk

    def _take_audio(self, count: int) -> np.ndarray:
        if count == 0:
            return np.zeros(0, dtype=np.float32)
        joined = np.concatenate(self.audio) if len(self.audio) > 1 else self.audio[0]
        taken, rest = joined[:count].copy(), joined[count:]
        self.audio = [rest] if rest.shape[0] else []
        self.audio_count = rest.shape[0]
        return taken

    def add_audio(self, pieces: list[np.ndarray]) -> None:
        for piece in pieces:
            self.audio.append(piece)
            self.audio_count += piece.shape[0]
        pieces.clear()


def _first_video_time(container: av.container.InputContainer, source: str) -> float:
    """Presentation time (s) of the first decodable video frame, by decoding from the start."""
    stream = _video_stream(container)
    for frame in _decode_stream_frames(container, stream, source):
        if frame.pts is not None:
            return float(frame.pts * frame.time_base)
    raise CorruptFileError(source, "no video frame could be decoded; re-download or re-export it")


def _decode_stream_frames(
    container: av.container.InputContainer, stream: Any, source: str
) -> Iterator[Any]:
    bad = 0
    for packet in container.demux(stream):
        try:
            yield from packet.decode()
        except av.error.FFmpegError as exc:
            bad += 1
            if bad > MAX_BAD_PACKETS:
                raise CorruptFileError(
                    source, f"too many undecodable packets ({exc}); re-download or re-export it"
                ) from None


@dataclass(frozen=True)
class _Span:
    """Output indices of a decode span [start_sec, end_sec): frames at fps, samples at the rate.

    Index i of a stream plays at i / rate; the span starts at the first index at or after
    start_sec and stops before the first index at or after end_sec (None: to the end).
    """

    first_frame: int
    first_sample: int
    stop_frame: int | None
    stop_sample: int | None

    @classmethod
    def of(cls, time: TimeBase, start_sec: float, end_sec: float | None) -> _Span:
        def index(seconds: float, rate: float) -> int:
            return math.ceil(seconds * rate - 1e-6)

        return cls(
            first_frame=index(start_sec, time.fps),
            first_sample=index(start_sec, time.sample_rate),
            stop_frame=None if end_sec is None else index(end_sec, time.fps),
            stop_sample=None if end_sec is None else index(end_sec, time.sample_rate),
        )


def _check_decode_request(
    source: str, start_sec: float, end_sec: float | None, chunk_sec: float
) -> None:
    if start_sec < 0 or (end_sec is not None and end_sec <= start_sec):
        raise ValueError(
            f"iter_decode({source}): need 0 <= start_sec < end_sec, got {start_sec}, {end_sec}"
        )
    if chunk_sec <= 0:
        raise ValueError(f"iter_decode({source}): chunk_sec must be > 0, got {chunk_sec}")


class _DecodeRun:
    """The state of one streaming pass: which streams, the time origin, and the three stages
    (frame picker, audio assembler, chunk buffer) that decoded frames go through."""

    def __init__(
        self,
        source: str,
        container: av.container.InputContainer,
        *,
        time: TimeBase,
        video: VideoFeatures,
        span: _Span,
        end_sec: float | None,
        chunk_sec: float,
        require_audio: bool,
        decoder_threads: int,
    ) -> None:
        self.source = source
        self.container = container
        self.time = time
        self.video = video
        self.end_sec = end_sec
        self.require_audio = require_audio
        self.info = _media_info(source, container)
        self.video_stream = _video_stream(container)
        self.audio_stream = _audio_stream(container)
        if self.audio_stream is None and require_audio:
            raise NoAudioError(
                source,
                "the video has no audio stream; sync detection needs sound (skip this video)",
            )
        self.video_stream.thread_type = "AUTO"
        self.video_stream.codec_context.thread_count = decoder_threads
        self.streams = [self.video_stream] + (
            [self.audio_stream] if self.audio_stream is not None else []
        )
        self.origin: float | None = None  # container time of the first video frame (t = 0)
        self.picker = _FramePicker(
            time.fps, span.first_frame, span.stop_frame, _FrameConverter(video)
        )
        self.assembler = _AudioAssembler(time.sample_rate, span.first_sample, span.stop_sample)
        self.buffer = _ChunkBuffer(time, chunk_sec, span.first_frame, span.first_sample)
        self.pending_audio: list[tuple[av.AudioFrame, float | None]] = []  # before the origin
        self.pending_sec = 0.0
        self.audio_out: list[np.ndarray] = []
        self.bad_packets = 0
        self.audio_frames_seen = 0

    @property
    def audio_done(self) -> bool:
        return self.audio_stream is None or self.assembler.done

    def seek_near(self, start_sec: float) -> None:
        """Jump close to a late start instead of decoding everything before it."""
        if start_sec < SEEK_MIN_SEC:
            return
        self.origin = _first_video_time(self.container, self.source)
        target = self.origin + start_sec - SEEK_PREROLL_SEC
        self.container.seek(int(target / self.video_stream.time_base), stream=self.video_stream)

    def packet_action(self, packet: av.Packet) -> str:
        """'stop' when nothing more is needed, 'skip' for a packet of a finished stream."""
        if self.picker.done and self.audio_done:
            return "stop"
        if packet.stream.type == "video" and self.picker.done:
            if self.origin is not None and _past(
                packet, self.origin, self.end_sec, STOP_AFTER_END_SEC
            ):
                return "stop"  # the audio ended before end_sec: do not read the rest of the file
            return "skip"
        if packet.stream.type == "audio" and self.assembler.done:
            return "skip"
        return "decode"

    def decode_packet(self, packet: av.Packet) -> None:
        try:
            decoded = packet.decode()
        except av.error.FFmpegError as exc:
            self.bad_packets += 1
            log.debug("%s: skipping an undecodable %s packet: %s", self.source,
                      packet.stream.type, exc)
            if self.bad_packets > MAX_BAD_PACKETS:
                raise CorruptFileError(
                    self.source,
                    f"more than {MAX_BAD_PACKETS} undecodable packets ({exc}); the file is "
                    "corrupt, re-download or re-export it",
                ) from None
            return
        for frame in decoded:
            if isinstance(frame, av.VideoFrame):
                self._add_video_frame(frame)
            else:
                self._add_audio_frame(frame)
        self.buffer.add_audio(self.audio_out)

    def _add_video_frame(self, frame: av.VideoFrame) -> None:
        if frame.pts is None:
            return
        if self.origin is None:
            self.origin = float(frame.pts * frame.time_base)
            for pending, when in self.pending_audio:
                self.assembler.push(pending, _minus(when, self.origin), self.audio_out)
            self.pending_audio.clear()
        self.picker.push(frame, float(frame.pts * frame.time_base) - self.origin,
                         self.buffer.frames)

    def _add_audio_frame(self, frame: av.AudioFrame) -> None:
        self.audio_frames_seen += 1
        when = float(frame.pts * frame.time_base) if frame.pts is not None else None
        if self.origin is not None:
            self.assembler.push(frame, _minus(when, self.origin), self.audio_out)
            return
        # Audio before the first video frame waits until the origin is known, within a bound.
        self.pending_audio.append((frame, when))
        self.pending_sec += frame.samples / max(frame.sample_rate, 1)
        if self.pending_sec > MAX_AUDIO_BEFORE_VIDEO_SEC:
            raise CorruptFileError(
                self.source,
                f"no video frame decodes within the first {MAX_AUDIO_BEFORE_VIDEO_SEC:g} s of "
                "audio; the video stream is corrupt or missing, re-download or re-export the "
                "file",
            )

    def ready_chunks(self) -> Iterator[DecodedChunk]:
        while self.buffer.ready(self.picker.done, self.audio_done):
            yield self.buffer.take(self.video.crop, self.assembler.padded, self.info)

    def finish(self) -> Iterator[DecodedChunk]:
        """Flush the last frame and the resampler, check what came out, yield the rest."""
        if self.origin is None:
            raise CorruptFileError(
                self.source, "no video frame could be decoded; the file is corrupt, re-download it"
            )
        info = self.info
        fallback = 1.0 / info.average_fps if info.average_fps > 0 else 1.0 / self.time.fps
        video_end = self.picker.finish(fallback, self.buffer.frames)
        self.assembler.finish(self.audio_out)
        self.buffer.add_audio(self.audio_out)
        if self.audio_stream is not None and self.audio_frames_seen == 0 and self.require_audio:
            raise NoAudioError(
                self.source,
                "the audio stream holds no decodable audio; sync detection needs sound "
                "(skip this video)",
            )
        self._warn_about(video_end)
        while self.buffer.frames or self.buffer.audio_count:
            yield self.buffer.take(self.video.crop, self.assembler.padded, info)

    def _warn_about(self, video_end: float) -> None:
        info = self.info
        header_end = (info.video_duration_sec or 0.0) - (info.first_video_pts_sec or 0.0)
        read_to_the_end = self.end_sec is None or self.end_sec >= header_end
        if info.video_duration_sec and read_to_the_end and video_end + 1.0 < header_end:
            log.warning(
                "%s: video data ends at %.2f s but the header says %.2f s (the container ends "
                "before its streams); using the decoded part",
                self.source, video_end, info.video_duration_sec,
            )
        if self.bad_packets:
            log.warning("%s: skipped %d undecodable packets", self.source, self.bad_packets)
        if self.assembler.padded:
            log.info(
                "%s: %.3f s of audio filled with zeros (audio starts late or has gaps)",
                self.source, self.assembler.padded / self.time.sample_rate,
            )


def iter_decode(
    source: str,
    *,
    time: TimeBase,
    video: VideoFeatures,
    start_sec: float = 0.0,
    end_sec: float | None = None,
    chunk_sec: float = 2.0,
    storage_options: dict[str, Any] | None = None,
    require_audio: bool = True,
    decoder_threads: int = 0,
) -> Iterator[DecodedChunk]:
    """Decode `source` once, in time order, as chunks of about `chunk_sec` seconds.

    Output frames cover video time [start_sec, end_sec) at `time.fps`; audio covers the same span
    at `time.sample_rate`, mono. Frames and audio of the run are each contiguous; near the end
    one stream may run longer than the other (use `decode_all` for trimmed output). Memory does
    not grow with the length of the video. `decoder_threads=0` lets FFmpeg choose.
    """
    _check_decode_request(source, start_sec, end_sec, chunk_sec)
    with _open_container(source, storage_options) as container:
        run = _DecodeRun(
            source, container, time=time, video=video, span=_Span.of(time, start_sec, end_sec),
            end_sec=end_sec, chunk_sec=chunk_sec, require_audio=require_audio,
            decoder_threads=decoder_threads,
        )
        run.seek_near(start_sec)
        for packet in container.demux(*run.streams):
            action = run.packet_action(packet)
            if action == "stop":
                break
            if action == "decode":
                run.decode_packet(packet)
                yield from run.ready_chunks()
        yield from run.finish()


def _past(packet: av.Packet, origin: float, end_sec: float | None, slack_sec: float) -> bool:
    if end_sec is None or packet.pts is None:
        return False
    return float(packet.pts * packet.time_base) - origin > end_sec + slack_sec


def _minus(value: float | None, origin: float) -> float | None:
    return None if value is None else value - origin


def decode_all(
    source: str,
    *,
    time: TimeBase,
    video: VideoFeatures,
    start_sec: float = 0.0,
    end_sec: float | None = None,
    storage_options: dict[str, Any] | None = None,
    require_audio: bool = True,
) -> DecodedMedia:
    """Decode a short clip into memory; frames and audio are trimmed to their common duration.

    Trimming: with D = min(frames / fps, samples / sample_rate), keep n = floor(D * fps) frames
    and round(n / fps * sample_rate) audio samples, so both cover exactly n / fps seconds.
    Without audio (require_audio=False and no audio stream) the frames are not trimmed.
    """
    frames: list[np.ndarray] = []
    audio: list[np.ndarray] = []
    info: MediaInfo | None = None
    padded = 0
    span = _Span.of(time, start_sec, end_sec)
    for chunk in iter_decode(
        source,
        time=time,
        video=video,
        start_sec=start_sec,
        end_sec=end_sec,
        storage_options=storage_options,
        require_audio=require_audio,
    ):
        frames.append(chunk.frames)
        audio.append(chunk.audio)
        padded += chunk.padded_samples
        info = chunk.info
    if info is None:
        info = probe(source, storage_options)
    all_frames = (
        np.concatenate(frames) if frames else np.zeros((0, video.crop, video.crop, 3), np.uint8)
    )
    all_audio = np.concatenate(audio) if audio else np.zeros(0, np.float32)
    if info.has_audio:
        common_sec = min(all_frames.shape[0] / time.fps, all_audio.shape[0] / time.sample_rate)
        frame_count = int(math.floor(common_sec * time.fps + 1e-6))
        all_frames = all_frames[:frame_count]
        all_audio = all_audio[: int(round(frame_count / time.fps * time.sample_rate))]
    return DecodedMedia(
        frames=all_frames,
        audio=all_audio,
        info=info,
        first_frame=span.first_frame,
        first_sample=span.first_sample,
        padded_samples=padded,
    )


# ---------------------------------------------------------------------------------------------
# A whole-file report (`assynch inspect`)


@dataclass(frozen=True)
class InspectReport:
    """What the container says and what a full decoding pass (as the pipeline runs it) got."""

    info: MediaInfo
    target_fps: float
    target_sample_rate: int
    frames_decoded: int
    audio_samples_decoded: int
    padded_audio_samples: int
    decode_wall_sec: float

    @property
    def decoded_video_sec(self) -> float:
        return self.frames_decoded / self.target_fps

    @property
    def decoded_audio_sec(self) -> float:
        return self.audio_samples_decoded / self.target_sample_rate

    def as_dict(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self.info),
            "target_fps": self.target_fps,
            "target_sample_rate": self.target_sample_rate,
            "frames_decoded": self.frames_decoded,
            "decoded_video_sec": round(self.decoded_video_sec, 6),
            "audio_samples_decoded": self.audio_samples_decoded,
            "decoded_audio_sec": round(self.decoded_audio_sec, 6),
            "padded_audio_sec": round(self.padded_audio_samples / self.target_sample_rate, 6),
            "decode_wall_sec": round(self.decode_wall_sec, 3),
        }


def inspect_media(
    source: str,
    *,
    time: TimeBase,
    video: VideoFeatures,
    storage_options: dict[str, Any] | None = None,
) -> InspectReport:
    """Decode the whole file with `iter_decode` (audio optional) and count what came out."""
    started = _clock()
    frames = samples = padded = 0
    info: MediaInfo | None = None
    for chunk in iter_decode(
        source, time=time, video=video, storage_options=storage_options, require_audio=False
    ):
        frames += chunk.frames.shape[0]
        samples += chunk.audio.shape[0]
        padded += chunk.padded_samples
        info = chunk.info
    return InspectReport(
        info=info if info is not None else probe(source, storage_options),
        target_fps=time.fps,
        target_sample_rate=time.sample_rate,
        frames_decoded=frames,
        audio_samples_decoded=samples,
        padded_audio_samples=padded,
        decode_wall_sec=_clock() - started,
    )
