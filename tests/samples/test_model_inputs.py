"""Stream samples as model inputs, and the offset sign on a flash/beep clip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from media_files import ClipSpec, beep_onsets_sec, flash_frame_indices, write_clip

from assynch.config import AudioFeatures, TimeBase, VideoFeatures
from assynch.media.decode import DecodedMedia, decode_all
from assynch.media.features import (
    normalised_log_mel,
    segment_pad_value,
)
from assynch.samples.model_inputs import audio_segment_start_frames, stream_sample_to_model_inputs
from assynch.samples.offsets import offset_sec_to_class
from assynch.samples.plan import (
    SamplePlan,
    cut_stream_sample,
)

AUDIO = AudioFeatures()
TIME = TimeBase()
MARGIN = 2.0
TOLERANCE_SEC = 0.04

def _numbered_frames(count: int) -> np.ndarray:
    """Frame i is filled with the value i % 251, so indices can be read back."""
    values = (np.arange(count) % 251).astype(np.uint8)
    return np.broadcast_to(values[:, None, None, None], (count, 8, 8, 3)).copy()


def test_model_inputs_shapes_and_frame_positions() -> None:
    frames = _numbered_frames(540)
    mel = torch.arange(2561, dtype=torch.float32).expand(128, 2561)
    video = VideoFeatures(short_side=8, crop=8)
    video_tensor, audio_tensor = stream_sample_to_model_inputs(
        frames, mel, time=TIME, video=video, audio=AUDIO, audio_margin_sec=MARGIN,
        stored_offset_sec=0.4,
    )
    assert video_tensor.shape == (8, 14, 16, 3, 8, 8)
    assert audio_tensor.shape == (8, 14, 128, 66)
    for w, s, k in [(0, 0, 0), (3, 5, 7), (7, 13, 15)]:
        index = w * 60 + s * 8 + k
        expected = (index % 251 / 255.0 - 0.5) / 0.5
        assert torch.allclose(video_tensor[w, s, k], torch.tensor(expected))
        assert audio_tensor[w, s, 0, k] == 200 + w * 240 + s * 32 + k
    assert torch.all(audio_tensor[..., 65] == segment_pad_value(AUDIO))


def test_a_fresh_offset_shifts_the_audio_by_whole_mel_frames() -> None:
    frames = _numbered_frames(540)
    mel = torch.arange(2561, dtype=torch.float32).expand(128, 2561)
    video = VideoFeatures(short_side=8, crop=8)
    common = dict(time=TIME, video=video, audio=AUDIO, audio_margin_sec=MARGIN)
    _, stored = stream_sample_to_model_inputs(frames, mel, stored_offset_sec=0.4, **common)
    for fresh, shift in [(1.0, 60), (-1.6, -200), (2.4, 200)]:
        _, moved = stream_sample_to_model_inputs(
            frames, mel, stored_offset_sec=0.4, offset_sec=fresh, **common
        )
        assert torch.equal(moved[..., :65], stored[..., :65] + shift)
    starts = audio_segment_start_frames(TIME, AUDIO, audio_margin_sec=MARGIN, shift_sec=0.6)
    assert int(starts[0, 0]) == 260 and int(starts[7, 13]) == 260 + 7 * 240 + 13 * 32
    with pytest.raises(ValueError, match="more than the stored audio margin"):
        stream_sample_to_model_inputs(frames, mel, stored_offset_sec=0.4, offset_sec=-1.8, **common)


# ---------------------------------------------------------------------------------------------
# The sign, end to end on an encoded flash/beep clip

SIGN_TIME = TimeBase(windows_per_sample=2)  # samples of 7.2 s keep the clip short
SIGN_VIDEO = VideoFeatures(short_side=32, crop=32)
EVENT_SEC = 6.0


@pytest.fixture(scope="module")
def flash_beep(tmp_path_factory: pytest.TempPathFactory) -> DecodedMedia:
    path = write_clip(
        tmp_path_factory.mktemp("sign") / "flash_beep.mp4",
        ClipSpec(
            duration_sec=12.0, width=64, height=48, flash_times=(EVENT_SEC,),
            beep_times=(EVENT_SEC,),
        ),
    )
    return decode_all(str(path), time=SIGN_TIME, video=SIGN_VIDEO)


def _flash_sec_in_model_video(video_tensor: torch.Tensor) -> float:
    bright = video_tensor.mean(dim=(3, 4, 5)) > 0.5  # (W, S, F); white is 1.0 after norm
    times = [
        (w * 60 + s * SIGN_TIME.segment_stride_frames + k) / SIGN_TIME.fps
        for w, s, k in torch.nonzero(bright).tolist()
    ]
    return min(times)


def _beep_sec_in_model_audio(audio_tensor: torch.Tensor) -> float:
    band = audio_tensor[..., :65]  # (W, S, n_mels, 65) without padding
    loudest_bin = int(band.amax(dim=(0, 1, 3)).argmax())
    energy = band[:, :, loudest_bin, :]
    loud = energy > (energy.max() + energy.min()) / 2
    times = [
        w * SIGN_TIME.stream_hop_sec + s * 0.32 + j / 100.0
        for w, s, j in torch.nonzero(loud).tolist()
    ]
    return min(times)


@pytest.mark.parametrize(("offset_sec", "start_sec"), [(1.0, 1.4), (-0.6, 3.0), (0.0, 2.4)])
def test_sign_beep_sits_offset_seconds_before_the_flash(
    flash_beep: DecodedMedia, offset_sec: float, start_sec: float
) -> None:
    plan = SamplePlan("sign", start_sec, offset_sec_to_class(offset_sec, SIGN_TIME), offset_sec)
    frames, audio = cut_stream_sample(
        flash_beep.frames, flash_beep.audio, plan, time=SIGN_TIME, audio_margin_sec=MARGIN
    )
    assert frames.shape[0] == 180
    assert audio.shape[0] == (7.2 + 2 * MARGIN) * 16000
    flash_sec = flash_frame_indices(frames)[0] / SIGN_TIME.fps
    assert flash_sec == pytest.approx(EVENT_SEC - start_sec, abs=TOLERANCE_SEC)
    # The stored audio starts `MARGIN` before the sample's audio timeline.
    (beep_sec,) = [t - MARGIN for t in beep_onsets_sec(audio, 16000)]
    assert beep_sec == pytest.approx(flash_sec - offset_sec, abs=TOLERANCE_SEC)

    # The same through the model inputs, with the stored offset and with a fresh one.
    mel = normalised_log_mel(audio, AUDIO, 16000)
    for shown_offset in (offset_sec, offset_sec - 0.4 if offset_sec > 0 else offset_sec + 1.4):
        video_tensor, audio_tensor = stream_sample_to_model_inputs(
            frames, mel, time=SIGN_TIME, video=SIGN_VIDEO, audio=AUDIO, audio_margin_sec=MARGIN,
            stored_offset_sec=offset_sec, offset_sec=shown_offset,
        )
        model_flash = _flash_sec_in_model_video(video_tensor)
        model_beep = _beep_sec_in_model_audio(audio_tensor)
        assert model_flash == pytest.approx(flash_sec, abs=1e-6)
        assert model_beep == pytest.approx(model_flash - shown_offset, abs=TOLERANCE_SEC)


def test_cut_outside_the_decoded_media_is_refused(flash_beep: DecodedMedia) -> None:
    plan = SamplePlan("late", 6.0, offset_sec_to_class(0.0, SIGN_TIME), 0.0)
    with pytest.raises(ValueError, match="outside the 300 decoded frames"):
        cut_stream_sample(
            flash_beep.frames, flash_beep.audio, plan, time=SIGN_TIME, audio_margin_sec=MARGIN
        )


def test_decoded_flash_beep_clip_is_in_sync(flash_beep: DecodedMedia) -> None:
    assert flash_beep.frames.shape[0] == 300
    assert flash_frame_indices(flash_beep.frames) == [150]
    (beep,) = beep_onsets_sec(flash_beep.audio, 16000)
    assert beep == pytest.approx(EVENT_SEC, abs=0.005)
