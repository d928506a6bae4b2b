"""Log-mel features, stream-sample plans and cuts, model inputs, and the offset sign."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from media import ClipSpec, beep_onsets_sec, flash_frame_indices, write_clip

from assynch.config import AudioFeatures, TimeBase, VideoFeatures
from assynch.data.decode import DecodedMedia, decode_all
from assynch.data.features import (
    denormalise,
    log_mel,
    mel_transform,
    normalise_mel,
    normalised_log_mel,
    segment_mels,
    segment_pad_value,
)
from assynch.data.offsets import offset_sec_to_class
from assynch.data.windows import (
    SamplePlan,
    audio_segment_start_frames,
    cut_stream_sample,
    plan_stream_samples,
    sample_audio_range,
    sample_frame_range,
    segment_starts_sec,
    stream_sample_to_model_inputs,
    window_starts_sec,
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


def test_window_and_segment_starts() -> None:
    assert window_starts_sec(TIME) == pytest.approx([0, 2.4, 4.8, 7.2, 9.6, 12.0, 14.4, 16.8])
    assert segment_starts_sec(TIME) == pytest.approx([0.32 * s for s in range(14)])


def test_plans_are_deterministic_and_depend_on_video_and_seed() -> None:
    def plan(uid: str, seed: int) -> list[SamplePlan]:
        return plan_stream_samples(
            uid, 480.0, time=TIME, samples=6, seed=seed, audio_margin_sec=MARGIN
        )

    assert plan("v1", 0) == plan("v1", 0)
    assert plan("v1", 0) != plan("v1", 1)
    assert plan("v1", 0) != plan("v2", 0)
    assert len({p.sample_id for p in plan("v1", 0)}) == 6


@pytest.mark.parametrize("duration", [25.0, 25.6, 30.0, 47.0, 60.0, 131.3, 480.0, 3600.0])
def test_plans_stay_inside_the_media_and_do_not_overlap(duration: float) -> None:
    for seed in range(5):
        plans = plan_stream_samples(
            f"vid{duration}", duration, time=TIME, samples=8, seed=seed, audio_margin_sec=MARGIN
        )
        total_frames = int(duration * TIME.fps + 1e-6)
        total_samples = int(duration * TIME.sample_rate + 1e-6)
        for plan in plans:
            first, stop = sample_frame_range(plan, TIME)
            audio_first, audio_stop = sample_audio_range(plan, TIME, MARGIN)
            assert 0 <= first and stop <= total_frames
            assert 0 <= audio_first and audio_stop <= total_samples
            assert plan.offset_sec == pytest.approx((plan.offset_class - 10) * 0.2)
            assert abs(plan.start_sec * TIME.fps - round(plan.start_sec * TIME.fps)) < 1e-6
        ranges = sorted(sample_frame_range(plan, TIME) for plan in plans)
        for (_, stop), (first, _) in zip(ranges, ranges[1:], strict=False):
            assert first >= stop
    expected = min(8, int((duration - 21.6 - 4.0) * 25) // (540 + 100 + 1) + 1)
    assert len(plans) == (expected if duration >= 25.6 else 0)


def test_plans_spread_over_long_videos_and_cover_all_offsets() -> None:
    classes: list[int] = []
    for index in range(300):
        plans = plan_stream_samples(
            f"video{index}", 600.0, time=TIME, samples=8, seed=0, audio_margin_sec=MARGIN
        )
        assert plans[0].start_sec < 100 and plans[-1].start_sec > 480
        classes.extend(plan.offset_class for plan in plans)
    counts = np.bincount(classes, minlength=21)
    assert counts.min() > 0.6 * len(classes) / 21 and counts.max() < 1.4 * len(classes) / 21


def test_plans_need_a_margin_that_covers_the_offsets() -> None:
    with pytest.raises(ValueError, match="audio_margin_sec"):
        plan_stream_samples("v", 100.0, time=TIME, samples=2, seed=0, audio_margin_sec=1.0)


# ---------------------------------------------------------------------------------------------
# Model inputs


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
