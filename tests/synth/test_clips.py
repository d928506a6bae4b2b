"""Synthetic egocentric clips: real MP4 files, their sidecars, and their events found again by
decoding them with the project decoder and features."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from assynch.cli import app
from assynch.config import AudioFeatures, TimeBase, VideoFeatures
from assynch.media.decode import DecodedMedia, decode_all
from assynch.media.features import log_mel
from assynch.synth import check as synth_check
from assynch.synth import clips as synth
from assynch.synth.clips import (
    AUDIO_VISUAL_KINDS,
    ClipEvents,
    SynthError,
    SynthSpec,
    generate_clip,
    generate_clips,
    list_clips,
    load_events,
    plan_events,
    sidecar_path,
)

ONE_FRAME_SEC = 0.04  # one frame at 25 fps: the largest allowed onset error
MIN_LUMINANCE_RISE = 30.0  # a visual onset: the box's mean luminance jumps by this much
MIN_FLUX_RATIO = 2.5  # an audio onset: spectral flux this many times the clip's median


def decode(path: Path, spec: SynthSpec) -> DecodedMedia:
    """Decode at 25 fps / 16 kHz (the project time base), keeping full resolution: the short
    side stays and the crop is the centred square, where audio-visual events happen."""
    side = min(spec.width, spec.height)
    return decode_all(str(path), time=TimeBase(), video=VideoFeatures(short_side=side, crop=side))


def frames_digest(media: DecodedMedia) -> str:
    return hashlib.sha256(np.ascontiguousarray(media.frames).tobytes()).hexdigest()


def check_events_in_frames_and_mel(path: Path, clip: ClipEvents) -> int:
    """Assert every listed onset is in the picture and in the mel within one frame, and that the
    mel holds no strong onset that is not listed. Returns how many onsets were checked."""
    spec = clip.spec
    time_base = TimeBase()
    media = decode(path, spec)
    side = min(spec.width, spec.height)
    checked = 0
    for event in synth_check.visual_events(clip):
        box = synth_check.box_in_decoded_frames(event.box, spec.width, spec.height, side, side)
        for onset in event.onsets_sec:
            found, rise = synth_check.find_visual_onset(
                media.frames, time_base.fps, box, onset, search_sec=0.12
            )
            assert abs(found - onset) <= ONE_FRAME_SEC + 1e-6, (path.name, event.kind, onset, found)
            assert rise >= MIN_LUMINANCE_RISE, (path.name, event.kind, onset, rise)
            checked += 1

    audio_cfg = AudioFeatures()
    flux = synth_check.spectral_flux(log_mel(media.audio, audio_cfg, time_base.sample_rate).numpy())
    hop_sec = audio_cfg.hop_length / time_base.sample_rate
    threshold = MIN_FLUX_RATIO * float(np.median(flux))
    sound_onsets = synth_check.sound_onsets_sec(clip)
    for onset in sound_onsets:
        found, strength = synth_check.find_audio_onset(flux, hop_sec, onset, search_sec=0.1)
        assert abs(found - onset) <= ONE_FRAME_SEC + 1e-6, (path.name, onset, found)
        assert strength >= threshold, (path.name, onset, strength, threshold)
        checked += 1
    for peak_sec, strength in synth_check.flux_peaks(flux, hop_sec, threshold):
        if peak_sec < 0.05:
            continue  # the first mel frames see the signal start, not a sound
        nearest = min((abs(peak_sec - onset) for onset in sound_onsets), default=np.inf)
        assert nearest <= 0.1, f"{path.name}: unlisted sound at {peak_sec:.2f} s ({strength:.2f})"
    return checked


# --- the files ---------------------------------------------------------------------------------


def test_fixture_clips_are_h264_aac_mp4_of_the_requested_format(synth_clips: Path) -> None:
    clips = list_clips(synth_clips)
    assert [path.name for path, _ in clips] == [f"synth_000{i}.mp4" for i in range(3)]
    for path, clip in clips:
        with av.open(str(path)) as container:
            assert "mp4" in container.format.name
            video, audio = container.streams.video[0], container.streams.audio[0]
            assert video.codec_context.name == "h264"
            assert (video.codec_context.width, video.codec_context.height) == (160, 120)
            assert video.average_rate == 25
            assert audio.codec_context.name == "aac"
            assert audio.codec_context.sample_rate == clip.spec.sample_rate
            assert sum(1 for _ in container.decode(video=0)) == 300
            assert container.duration / av.time_base == pytest.approx(12.0, abs=0.05)
        assert clip.num_frames == 300 and clip.duration_sec == pytest.approx(12.0)
        assert clip.video_file == path.name


def test_sidecar_lists_events_with_consistent_times_and_boxes(synth_clips: Path) -> None:
    for path, clip in list_clips(synth_clips):
        raw = json.loads(sidecar_path(path).read_text())
        assert {"schema_version", "seed", "spec", "events", "duration_sec"} <= set(raw)
        assert raw["spec"]["width"] == 160 and raw["set_seed"] == 7
        times = [event.time_sec for event in clip.events]
        assert times == sorted(times)
        for event in clip.events:
            assert event.frame == round(event.time_sec * clip.spec.fps)
            assert 0 < event.time_sec and event.time_sec + event.duration_sec < clip.duration_sec
            assert event.audio_visual == (event.kind in AUDIO_VISUAL_KINDS)
            if event.audio_visual:
                x, y, w, h = event.box
                assert 0 <= x and x + w <= 160 and 0 <= y and y + h <= 120 and w * h > 0
                assert len(event.onsets_sec) >= 1 and event.onsets_sec[0] == event.time_sec
            if event.kind == "silent_motion":
                assert event.sound is None and event.onsets_sec == ()
            if event.kind == "offscreen_sound":
                assert event.box is None and event.sound is not None


def test_same_seed_gives_the_same_clip_and_another_seed_another(tmp_path: Path) -> None:
    spec = SynthSpec(width=96, height=64, event_interval_sec=2.0, min_event_gap_sec=1.0)
    first = generate_clip(tmp_path / "a.mp4", duration_sec=8.0, seed=11, spec=spec)
    again = generate_clip(tmp_path / "b.mp4", duration_sec=8.0, seed=11, spec=spec)
    other = generate_clip(tmp_path / "c.mp4", duration_sec=8.0, seed=12, spec=spec)
    assert first.events == again.events and len(first.events) > 0
    assert other.events != first.events
    digests = [frames_digest(decode(tmp_path / name, spec)) for name in ("a.mp4", "b.mp4", "c.mp4")]
    assert digests[0] == digests[1] != digests[2]
    assert plan_events(8.0, 11, spec) == list(first.events)


# --- the events, found again in decoded frames and mel -----------------------------------------


def test_fixture_events_are_in_the_frames_and_the_mel_within_one_frame(synth_clips: Path) -> None:
    clips = list_clips(synth_clips)
    checked = sum(check_events_in_frames_and_mel(path, clip) for path, clip in clips)
    assert checked >= 6


@pytest.mark.parametrize("fps", [25.0, 30.0])
def test_every_event_kind_is_in_the_frames_and_the_mel_within_one_frame(
    tmp_path: Path, fps: float
) -> None:
    spec = SynthSpec(
        width=160,
        height=120,
        fps=fps,
        event_interval_sec=2.5,
        min_event_gap_sec=1.0,
        distractor_interval_sec=2.0,
    )
    path = tmp_path / "dense.mp4"
    clip = generate_clip(path, duration_sec=24.0, seed=1, spec=spec)
    assert {event.kind for event in clip.events} == {
        "impact",
        "appear",
        "rhythm",
        "silent_motion",
        "offscreen_sound",
    }
    assert check_events_in_frames_and_mel(path, clip) >= 20


def test_silent_motion_moves_pixels_without_a_sound(tmp_path: Path) -> None:
    spec = SynthSpec(
        width=96,
        height=64,
        event_kinds=("appear",),
        event_interval_sec=20.0,
        distractor_interval_sec=1.5,
        camera_motion=False,
        ambient_noise=False,
    )
    path = tmp_path / "quiet.mp4"
    clip = generate_clip(path, duration_sec=10.0, seed=5, spec=spec)
    assert {event.kind for event in clip.events} == {"silent_motion"}
    media = decode(path, spec)
    with av.open(str(path)) as container:  # full frames: sprites cross the whole width
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    changed = np.abs(np.diff(frames.astype(np.int16), axis=0)).max(axis=3) > 20
    moving = changed.reshape(changed.shape[0], -1).sum(axis=1) > 0  # frame i -> i + 1
    during = np.zeros_like(moving)
    for event in clip.events:
        first = event.frame - 1
        during[first : first + round(event.duration_sec * clip.spec.fps) + 1] = True
        sound = media.audio[
            round(event.time_sec * 16000) : round((event.time_sec + event.duration_sec) * 16000)
        ]
        assert np.abs(sound).max() < 1e-3
    # With a still camera, pixels change while a sprite crosses the view, and only then.
    assert moving[during].mean() > 0.8
    assert not moving[~during].any()


# --- sparsity ----------------------------------------------------------------------------------


def test_events_are_sparse_with_the_configured_mean_interval() -> None:
    spec = SynthSpec()
    gaps: list[float] = []
    kinds: set[str] = set()
    empty_windows = windows = distractors = 0
    stream_counts: list[int] = []
    for seed in range(6):
        events = plan_events(600.0, seed, spec)
        kinds |= {event.kind for event in events}
        distractors += sum(not event.audio_visual for event in events)
        onsets = np.array([event.time_sec for event in events if event.audio_visual])
        gaps.extend(np.diff(onsets))
        for start in np.arange(0.0, 600.0 - 4.8, 2.4):
            windows += 1
            empty_windows += not np.any((onsets >= start) & (onsets < start + 4.8))
        stream_counts.extend(
            int(np.sum((onsets >= start) & (onsets < start + 20.0)))
            for start in np.arange(0.0, 580.0, 20.0)
        )
    assert np.mean(gaps) == pytest.approx(spec.event_interval_sec, rel=0.12)
    assert min(gaps) >= spec.min_event_gap_sec - 1e-9
    assert kinds == {"impact", "appear", "rhythm", "silent_motion", "offscreen_sound"}
    assert distractors / (6 * 600.0) == pytest.approx(1 / spec.distractor_interval_sec, rel=0.25)
    assert 0.2 < empty_windows / windows < 0.6  # a single window often has no event
    assert np.mean(stream_counts) >= 3 and np.mean(np.array(stream_counts) >= 2) > 0.9

    slower = SynthSpec(event_interval_sec=10.0, min_event_gap_sec=2.0)
    slow_gaps = np.diff(
        [event.time_sec for event in plan_events(2000.0, 1, slower) if event.audio_visual]
    )
    assert np.mean(slow_gaps) == pytest.approx(10.0, rel=0.12)


def test_without_distractors_every_event_is_audio_visual() -> None:
    events = plan_events(120.0, 2, SynthSpec(distractors=False, event_kinds=("impact",)))
    assert events and all(event.kind == "impact" for event in events)


# --- writing safely ----------------------------------------------------------------------------


def test_an_interrupted_clip_leaves_nothing_behind(tmp_path: Path, monkeypatch) -> None:
    real_render = synth.render_frames

    def render_then_fail(*args, **kwargs):
        for index, frame in enumerate(real_render(*args, **kwargs)):
            if index == 20:
                raise KeyboardInterrupt
            yield frame

    monkeypatch.setattr(synth, "render_frames", render_then_fail)
    with pytest.raises(KeyboardInterrupt):
        generate_clips(
            tmp_path / "out",
            count=1,
            duration_sec=3.0,
            seed=0,
            workers=1,
            spec=SynthSpec(width=64, height=48),
        )
    assert list((tmp_path / "out").iterdir()) == []


def test_rerun_keeps_finished_clips_and_clears_stale_temporaries(tmp_path: Path) -> None:
    spec = SynthSpec(width=64, height=48)
    paths = generate_clips(tmp_path, count=2, duration_sec=2.0, seed=1, spec=spec, workers=2)
    stamps = [path.stat().st_mtime_ns for path in paths]
    stale = tmp_path / ".synth_0002.mp4.tmp-999"
    stale.write_bytes(b"half a clip")
    again = generate_clips(tmp_path, count=2, duration_sec=2.0, seed=1, spec=spec)
    assert again == paths and [path.stat().st_mtime_ns for path in paths] == stamps
    assert not stale.exists()
    generate_clips(tmp_path, count=2, duration_sec=2.0, seed=2, spec=spec, workers=1)
    assert all(path.stat().st_mtime_ns != stamp for path, stamp in zip(paths, stamps, strict=True))
    assert load_events(sidecar_path(paths[0])).set_seed == 2


def test_bad_requests_and_sidecars_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(SynthError, match="must end in .mp4"):
        generate_clip(tmp_path / "clip.avi", duration_sec=2.0, seed=0)
    with pytest.raises(SynthError, match="duration 0.2 s is out of range"):
        generate_clips(tmp_path, count=1, duration_sec=0.2, seed=0)
    with pytest.raises(SynthError, match="does not exist"):
        load_events(tmp_path / "missing.json")
    (tmp_path / "old.json").write_text(json.dumps({"schema_version": 0}))
    with pytest.raises(SynthError, match="schema_version 0"):
        load_events(tmp_path / "old.json")
    with pytest.raises(ValueError, match="must be even"):
        SynthSpec(width=101)
    assert list(tmp_path.glob("*.mp4")) == []


# --- the command -------------------------------------------------------------------------------


def test_synth_command_writes_clips_and_rejects_bad_options(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "clips"
    result = runner.invoke(
        app,
        [
            "synth",
            "--out",
            str(out),
            "--count",
            "2",
            "--duration",
            "4",
            "--width",
            "96",
            "--height",
            "64",
            "--fps",
            "30",
            "--seed",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "2 clips" in result.output
    clips = list_clips(out)
    assert len(clips) == 2 and clips[0][1].spec.fps == 30.0 and clips[0][1].set_seed == 4

    bad = runner.invoke(app, ["synth", "--out", str(tmp_path / "bad"), "--width", "97"])
    assert bad.exit_code == 2
    assert "width and height must be even" in bad.output
    assert not (tmp_path / "bad").exists()
