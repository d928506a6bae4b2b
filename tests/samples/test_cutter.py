"""The streaming sample cutter against the in-memory reference, and its memory bound."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from media_files import ClipSpec, write_clip

from assynch.config import AssynchConfig, load_config
from assynch.media.decode import decode_all, iter_decode
from assynch.media.features import normalised_log_mel
from assynch.samples.cutter import StreamSampleCutter
from assynch.samples.plan import (
    SamplePlan,
    cut_stream_sample,
    plan_stream_samples,
    sample_audio_samples,
    sample_frames,
)

MARGIN = 2.0


@pytest.fixture(scope="module")
def config() -> AssynchConfig:
    return load_config("configs/quickstart.yaml")


@pytest.fixture(scope="module")
def clip_40s(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cutter")
    return write_clip(folder / "clip.mp4", ClipSpec(duration_sec=40.0, width=96, height=72,
                                                    seed=3))


def cut_streaming(path: Path, plans: list[SamplePlan], config: AssynchConfig,
                  chunk_sec: float) -> tuple[list, StreamSampleCutter]:
    cutter = StreamSampleCutter(plans, time=config.time, audio=config.audio,
                                audio_margin_sec=MARGIN)
    out = []
    for start, end in cutter.decode_spans_sec():
        for chunk in iter_decode(str(path), time=config.time, video=config.video,
                                 start_sec=start, end_sec=end, chunk_sec=chunk_sec):
            out.extend(cutter.push(chunk))
    out.extend(cutter.finish())
    return out, cutter


@pytest.mark.parametrize("chunk_sec", [0.37, 2.0])
def test_streaming_cut_equals_the_in_memory_reference(
    clip_40s: Path, config: AssynchConfig, chunk_sec: float
) -> None:
    whole = decode_all(str(clip_40s), time=config.time, video=config.video)
    duration = min(whole.frames.shape[0] / config.time.fps,
                   whole.audio.shape[0] / config.time.sample_rate)
    plans = plan_stream_samples("clip", duration, time=config.time, samples=5, seed=11,
                                audio_margin_sec=MARGIN)
    assert len(plans) >= 2
    samples, cutter = cut_streaming(clip_40s, plans, config, chunk_sec)
    assert [s.plan for s in samples] == sorted(plans, key=lambda p: p.start_sec)
    assert not cutter.lost
    for sample in samples:
        frames, audio = cut_stream_sample(whole.frames, whole.audio, sample.plan,
                                          time=config.time, audio_margin_sec=MARGIN)
        assert np.array_equal(sample.frames, frames)
        assert np.array_equal(sample.audio, audio)
        mel = normalised_log_mel(audio, config.audio, config.time.sample_rate).numpy()
        assert sample.mel.dtype == np.float16
        assert np.array_equal(sample.mel, mel.astype(np.float16))
        assert sample.frames.shape == (sample_frames(config.time), 64, 64, 3)
        assert sample.audio.shape == (sample_audio_samples(config.time, MARGIN),)
        assert sample.audio_start_sec == pytest.approx(
            sample.plan.start_sec + sample.plan.offset_sec - MARGIN, abs=1e-4
        )
        assert sample.window_starts_sec[0] == pytest.approx(sample.plan.start_sec)


def test_buffer_holds_about_one_sample_whatever_the_video_length(
    tmp_path: Path, config: AssynchConfig
) -> None:
    time = config.time
    frame_bytes = 64 * 64 * 3
    chunk_sec = 1.0
    # A sample's frames are held until its audio (up to 2 margins later) is decoded too.
    bound = (sample_frames(time) + (2 * MARGIN + 2 * chunk_sec) * time.fps) * frame_bytes + (
        sample_audio_samples(time, MARGIN) + 2 * chunk_sec * time.sample_rate
    ) * 4
    peaks = []
    for duration in (45.0, 90.0):
        path = write_clip(tmp_path / f"{duration:g}.mp4",
                          ClipSpec(duration_sec=duration, width=96, height=72, noise=0.0))
        plans = plan_stream_samples("v", duration - 1.0, time=time, samples=100, seed=0,
                                    audio_margin_sec=MARGIN)
        samples, cutter = cut_streaming(path, plans, config, chunk_sec)
        assert len(samples) == len(plans) >= 2
        peaks.append(cutter.peak_buffer_bytes)
    assert max(peaks) <= bound
    assert peaks[1] <= 1.1 * peaks[0]


def test_decode_spans_merge_close_samples_and_skip_long_gaps(config: AssynchConfig) -> None:
    plans = [
        SamplePlan("a", 10.0, 10, 0.0),
        SamplePlan("b", 24.0, 10, 0.0),
        SamplePlan("c", 200.0, 0, -2.0),
    ]
    cutter = StreamSampleCutter(plans, time=config.time, audio=config.audio,
                                audio_margin_sec=MARGIN)
    spans = cutter.decode_spans_sec(merge_gap_sec=10.0)
    length = sample_frames(config.time) / config.time.fps
    assert len(spans) == 2
    assert spans[0][0] == pytest.approx(8.0)
    assert spans[0][1] == pytest.approx(24.0 + length + MARGIN, abs=0.05)
    assert spans[1][0] == pytest.approx(200.0 - 2.0 - MARGIN)
    assert spans[1][1] == pytest.approx(200.0 + length, abs=0.05)


def test_samples_past_the_end_of_the_media_are_reported_lost(
    clip_40s: Path, config: AssynchConfig
) -> None:
    beyond = SamplePlan("late", 30.0, 10, 0.0)  # needs video up to 42 s; the clip has ~39 s
    inside = SamplePlan("early", 3.0, 10, 0.0)
    samples, cutter = cut_streaming(clip_40s, [beyond, inside], config, 2.0)
    assert [s.plan.sample_id for s in samples] == ["early"]
    assert [p.sample_id for p in cutter.lost] == ["late"]
