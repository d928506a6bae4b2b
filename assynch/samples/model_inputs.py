"""Stream samples as model inputs: (W, S, ...) video segments and per-segment log-mels (torch).

Offsets follow docs/DESIGN.md: positive d means the audio is early. The stored mel starts at
audio time t + d_stored - margin, so any offset within the margin is an exact re-cut.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from assynch.config import AudioFeatures, TimeBase, VideoFeatures
from assynch.media.features import normalised_log_mel, segment_mels
from assynch.samples.plan import sample_frames, segment_samples, window_hop_frames


def _video_segments(frames_u8: np.ndarray | Tensor, time: TimeBase, video: VideoFeatures) -> Tensor:
    frames = frames_u8 if isinstance(frames_u8, Tensor) else torch.as_tensor(np.asarray(frames_u8))
    return batch_video_segments(frames.unsqueeze(0), time, video)[0]


def batch_video_segments(frames_u8: Tensor, time: TimeBase, video: VideoFeatures) -> Tensor:
    """uint8 frames (B, T, H, W, 3) -> normalised segments (B, W, S, F, 3, H, W), on the frames'
    device (so a training step can send uint8 frames to the GPU and expand them there)."""
    needed = sample_frames(time)
    if frames_u8.ndim != 5 or frames_u8.shape[-1] != 3 or frames_u8.shape[1] < needed:
        raise ValueError(
            f"frames must be uint8 (T >= {needed}, H, W, 3) covering the stream sample, got "
            f"{tuple(frames_u8.shape[1:])}"
        )
    device = frames_u8.device
    first = segment_first_frames(
        time, torch.arange(time.windows_per_sample, device=device)[:, None],
        torch.arange(time.segments_per_window, device=device)[None, :],
    )
    index = first[..., None] + torch.arange(time.segment_frames, device=device)
    return _normalised(frames_u8[:, index], video)  # from (B, W, S, F, H, W, 3) uint8


def selected_video_segments(
    frames_u8: Tensor, time: TimeBase, video: VideoFeatures, stream: Tensor, window: Tensor,
    segment: Tensor,
) -> Tensor:
    """uint8 frames (B, T, H, W, 3) -> the normalised segments (M, F, 3, H, W) of segment
    `segment` of window `window` of stream `stream` (each (M,)): a few segments cut straight
    from many streams, without expanding every segment of each."""
    index = segment_first_frames(time, window, segment)[:, None] + torch.arange(
        time.segment_frames, device=frames_u8.device
    )
    return _normalised(frames_u8[stream[:, None], index], video)


def segment_first_frames(time: TimeBase, window: Tensor, segment: Tensor) -> Tensor:
    """Frame of a stream sample where segment `segment` of window `window` starts."""
    return window * window_hop_frames(time) + segment * time.segment_stride_frames


def _normalised(segments_u8: Tensor, video: VideoFeatures) -> Tensor:
    """(..., F, H, W, 3) uint8 -> (..., F, 3, H, W) float32, normalised for the model."""
    return (segments_u8.movedim(-1, -3).to(torch.float32) / 255.0 - video.mean) / video.std


def audio_segment_start_frames(
    time: TimeBase,
    audio: AudioFeatures,
    *,
    audio_margin_sec: float,
    shift_sec: float = 0.0,
) -> Tensor:
    """(W, S) continuous mel frame where each segment starts in a stored sample's mel.

    The stored mel starts at audio time t + d_stored - m; segment s of window w of offset d
    starts at t + w * hop + s * stride + d, i.e. mel frame (w * hop + s * stride + m + shift) *
    sample_rate / hop_length with shift = d - d_stored.
    """
    mel_rate = time.sample_rate / audio.hop_length  # 100 mel frames per second
    hop = int(round(window_hop_frames(time) / time.fps * mel_rate))
    stride = int(round(time.segment_stride_frames / time.fps * mel_rate))
    base = int(round(audio_margin_sec * mel_rate)) + int(round(shift_sec * mel_rate))
    windows = torch.arange(time.windows_per_sample) * hop
    segments = torch.arange(time.segments_per_window) * stride
    return base + windows[:, None] + segments[None, :]


def stream_sample_to_model_inputs(
    frames_u8: np.ndarray | Tensor,
    mel: Tensor | np.ndarray,
    *,
    time: TimeBase,
    video: VideoFeatures,
    audio: AudioFeatures,
    audio_margin_sec: float,
    stored_offset_sec: float,
    offset_sec: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Model inputs of one stored stream sample.

    `frames_u8` (T, H, W, 3) covers the sample from its start; `mel` (n_mels, F) is the
    normalised log-mel of the stored audio, which starts at t + stored_offset_sec - margin.
    Returns video (W, S, segment_frames, 3, H, W) normalised with video.mean/std and audio
    (W, S, n_mels, segment_mel_frames). `offset_sec` (default: the stored one) shows the sample
    with another offset, within the stored margin.
    """
    offset = stored_offset_sec if offset_sec is None else offset_sec
    shift = offset - stored_offset_sec
    if abs(shift) > audio_margin_sec + 1e-6:
        raise ValueError(
            f"offset {offset} s is {abs(shift):.3f} s from the stored offset {stored_offset_sec} "
            f"s, more than the stored audio margin of {audio_margin_sec} s; draw offsets within "
            f"+-{audio_margin_sec} s of the stored one"
        )
    mel_tensor = torch.as_tensor(np.asarray(mel) if not isinstance(mel, Tensor) else mel)
    if mel_tensor.ndim != 2 or mel_tensor.shape[0] != audio.n_mels:
        raise ValueError(
            f"mel must be (n_mels={audio.n_mels}, frames), got {tuple(mel_tensor.shape)}"
        )
    video_tensor = _video_segments(frames_u8, time, video)
    starts = audio_segment_start_frames(
        time, audio, audio_margin_sec=audio_margin_sec, shift_sec=shift
    )
    audio_tensor = segment_mels(
        mel_tensor.to(torch.float32),
        starts,
        audio_cfg=audio,
        segment_samples=segment_samples(time),
    )
    return video_tensor, audio_tensor


# Inference reads windows straight from a decoded video. Its audio margin only has to cover the
# STFT support around a segment's first and last mel frame (n_fft = 1024 samples, centred: 32 ms
# each side), so the mel frames the segments take equal those of a stored sample's mel.
INFERENCE_AUDIO_MARGIN_SEC = 0.04


def windows_audio_span(
    first_frame: int, windows: int, time: TimeBase, audio_margin_sec: float
) -> tuple[int, int]:
    """[first, stop) audio samples that `windows_to_model_inputs` needs for `windows`
    consecutive windows (hop `time.stream_hop_sec`) whose first one starts at `first_frame`."""
    span_frames = (windows - 1) * window_hop_frames(time) + time.window_frames
    start = int(round(first_frame / time.fps * time.sample_rate))
    stop = int(round((first_frame + span_frames) / time.fps * time.sample_rate))
    margin = int(round(audio_margin_sec * time.sample_rate))
    return start - margin, stop + margin


def windows_to_model_inputs(
    frames_u8: np.ndarray | Tensor,
    audio_samples: np.ndarray | Tensor,
    *,
    time: TimeBase,
    video: VideoFeatures,
    audio: AudioFeatures,
    audio_margin_sec: float = INFERENCE_AUDIO_MARGIN_SEC,
) -> tuple[Tensor, Tensor]:
    """Model inputs of consecutive windows of a video as it is (no offset applied): inference.

    `frames_u8` (T, H, W, 3) starts at the first window's first frame and covers whole windows
    (T >= (n - 1) * hop + window frames decides n); `audio_samples` is the mono audio of
    `windows_audio_span` (the same span plus `audio_margin_sec` each side). Exactly what
    training builds: the normalised log-mel of one continuous signal, segments cut with
    `stream_sample_to_model_inputs` as for a stored sample of n windows with offset 0.
    Returns video (n, S, 16, 3, H, W) and audio (n, S, n_mels, 66).
    """
    frames = np.asarray(frames_u8)
    hop = window_hop_frames(time)
    if frames.shape[0] < time.window_frames:
        raise ValueError(
            f"{frames.shape[0]} frames hold no whole window of {time.window_frames} frames"
        )
    windows = (frames.shape[0] - time.window_frames) // hop + 1
    first, stop = windows_audio_span(0, windows, time, audio_margin_sec)
    signal = torch.as_tensor(np.asarray(audio_samples))
    if signal.ndim != 1 or signal.shape[0] < stop - first:
        raise ValueError(
            f"audio must be mono with at least {stop - first} samples for {windows} windows and "
            f"a margin of {audio_margin_sec} s, got {tuple(signal.shape)}"
        )
    mel = normalised_log_mel(signal[: stop - first], audio, time.sample_rate)
    span_time = time.model_copy(update={"windows_per_sample": windows})
    return stream_sample_to_model_inputs(
        frames[: sample_frames(span_time)], mel, time=span_time, video=video, audio=audio,
        audio_margin_sec=audio_margin_sec, stored_offset_sec=0.0,
    )
