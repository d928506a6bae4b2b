"""Log-mel features and per-segment mel cuts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from assynch.config import AudioFeatures, TimeBase
from assynch.media.features import (
    denormalise,
    log_mel,
    mel_transform,
    normalise_mel,
    normalised_log_mel,
    segment_mels,
    segment_pad_value,
)

AUDIO = AudioFeatures()
TIME = TimeBase()
MARGIN = 2.0
TOLERANCE_SEC = 0.04



# ---------------------------------------------------------------------------------------------
# Features


def test_log_mel_shape_and_normalisation() -> None:
    silence = np.zeros(16000, dtype=np.float32)
    mel = log_mel(silence, AUDIO, 16000)
    assert mel.shape == (128, 101)
    assert torch.allclose(mel, torch.full_like(mel, float(np.log(1e-6))))
    normalised = normalise_mel(mel, AUDIO)
    expected = (np.log(1e-6) - AUDIO.norm_mean) / (2 * AUDIO.norm_std)
    assert torch.allclose(normalised, torch.full_like(mel, float(expected)), atol=1e-5)
    assert torch.allclose(denormalise(normalised, AUDIO), mel, atol=1e-5)
    assert mel_transform(AUDIO, 16000) is mel_transform(AUDIO, 16000)


def test_log_mel_frame_j_is_centred_on_sample_j_hop() -> None:
    signal = np.zeros(16000, dtype=np.float32)
    signal[8000] = 1.0  # a click at 0.5 s
    mel = log_mel(signal, AUDIO, 16000)
    assert int(mel.sum(dim=0).argmax()) == 8000 // AUDIO.hop_length


def _per_segment_mel(audio: np.ndarray, start: int, samples: int) -> torch.Tensor:
    """Synchformer's way: mel of the segment alone, log, pad with 0.0 to 66, normalise."""
    mel = log_mel(audio[start : start + samples], AUDIO, 16000)
    mel = torch.nn.functional.pad(mel, (0, AUDIO.segment_mel_frames - mel.shape[-1]), value=0.0)
    return normalise_mel(mel, AUDIO)


def test_segment_mels_match_per_segment_computation_inside_the_segment() -> None:
    rng = np.random.default_rng(0)
    audio = (rng.normal(0, 0.1, 48000) * np.sin(np.arange(48000) / 300.0)).astype(np.float32)
    continuous = normalised_log_mel(audio, AUDIO, 16000)
    starts = [3200, 8320, 16000]
    cut = segment_mels(
        continuous,
        [s // AUDIO.hop_length for s in starts],
        audio_cfg=AUDIO,
        segment_samples=10240,
    )
    assert cut.shape == (3, 128, 66)
    for index, start in enumerate(starts):
        reference = _per_segment_mel(audio, start, 10240)
        # Frames 2..62 only see audio inside the segment: identical.
        torch.testing.assert_close(cut[index, :, 2:63], reference[:, 2:63], atol=1e-4, rtol=0)
        # The padding frame is Synchformer's padding, normalised.
        assert torch.all(cut[index, :, 65] == segment_pad_value(AUDIO))
        torch.testing.assert_close(cut[index, :, 65], reference[:, 65])
        # The edge frames see real neighbours here and reflected audio there.
        assert not torch.allclose(cut[index, :, 0], reference[:, 0], atol=1e-3)


def test_segment_mels_rejects_cuts_outside_the_mel() -> None:
    mel = torch.zeros(128, 100)
    with pytest.raises(ValueError, match="outside the mel of 100 frames"):
        segment_mels(mel, [50], audio_cfg=AUDIO, segment_samples=10240)


# ---------------------------------------------------------------------------------------------
# Windows and plans


