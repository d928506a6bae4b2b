"""The `hard` difficulty: contacts and reversals found again in decoded frames and in the mel at
their JSON times, global frame change that does not mark them, sparse events, the spec and the
command."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from assynch.cli import app
from assynch.config import AudioFeatures, TimeBase, VideoFeatures
from assynch.media.decode import decode_all
from assynch.media.features import log_mel
from assynch.synth import check as synth_check
from assynch.synth.clips import (
    EASY_KINDS,
    HARD_KINDS,
    SynthSpec,
    generate_clip,
    list_clips,
    plan_events,
)

ONE_FRAME_SEC = 0.04
MIN_FLUX_RATIO = 2.5
COLOUR_DISTANCE = 70.0  # a pixel belongs to the event's object when this close to its colour


def hard_spec(**fields) -> SynthSpec:
    return SynthSpec(difficulty="hard", width=160, height=120, **fields)


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive value exceeds a negative one), ties counting half."""
    pos, neg = np.asarray(positive)[:, None], np.asarray(negative)[None, :]
    return float((pos > neg).mean() + 0.5 * (pos == neg).mean())


# --- the spec -----------------------------------------------------------------------------------


def test_hard_changes_the_defaults_and_explicit_fields_win() -> None:
    easy, hard = SynthSpec(), SynthSpec(difficulty="hard")
    assert easy.difficulty == "easy" and easy.event_kinds == EASY_KINDS
    assert easy.event_interval_sec == 5.0
    assert hard.event_kinds == HARD_KINDS and hard.event_interval_sec > 4.8
    assert SynthSpec(difficulty="hard", event_interval_sec=9.0).event_interval_sec == 9.0
    assert SynthSpec.model_validate_json(hard.model_dump_json()) == hard
    # A sidecar written before difficulty existed reads as easy.
    legacy = easy.model_dump()
    legacy.pop("difficulty")
    assert SynthSpec.model_validate(legacy) == easy


def test_hard_events_are_sparser_than_one_per_window() -> None:
    spec = SynthSpec(difficulty="hard")
    gaps: list[float] = []
    kinds: set[str] = set()
    windows = empty = 0
    for seed in range(6):
        events = plan_events(600.0, seed, spec)
        kinds |= {event.kind for event in events}
        for event in events:
            if event.audio_visual:
                assert event.kind in HARD_KINDS
                assert event.onset_boxes is not None
                assert len(event.onset_boxes) == len(event.onsets_sec) >= 1
        firsts = np.array([event.time_sec for event in events if event.audio_visual])
        gaps.extend(np.diff(firsts))
        for start in np.arange(0.0, 600.0 - 4.8, 2.4):
            windows += 1
            empty += not np.any((firsts >= start) & (firsts < start + 4.8))
    assert kinds == {"bounce", "reverse", "silent_motion", "offscreen_sound"}
    assert np.mean(gaps) > 4.8 and min(gaps) >= spec.min_event_gap_sec - 1e-9
    assert empty / windows > 0.35  # more than a third of the windows see no event start


# --- the events, found again ----------------------------------------------------------------


def object_distance_track(
    frames: np.ndarray, box: tuple[int, int, int, int], color: tuple[int, int, int]
) -> np.ndarray:
    """Per frame, the distance from the centroid of the object's pixels (its colour) around
    `box` to the box's centre (inf where none is seen)."""
    x, y, w, h = box
    reach = 2 * max(w, h)
    x0, y0 = max(0, x - reach), max(0, y - reach)
    region = frames[:, y0 : y + h + reach, x0 : x + w + reach].astype(np.float32)
    close = np.linalg.norm(region - np.asarray(color, np.float32), axis=-1) < COLOUR_DISTANCE
    distances = np.full(frames.shape[0], np.inf)
    centre = np.array([y + h / 2 - y0, x + w / 2 - x0])
    for index in np.flatnonzero(close.reshape(close.shape[0], -1).sum(axis=1) >= 4):
        ys, xs = np.nonzero(close[index])
        distances[index] = np.hypot(ys.mean() + 0.5 - centre[0], xs.mean() + 0.5 - centre[1])
    return distances


DENSE_SEEDS = (1, 2, 3)


@pytest.fixture(scope="module")
def dense_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple]]:
    """Per level, 3 clips of 30 s at 160x120 with denser events than the defaults (mean gap
    2.5 s) so that a few clips hold enough onsets; everything else is the level's default."""
    folder = tmp_path_factory.mktemp("dense")
    clips: dict[str, list[tuple]] = {}
    for level in ("easy", "hard"):
        spec = SynthSpec(
            difficulty=level, width=160, height=120, event_interval_sec=2.5,
            min_event_gap_sec=1.0,
        )
        clips[level] = []
        for seed in DENSE_SEEDS:
            path = folder / f"{level}{seed}.mp4"
            clip = generate_clip(path, duration_sec=30.0, seed=seed, spec=spec)
            clips[level].append((path, clip))
    return clips


@pytest.mark.parametrize("index", range(len(DENSE_SEEDS)))
def test_contacts_are_in_the_frames_and_sounds_in_the_mel_within_one_frame(
    dense_clips, index
) -> None:
    """At each listed onset the object is closest to its contact place (it moved towards it
    and moves away after: a contact or a reversal), and the sound starts in the mel."""
    path, clip = dense_clips["hard"][index]
    spec = clip.spec
    assert {e.kind for e in clip.audio_visual_events()} <= set(HARD_KINDS)
    side = min(spec.width, spec.height)
    time_base = TimeBase()
    media = decode_all(str(path), time=time_base, video=VideoFeatures(short_side=side, crop=side))
    checked = 0
    for event in clip.audio_visual_events():
        assert event.onset_boxes is not None and event.color is not None
        for onset, box in zip(event.onsets_sec, event.onset_boxes, strict=True):
            decoded = synth_check.box_in_decoded_frames(box, spec.width, spec.height, side, side)
            frame = round(onset * time_base.fps)
            near = slice(frame - 6, frame + 7)
            distances = object_distance_track(media.frames[near], decoded, event.color)
            assert np.isfinite(distances[6]), (event.kind, onset, "object not seen at its onset")
            found = frame - 6 + int(np.argmin(distances))
            assert abs(found - frame) <= 1, (event.kind, onset, found / time_base.fps, distances)
            # It really moves: further away a few frames before and after.
            assert distances[2] > distances[6] + 2 and distances[10] > distances[6] + 2
            checked += 1

    audio_cfg = AudioFeatures()
    flux = synth_check.spectral_flux(log_mel(media.audio, audio_cfg, time_base.sample_rate).numpy())
    hop_sec = audio_cfg.hop_length / time_base.sample_rate
    threshold = MIN_FLUX_RATIO * float(np.median(flux))
    sound_onsets = synth_check.sound_onsets_sec(clip)
    for onset in sound_onsets:
        found_sec, strength = synth_check.find_audio_onset(flux, hop_sec, onset, search_sec=0.1)
        assert abs(found_sec - onset) <= ONE_FRAME_SEC + 1e-6, (onset, found_sec)
        assert strength >= threshold, (onset, strength, threshold)
    for peak_sec, strength in synth_check.flux_peaks(flux, hop_sec, threshold):
        if peak_sec >= 0.05:
            nearest = min(abs(peak_sec - onset) for onset in sound_onsets)
            assert nearest <= 0.1, f"unlisted sound at {peak_sec:.2f} s ({strength:.2f})"
    assert checked >= 10


def test_global_frame_change_marks_easy_events_but_not_hard_ones(dense_clips) -> None:
    """What the non-learned peer sees: the mean absolute frame difference of the model's 64 px
    frames. At easy it is higher at event onsets than elsewhere (AUC > 0.8); at hard an onset
    frame is no more likely to change than a frame 0.3 s or more from any onset (AUC within
    0.5 +- 0.12, pooled over the 3 clips)."""
    video = VideoFeatures(short_side=72, crop=64)
    results = {}
    for level, clips in dense_clips.items():
        onset_energy, other_energy = [], []
        for path, clip in clips:
            frames = decode_all(str(path), time=TimeBase(), video=video).frames
            energy = np.abs(np.diff(frames.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))
            energy = np.concatenate([[np.nan], energy])  # energy[i]: frame i - 1 -> i
            onsets = np.array([round(t * 25) for t in clip.audio_visual_onsets_sec()])
            far = np.ones(energy.size, dtype=bool)
            for frame in onsets:
                far[max(0, frame - 7) : frame + 8] = False
            far[0] = False
            onset_energy.extend(energy[onsets])
            other_energy.extend(energy[far])
        assert len(onset_energy) >= 40 and len(other_energy) >= 600
        results[level] = auc(np.array(onset_energy), np.array(other_energy))
    assert results["easy"] > 0.8, results
    assert abs(results["hard"] - 0.5) <= 0.12, results


# --- the command ----------------------------------------------------------------------------


def test_synth_command_writes_hard_clips_and_rejects_an_unknown_level(tmp_path) -> None:
    runner = CliRunner()
    out = tmp_path / "hard"
    result = runner.invoke(app, [
        "synth", "--out", str(out), "--count", "1", "--duration", "6", "--width", "96",
        "--height", "64", "--difficulty", "hard", "--seed", "1",
    ])
    assert result.exit_code == 0, result.output
    [(_, clip)] = list_clips(out)
    assert clip.spec.difficulty == "hard" and clip.spec.event_kinds == HARD_KINDS

    bad = runner.invoke(app, ["synth", "--out", str(tmp_path / "bad"), "--difficulty", "insane"])
    assert bad.exit_code == 2
    assert "--difficulty" in bad.output
    assert not (tmp_path / "bad").exists()
