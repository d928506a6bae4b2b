"""Audio features as in Synchformer/AST: log-mel (torchaudio), AST normalisation, per-segment cuts.

The mel is computed once on a continuous signal (center=True, so frame j is centred on sample
j * hop) and each segment's (n_mels, 66) input is cut out of it. Synchformer computes the mel per
0.64 s segment instead (65 frames, padded with log-mel 0.0 to 66, then normalised). The two agree
on every frame whose analysis window stays inside the segment; only the first two and the last
two of the 65 frames see real neighbouring audio here where Synchformer sees reflected audio.
See docs/DECODING.md.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torchaudio
from torch import Tensor

from assynch.config import AudioFeatures


@functools.lru_cache(maxsize=8)
def mel_transform(audio: AudioFeatures, sample_rate: int) -> torchaudio.transforms.MelSpectrogram:
    """The (cached) power mel spectrogram of `audio`'s settings."""
    transform = torchaudio.transforms.MelSpectrogram(
        sample_rate=sample_rate,
        n_fft=audio.n_fft,
        win_length=audio.win_length,
        hop_length=audio.hop_length,
        n_mels=audio.n_mels,
        center=True,
    )
    transform.eval()
    return transform


def _as_tensor(audio: np.ndarray | Tensor) -> Tensor:
    signal = torch.as_tensor(audio)
    if signal.dtype != torch.float32:
        signal = signal.to(torch.float32)
    if signal.ndim != 1:
        raise ValueError(
            f"log_mel expects mono audio of shape (samples,), got {tuple(signal.shape)}"
        )
    return signal


def log_mel(audio: np.ndarray | Tensor, audio_cfg: AudioFeatures, sample_rate: int) -> Tensor:
    """log(mel + eps) of a continuous mono signal: (n_mels, 1 + samples // hop), not normalised."""
    signal = _as_tensor(audio)
    if signal.shape[0] == 0:
        return torch.zeros(audio_cfg.n_mels, 0)
    with torch.no_grad():
        mel = mel_transform(audio_cfg, sample_rate)(signal)
    return torch.log(mel + audio_cfg.log_eps)


def normalise_mel(log_mel_spec: Tensor, audio_cfg: AudioFeatures) -> Tensor:
    """AST's normalisation: (x - mean) / (2 * std)."""
    return (log_mel_spec - audio_cfg.norm_mean) / (2.0 * audio_cfg.norm_std)


def denormalise(normalised: Tensor, audio_cfg: AudioFeatures) -> Tensor:
    """Inverse of `normalise_mel`."""
    return normalised * (2.0 * audio_cfg.norm_std) + audio_cfg.norm_mean


def normalised_log_mel(
    audio: np.ndarray | Tensor, audio_cfg: AudioFeatures, sample_rate: int
) -> Tensor:
    """`normalise_mel(log_mel(audio))`: what shards store (as float16)."""
    return normalise_mel(log_mel(audio, audio_cfg, sample_rate), audio_cfg)


def segment_pad_value(audio_cfg: AudioFeatures) -> float:
    """Synchformer pads the log-mel with 0.0 before normalising; this is that value normalised."""
    return float((0.0 - audio_cfg.norm_mean) / (2.0 * audio_cfg.norm_std))


def segment_frames_computed(audio_cfg: AudioFeatures, segment_samples: int) -> int:
    """Mel frames of a segment of `segment_samples` (center=True): 65 for 0.64 s at 16 kHz."""
    return 1 + segment_samples // audio_cfg.hop_length


def segment_mels(
    normalised_mel: Tensor,
    segment_start_frames: Tensor | np.ndarray | list[int],
    *,
    audio_cfg: AudioFeatures,
    segment_samples: int,
) -> Tensor:
    """Per-segment mels (..., n_segments, n_mels, segment_mel_frames) cut from a continuous one.

    `segment_start_frames` holds, per segment, the continuous mel frame at its first audio sample
    (sample s -> frame s / hop). Each segment takes frames [start, start + 65) and is padded to
    `audio_cfg.segment_mel_frames` with `segment_pad_value` (Synchformer's padding).
    """
    starts = torch.as_tensor(np.asarray(segment_start_frames), dtype=torch.long)
    computed = segment_frames_computed(audio_cfg, segment_samples)
    target = audio_cfg.segment_mel_frames
    taken = min(computed, target)
    if starts.numel() and (
        int(starts.min()) < 0 or int(starts.max()) + taken > normalised_mel.shape[-1]
    ):
        raise ValueError(
            f"segment mel frames [{int(starts.min())}, {int(starts.max()) + taken}) fall outside "
            f"the mel of {normalised_mel.shape[-1]} frames; the stored audio is too short for "
            "these segments (check audio_margin_sec and the offset)"
        )
    index = starts[..., None] + torch.arange(taken)  # (..., S, taken)
    cut = normalised_mel[:, index]  # (n_mels, ..., S, taken)
    cut = cut.movedim(0, -2)  # (..., S, n_mels, taken)
    if taken < target:
        pad = torch.full(
            (*cut.shape[:-1], target - taken),
            segment_pad_value(audio_cfg),
            dtype=cut.dtype,
        )
        cut = torch.cat([cut, pad], dim=-1)
    return cut.contiguous()
