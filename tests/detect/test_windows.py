"""Inference windows equal the training path's windows; the window stream keeps memory bounded."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from media_files import ClipSpec, write_clip

from assynch.config import AssynchConfig, TimeBase, VideoFeatures
from assynch.detect.windows import WindowCutter, iter_window_blocks
from assynch.media.decode import DecodedChunk, decode_all, iter_decode
from assynch.media.features import normalised_log_mel
from assynch.samples.model_inputs import stream_sample_to_model_inputs
from assynch.samples.plan import SamplePlan, cut_stream_sample

VIDEO = VideoFeatures(short_side=72, crop=64)
CONFIG = AssynchConfig(video=VIDEO)


def test_an_inference_window_equals_the_training_window(tmp_path: Path) -> None:
    times = tuple(np.arange(0.7, 19.0, 1.3))
    clip = write_clip(tmp_path / "clip.mp4", ClipSpec(
        duration_sec=20.0, fps=Fraction(25), width=96, height=72, flash_times=times,
        beep_times=tuple(t - 0.3 for t in times)))
    time = CONFIG.time.model_copy(update={"windows_per_sample": 2})
    media = decode_all(str(clip), time=time, video=VIDEO)
    margin = 2.0
    plan = SamplePlan("clip-000", start_sec=4.8, offset_class=10, offset_sec=0.0)
    frames, audio = cut_stream_sample(media.frames, media.audio, plan, time=time,
                                      audio_margin_sec=margin)
    mel = normalised_log_mel(audio, CONFIG.audio, time.sample_rate)
    train_video, train_audio = stream_sample_to_model_inputs(
        frames, mel, time=time, video=VIDEO, audio=CONFIG.audio, audio_margin_sec=margin,
        stored_offset_sec=0.0)

    cutter = WindowCutter(CONFIG, block_windows=3)
    blocks = list(iter_window_blocks(iter_decode(str(clip), time=time, video=VIDEO), cutter))
    video = torch.cat([b.video for b in blocks])
    audio_in = torch.cat([b.audio for b in blocks])
    assert [b.first_window for b in blocks] == [0, 3, 6]
    assert video.shape[0] == 7  # windows at 0, 2.4, ..., 14.4 s (the last ends at 19.2 s)
    # Sample start 4.8 s = window 2: the sample's windows are inference windows 2 and 3.
    assert torch.equal(video[2:4], train_video)
    assert torch.allclose(audio_in[2:4], train_audio, atol=1e-4)


def test_window_stream_memory_does_not_grow_with_the_video() -> None:
    """10 minutes of (tiny) chunks against 1: the buffers hold one block's span, not the video."""
    time = TimeBase()
    config = AssynchConfig(video=VideoFeatures(short_side=8, crop=8))
    info = None  # the cutter only stores it
    peaks = {}
    for minutes in (1, 10):
        cutter = WindowCutter(config, block_windows=4)
        windows = 0
        chunk_frames, chunk_samples = 50, 32000  # 2 s chunks
        for index in range(minutes * 30):
            frames = np.zeros((chunk_frames, 8, 8, 3), np.uint8)
            audio = np.zeros(chunk_samples, np.float32)
            chunk = DecodedChunk(frames, index * chunk_frames, audio, index * chunk_samples, 0,
                                 info)  # type: ignore[arg-type]
            windows += sum(block.count for block in cutter.push(chunk))
        windows += sum(block.count for block in cutter.finish())
        assert windows == (minutes * 60 * 25 - time.window_frames) // 60 + 1
        peaks[minutes] = cutter.summary.peak_buffer_bytes
    assert peaks[10] <= 1.01 * peaks[1], peaks  # the phase of chunks against blocks varies
    span_frames = 3 * 60 + 120 + 50  # a block of 4 windows plus one chunk
    assert peaks[10] <= span_frames * 8 * 8 * 3 + (span_frames * 640 + 2 * 640) * 4


def test_audio_db_and_motion_flag_silent_and_static_windows(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "static.mp4", ClipSpec(
        duration_sec=6.0, fps=Fraction(25), width=96, height=72, noise=0.0, audio_codec="aac"))
    cutter = WindowCutter(CONFIG)
    time = CONFIG.time
    blocks = list(iter_window_blocks(iter_decode(str(clip), time=time, video=VIDEO), cutter))
    assert sum(b.count for b in blocks) == 1
    assert blocks[0].audio_db[0] < -50  # quiet noise only
    assert blocks[0].motion[0] > 0.25  # the gradient moves 3 px per frame


def test_the_tiny_detectors_cached_windows_are_the_training_paths_windows(tmp_path: Path) -> None:
    """tiny_detector.py assembles windows from features cached per clip; at any offset they must
    be what the encoders give for the training path's window (the stored-sample cut with the
    offset, positive: audio early), laid out segment-major as the lag kernel's token times
    assume."""
    from tiny_detector import clip_features, synth_clip

    from assynch.config import load_config
    from assynch.models import build_model

    config = load_config(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml",
                         ["time.windows_per_sample=1", "model.kind=snapshot",
                          "model.encoder_regime=frozen"])
    time, threads = config.time, torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = build_model(config).eval()
        clip = synth_clip(tmp_path / "clip.mp4", 12.0, seed=5)
        cached = clip_features(model, clip, config)
        media = decode_all(str(clip), time=time, video=config.video)
        margin, start = 2.2, 12  # grid step 12: the window at 3.84 s
        for offset_class in (4, 10, 13):  # -1.2 s, 0 s, +0.6 s
            offset = (offset_class - time.num_offset_classes // 2) * time.offset_step_sec
            plan = SamplePlan("clip-000", start_sec=start * 8 / time.fps,
                              offset_class=offset_class, offset_sec=offset)
            frames, audio = cut_stream_sample(media.frames, media.audio, plan, time=time,
                                              audio_margin_sec=margin)
            video_in, audio_in = stream_sample_to_model_inputs(
                frames, normalised_log_mel(audio, config.audio, time.sample_rate), time=time,
                video=config.video, audio=config.audio, audio_margin_sec=margin,
                stored_offset_sec=offset)
            with torch.no_grad():
                features = model.snapshot.encode(video_in, audio_in)  # (1, S, tokens, D)
            visual, audible = cached.window(start, offset_class, config)
            assert torch.equal(visual, features.visual[0])
            assert torch.allclose(audible, features.audio[0], atol=1e-3), offset_class
    finally:
        torch.set_num_threads(threads)
