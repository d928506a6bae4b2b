"""Frozen encoders with cached features (assynch/train/frozen_features.py): the cache holds
exactly what the model would compute from the raw sample at each offset, and the heads learn from
cached features (AS-Synchformer with its contrastive candidates drawn from the cache)."""

from __future__ import annotations

import pytest
import torch
from train_support import REPO, TEST_TIME

from assynch.config import load_config
from assynch.eval.metrics import offset_metrics
from assynch.models import build_model
from assynch.samples.model_inputs import batch_video_segments
from assynch.samples.offsets import offset_grid_sec
from assynch.samples.plan import sample_frames
from assynch.train.frozen_features import (
    FeatureSet,
    HeadTraining,
    encode_sample,
    predict_all_offsets,
    train_heads,
)
from assynch.train.inputs import audio_at_offsets


def small_config(*extra: str):
    return load_config(REPO / "configs" / "quickstart.yaml", [*TEST_TIME, *extra])


def stored_sample(config, margin: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    time = config.time
    frames = torch.randint(
        0, 256, (sample_frames(time), config.video.crop, config.video.crop, 3),
        generator=generator, dtype=torch.uint8,
    )
    seconds = sample_frames(time) / time.fps + 2 * margin + 1.0
    mel = torch.randn(config.audio.n_mels, int(seconds * 100), generator=generator)
    return frames, mel


def test_cached_features_equal_encoding_each_offset_on_its_own() -> None:
    config = small_config("model.kind=snapshot")
    torch.manual_seed(0)
    model = build_model(config).eval()
    frames, mel = stored_sample(config, margin=2.0)
    visual, audio = encode_sample(
        model, frames, mel, stored_offset_sec=0.0, audio_margin_sec=2.0, config=config
    )
    grid = offset_grid_sec(config.time)
    assert audio.shape[0] == len(grid)
    with torch.no_grad():
        video = batch_video_segments(frames.unsqueeze(0), config.time, config.video)[0]
        torch.testing.assert_close(visual, model.snapshot.encode_video(video))
        for offset_class in (0, 7, 10, 20):
            cut = audio_at_offsets(
                mel, stored_offset_sec=0.0, audio_margin_sec=2.0,
                offsets_sec=[float(grid[offset_class])], config=config,
            )[0]
            torch.testing.assert_close(
                audio[offset_class], model.snapshot.encode_audio(cut), atol=1e-5, rtol=1e-4
            )
    # Different offsets are different audio (the dedup did not collapse them).
    assert not torch.allclose(audio[9], audio[10])


def test_a_margin_too_small_for_every_offset_is_refused_with_the_fix() -> None:
    config = small_config("model.kind=snapshot")
    model = build_model(config).eval()
    frames, mel = stored_sample(config, margin=2.0)
    with pytest.raises(ValueError, match="audio_margin_sec >= 3"):
        encode_sample(
            model, frames, mel, stored_offset_sec=1.0, audio_margin_sec=2.0, config=config,
            sample_id="s1",
        )


def toy_features(config, count: int, seed: int) -> FeatureSet:
    """Encoder features in which the audio of offset class c carries a fixed random pattern:
    learnable from the audio alone, so a working head-training loop must find it."""
    generator = torch.Generator().manual_seed(seed)
    time = config.time
    windows, segments, classes = time.windows_per_sample, time.segments_per_window, 21
    dim = config.model.visual_encoder.dim
    pattern = torch.randn(classes, 1, 1, 6, dim, generator=torch.Generator().manual_seed(99))
    visual = torch.randn(count, windows, segments, 8, dim, generator=generator)
    audio = 0.5 * torch.randn(count, classes, windows, segments, 6, dim, generator=generator)
    audio = audio + pattern.unsqueeze(0)
    return FeatureSet(
        visual.half(), audio.half(), torch.full((count,), 10), [f"s{i}" for i in range(count)],
        [f"v{i % 4}" for i in range(count)],
    )


@pytest.mark.parametrize("kind", ["snapshot", "as_synchformer"])
def test_heads_learn_from_cached_features(kind: str) -> None:
    config = small_config(f"model.kind={kind}", "model.encoder_regime=frozen")
    torch.manual_seed(0)
    model = build_model(config)
    train, test = toy_features(config, 24, seed=1), toy_features(config, 6, seed=2)

    def acc1(trained) -> float:
        predictions = predict_all_offsets(trained, test)
        return offset_metrics(predictions.probs[:, -1], predictions.targets)["acc1"]

    before = acc1(model)
    encoder_before = model.snapshot.visual_encoder.blocks[0].mlp.fc1.weight.clone()
    curve = train_heads(
        model, train, config,
        HeadTraining(steps=90, batch_size=8, learning_rate=3e-3, warmup_steps=5, eval_every=45),
        evaluate=lambda trained: {"acc1": acc1(trained)},
    )
    assert before < 0.2
    assert curve.eval_metrics[-1]["acc1"] > 0.6, curve
    assert curve.train_loss[-1] < curve.train_loss[0]
    # Frozen: the encoders did not move.
    after = model.snapshot.visual_encoder.blocks[0].mlp.fc1.weight
    torch.testing.assert_close(after, encoder_before)
