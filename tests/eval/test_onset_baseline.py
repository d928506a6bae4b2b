"""The non-learned onset cross-correlation peer: sign, exact recovery of known offsets from the
model inputs (cut in memory and read back from a real shard set), and its scores in the
project's metrics."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from media_files import ClipSpec, write_clip
from preprocess_support import preprocess_config

from assynch.config import AudioFeatures, TimeBase, VideoFeatures
from assynch.eval.metrics import offset_metrics, streaming_metrics
from assynch.eval.onset_baseline import (
    audio_onset_strength,
    correlate_split,
    predict_stream_sample,
    softmax,
    visual_change_energy,
    window_correlations,
)
from assynch.media.decode import decode_all
from assynch.media.features import normalised_log_mel
from assynch.preprocess.job import run_local
from assynch.samples.offsets import offset_sec_to_class
from assynch.samples.plan import SamplePlan, cut_stream_sample, sample_frames
from assynch.shards.format import SPLITS

MARGIN_SEC = 2.0
# Flash + beep pairs at irregular gaps (so no wrong lag lines up several pairs), on the 25 fps
# grid.
EVENTS_SEC = (
    1.2, 3.4, 4.6, 6.2, 6.8, 9.4, 11.0, 12.4, 14.8, 15.4, 17.6, 18.2, 20.6, 23.0, 24.2, 26.8, 27.4,
)


def test_energy_and_flux_follow_their_definitions() -> None:
    frames = np.zeros((4, 2, 2, 3), np.uint8)
    frames[2] = 30
    energy = visual_change_energy(frames)
    assert np.isnan(energy[0]) and energy[1:].tolist() == [0.0, 30.0, 30.0]
    mel = np.array([[0.0, 1.0, 0.5, 2.0], [0.0, 3.0, 0.0, 0.0]])
    assert audio_onset_strength(mel).tolist() == [0.0, 2.0, 0.0, 0.75]
    with pytest.raises(ValueError, match="uint8"):
        visual_change_energy(frames.astype(np.float32))


@pytest.mark.parametrize("offset_sec", [-1.4, 0.0, 0.6, 2.0])
def test_sign_a_sound_d_seconds_before_its_picture_is_offset_d(offset_sec: float) -> None:
    """Hand-made inputs: flashes at known frames, and in the stored mel (which starts at
    t + d - margin) a rise d seconds before each flash in window time."""
    time = TimeBase(windows_per_sample=2)
    audio = AudioFeatures(n_mels=8)
    rng = np.random.default_rng(0)
    frames = rng.integers(60, 64, size=(sample_frames(time), 6, 6, 3)).astype(np.uint8)
    mel_rate = time.sample_rate / audio.hop_length
    mel_frames = int(round((sample_frames(time) / time.fps + 2 * MARGIN_SEC) * mel_rate)) + 1
    mel = rng.normal(0.0, 0.01, size=(8, mel_frames))
    for flash in (20, 47, 96, 131, 170):
        frames[flash] = 250
        # Video time flash/fps shows audio time flash/fps - d (sample-relative), which sits at
        # mel frame (margin + flash/fps - d) * rate of the stored mel.
        onset = int(round((MARGIN_SEC + flash / time.fps - offset_sec) * mel_rate))
        mel[:, onset : onset + 12] += 3.0
    logits = predict_stream_sample(
        frames, mel, time=time, audio=audio, audio_margin_sec=MARGIN_SEC
    )
    assert logits.shape == (2, 21)
    wanted = offset_sec_to_class(offset_sec, time)
    assert int(np.argmax(logits[-1])) == wanted
    assert [int(np.argmax(row)) for row in logits] == [wanted, wanted]
    if offset_sec != 0.0:  # the mirrored offset is not what it finds
        assert logits[-1, wanted] > logits[-1, offset_sec_to_class(-offset_sec, time)] + 1.0


@pytest.fixture(scope="module")
def flash_beep_media(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("onset") / "flash_beep.mp4"
    write_clip(path, ClipSpec(
        duration_sec=22.0, fps=Fraction(25), width=96, height=72, seed=3,
        flash_times=EVENTS_SEC, beep_times=EVENTS_SEC,
    ))
    time = TimeBase(windows_per_sample=4)
    return time, decode_all(str(path), time=time, video=VideoFeatures(short_side=72, crop=64))


@pytest.mark.parametrize("context", ["margin", "window"])
def test_recovers_known_offsets_of_a_flash_beep_clip_exactly(flash_beep_media, context) -> None:
    time, media = flash_beep_media
    audio = AudioFeatures()
    offsets = [-2.0, -1.4, -0.6, -0.2, 0.0, 0.4, 1.2, 2.0]
    probabilities, targets = [], []
    for index, offset in enumerate(offsets):
        plan = SamplePlan(
            f"s{index}",
            start_sec=4.0 + 0.2 * index,
            offset_class=offset_sec_to_class(offset, time),
            offset_sec=offset,
        )
        frames, sound = cut_stream_sample(
            media.frames, media.audio, plan, time=time, audio_margin_sec=MARGIN_SEC
        )
        mel = normalised_log_mel(sound, audio, time.sample_rate).numpy().astype(np.float16)
        logits = predict_stream_sample(
            frames, mel, time=time, audio=audio, audio_margin_sec=MARGIN_SEC, context=context
        )
        assert int(np.argmax(logits[-1])) == plan.offset_class, (offset, context)
        probabilities.append(softmax(logits))
        targets.append(plan.offset_class)
    final = offset_metrics(np.stack(probabilities)[:, -1], targets)
    assert final["acc1"] == 1.0 and final["acc1_pm1"] == 1.0
    assert streaming_metrics(np.stack(probabilities), targets)[4]["acc1"] == 1.0


def test_scores_a_real_shard_set_from_the_stored_model_inputs(tmp_path: Path) -> None:
    """Shards made by the preprocessing job (offsets drawn by its plan): every sample's offset
    is recovered from the stored frames and mel, and the metrics score the result."""
    clips = tmp_path / "clips"
    clips.mkdir()
    for index in range(2):
        write_clip(clips / f"clip{index}.mp4", ClipSpec(
            duration_sec=30.0, fps=Fraction(25), width=96, height=72, seed=index,
            flash_times=EVENTS_SEC, beep_times=EVENTS_SEC,
        ))
    config = preprocess_config(str(clips), str(tmp_path / "shards"))
    run_local(config, isolate=False)
    results = [
        correlate_split(str(tmp_path / "shards"), split, config)
        for split in SPLITS
        if (tmp_path / "shards" / split).is_dir()
    ]
    targets = np.concatenate([r.targets for r in results])
    probabilities = np.concatenate([r.probabilities().numpy() for r in results])
    assert len(targets) >= 4 and len(set(targets.tolist())) >= 2
    assert probabilities.shape == (len(targets), config.time.windows_per_sample, 21)
    assert offset_metrics(probabilities[:, -1], targets)["acc1"] == 1.0


def test_flat_inputs_give_a_uniform_prediction() -> None:
    time = TimeBase(windows_per_sample=2)
    audio = AudioFeatures(n_mels=4)
    frames = np.full((sample_frames(time), 4, 4, 3), 90, np.uint8)
    mel = np.zeros((4, 1300))
    correlations = window_correlations(
        frames, mel, time=time, audio=audio, audio_margin_sec=MARGIN_SEC
    )
    assert np.all(correlations == 0.0)
    assert np.allclose(softmax(correlations), 1 / 21)


def test_another_visual_signal_replaces_the_frame_change_energy() -> None:
    time = TimeBase(windows_per_sample=2)
    audio = AudioFeatures(n_mels=4)
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, size=(sample_frames(time), 4, 4, 3)).astype(np.uint8)
    mel = rng.normal(size=(4, 1300))
    seen: list[int] = []

    def flat(window_frames: np.ndarray) -> np.ndarray:
        seen.append(window_frames.shape[0])
        return np.ones(window_frames.shape[0])

    assert np.any(window_correlations(
        frames, mel, time=time, audio=audio, audio_margin_sec=MARGIN_SEC
    ) != 0.0)
    flat_correlations = window_correlations(
        frames, mel, time=time, audio=audio, audio_margin_sec=MARGIN_SEC, visual=flat
    )
    assert np.all(flat_correlations == 0.0)
    assert seen == [time.window_frames] * time.windows_per_sample
