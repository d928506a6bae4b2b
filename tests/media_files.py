"""Small test videos written with PyAV: known flashes (white frames) and beeps (1 kHz tones).

Everything here is deterministic, so a test can compute what the decoder must return. The picture
is a dark moving gradient with a little noise (so the encoder has real work to do); a flash makes
the whole frame white for one source frame. The sound is quiet noise; a beep is a 1 kHz sine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

BEEP_HZ = 1000.0
BEEP_AMPLITUDE = 0.5
NOISE_AMPLITUDE = 0.002
FLASH_VALUE = 255
BACKGROUND_MAX = 96


@dataclass(frozen=True)
class ClipSpec:
    """What to write. Times are in seconds on the source timeline (presentation timestamps)."""

    duration_sec: float = 3.0
    fps: Fraction = Fraction(30)
    width: int = 160
    height: int = 120
    pix_fmt: str = "yuv420p"  # libx264 needs yuv444p for odd sizes
    video_codec: str = "libx264"
    audio_codec: str | None = "aac"
    sample_rate: int = 48000
    layout: str = "stereo"
    video_start_sec: float = 0.0
    audio_start_sec: float = 0.0
    audio_duration_sec: float | None = None
    flash_times: tuple[float, ...] = ()
    beep_times: tuple[float, ...] = ()
    beep_sec: float = 0.12
    beep_channels: tuple[int, ...] | None = None
    frame_times: tuple[float, ...] | None = None
    audio_gap: tuple[float, float] | None = None  # (at_sec, length_sec): later audio pts move on
    container_format: str | None = None
    container_options: dict[str, str] = field(default_factory=dict)
    encoder_options: dict[str, str] = field(default_factory=lambda: {"preset": "ultrafast"})
    noise: float = 12.0
    seed: int = 0

    @property
    def source_frame_times(self) -> list[float]:
        """Presentation times of the written frames (constant rate unless frame_times is set)."""
        if self.frame_times is not None:
            return [self.video_start_sec + t for t in self.frame_times]
        count = int(round(self.duration_sec * self.fps))
        return [self.video_start_sec + float(i / self.fps) for i in range(count)]


def frame_picture(index: int, width: int, height: int, rng: np.random.Generator, noise: float) -> (
    np.ndarray
):
    """A dark gradient that moves a few pixels per frame, plus noise."""
    xs = (np.arange(width)[None, :] + 3 * index) % width
    ys = np.arange(height)[:, None]
    base = (xs * (BACKGROUND_MAX // 2) // max(width - 1, 1)) + (
        ys * (BACKGROUND_MAX // 2) // max(height - 1, 1)
    )
    picture = np.repeat(base[:, :, None], 3, axis=2).astype(np.float32)
    picture[:, :, 1] *= 0.8
    if noise:
        picture += rng.normal(0.0, noise, size=picture.shape)
    return np.clip(picture, 0, BACKGROUND_MAX).astype(np.uint8)


def clip_audio(spec: ClipSpec) -> np.ndarray:
    """The source audio, (channels, samples) float32, sample 0 at spec.audio_start_sec."""
    duration = spec.audio_duration_sec if spec.audio_duration_sec is not None else (
        spec.duration_sec
    )
    channels = av.AudioLayout(spec.layout).nb_channels
    count = int(round(duration * spec.sample_rate))
    rng = np.random.default_rng(spec.seed + 1)
    audio = rng.normal(0.0, NOISE_AMPLITUDE, size=(channels, count)).astype(np.float32)
    beep_channels = spec.beep_channels if spec.beep_channels is not None else range(channels)
    for beep in spec.beep_times:
        first = int(round((beep - spec.audio_start_sec) * spec.sample_rate))
        last = first + int(round(spec.beep_sec * spec.sample_rate))
        first, last = max(first, 0), min(last, count)
        if first >= last:
            continue
        t = np.arange(last - first) / spec.sample_rate
        tone = (BEEP_AMPLITUDE * np.sin(2 * np.pi * BEEP_HZ * t)).astype(np.float32)
        for channel in beep_channels:
            audio[channel, first:last] = tone
    return audio


def write_clip(path: Path | str, spec: ClipSpec | None = None) -> Path:
    """Encode `spec` into `path` (container from the suffix unless spec.container_format)."""
    spec = spec or ClipSpec()
    path = Path(path)
    rng = np.random.default_rng(spec.seed)
    with av.open(
        str(path), "w", format=spec.container_format, options=spec.container_options
    ) as container:
        video = container.add_stream(spec.video_codec, rate=spec.fps, options=spec.encoder_options)
        video.width, video.height = spec.width, spec.height
        video.pix_fmt = spec.pix_fmt
        vfr = spec.frame_times is not None
        video.codec_context.time_base = Fraction(1, 1000) if vfr else 1 / Fraction(spec.fps)
        audio_stream = None
        if spec.audio_codec is not None:
            audio_stream = container.add_stream(
                spec.audio_codec, rate=spec.sample_rate, layout=spec.layout
            )
        video_packets = _video_packets(video, spec, rng)
        audio_packets = _audio_packets(audio_stream, spec) if audio_stream is not None else []
        for packet in _interleave(video_packets, audio_packets):
            container.mux(packet)
    return path


def _video_packets(stream: av.VideoStream, spec: ClipSpec, rng: np.random.Generator) -> list:
    packets = []
    time_base = stream.codec_context.time_base
    flashes = {_nearest_index(spec.source_frame_times, t) for t in spec.flash_times}
    for index, when in enumerate(spec.source_frame_times):
        if index in flashes:
            picture = np.full((spec.height, spec.width, 3), FLASH_VALUE, dtype=np.uint8)
        else:
            picture = frame_picture(index, spec.width, spec.height, rng, spec.noise)
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
        frame.pts = int(round(when / time_base))
        frame.time_base = time_base
        packets.extend(stream.encode(frame))
    packets.extend(stream.encode(None))
    return packets


def _audio_packets(stream: av.AudioStream, spec: ClipSpec) -> list:
    samples = clip_audio(spec)
    frame_size = stream.codec_context.frame_size or 1024
    start = int(round(spec.audio_start_sec * spec.sample_rate))
    packets = []
    for first in range(0, samples.shape[1], frame_size):
        block = np.ascontiguousarray(samples[:, first : first + frame_size])
        frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=spec.layout)
        frame.sample_rate = spec.sample_rate
        frame.pts = start + first
        if spec.audio_gap is not None and first / spec.sample_rate >= spec.audio_gap[0]:
            frame.pts += int(round(spec.audio_gap[1] * spec.sample_rate))
        frame.time_base = Fraction(1, spec.sample_rate)
        packets.extend(stream.encode(frame))
    packets.extend(stream.encode(None))
    return packets


def _interleave(video: list, audio: list) -> list:
    """Packets in decode-timestamp order, as a real muxer would receive them."""

    def seconds(packet: av.Packet) -> float:
        stamp = packet.dts if packet.dts is not None else packet.pts
        return float((stamp or 0) * packet.time_base)

    return sorted([*video, *audio], key=seconds)


def _nearest_index(times: list[float], target: float) -> int:
    return int(np.argmin(np.abs(np.asarray(times) - target)))


def truncate_file(source: Path, target: Path, fraction: float) -> Path:
    """Copy the first `fraction` of the bytes of `source` to `target`."""
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


def flash_frame_indices(frames: np.ndarray, threshold: float = 200.0) -> list[int]:
    """Indices of decoded frames that are (almost) white."""
    means = frames.reshape(frames.shape[0], -1).mean(axis=1)
    return [int(i) for i in np.flatnonzero(means > threshold)]


def beep_onsets_sec(audio: np.ndarray, sample_rate: int, threshold: float = 0.1) -> list[float]:
    """Start times of 1 kHz beeps in mono audio, from a 2 ms envelope (first rising edge)."""
    block = max(sample_rate // 500, 1)
    usable = audio[: audio.shape[0] // block * block].reshape(-1, block)
    loud = np.abs(usable).max(axis=1) > threshold
    rising = np.flatnonzero(loud & ~np.concatenate([[False], loud[:-1]]))
    onsets = []
    for index in rising:
        samples = np.flatnonzero(np.abs(usable[index]) > threshold)
        onsets.append((index * block + int(samples[0])) / sample_rate)
    return onsets
