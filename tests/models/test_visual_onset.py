"""Visual onset pre-training and the visual encoder's convolutional stem: targets and loss
against hand-computed values, the stem's contract, and the mechanism (a conv-stem encoder learns
when a small object reverses under camera shake, from its sound alone)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from assynch.config import ConfigError, EncoderConfig, load_config
from assynch.models import build_model
from assynch.models.encoders import AudioEncoder, VisualEncoder
from assynch.models.visual_onset import (
    ONSET_POSITIVE_WEIGHT,
    ONSET_Z,
    auc_from_counts,
    onset_score_counts,
    onset_targets,
    step_onset_strength,
    two_path_onset_loss,
    weighted_onset_loss,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_step_onset_strength_sums_the_positive_flux_of_each_step() -> None:
    # 2 mel bins, 9 frames; 2 steps of 4 mel frames (frame 8 is past the steps).
    mel = torch.tensor([[0.0, 1.0, 1.0, 0.0, 0.0, 3.0, 1.0, 2.0, 9.0],
                        [0.0, 3.0, 2.0, 2.0, 0.0, 1.0, 1.0, 1.0, 9.0]])
    # rises per frame (mean over bins): f0 0; f1 (1+3)/2=2; f2 0; f3 0; f4 0; f5 (3+1)/2=2;
    # f6 0; f7 1/2
    assert step_onset_strength(mel, 2, 4).tolist() == [2.0, 2.5]
    batched = step_onset_strength(mel.expand(3, 5, 2, 9), 2, 4)
    assert batched.shape == (3, 5, 2)
    with pytest.raises(ValueError, match="need 12 mel frames"):
        step_onset_strength(mel, 3, 4)


def test_onset_targets_mark_one_step_per_sound_and_nothing_in_a_flat_window() -> None:
    # one window of 2 segments x 4 steps each (torch's median of an even count is the lower
    # middle value); base: median 1.0, median absolute deviation 0.1, every |z| <= 2
    base = torch.tensor([1.0, 1.1, 0.9, 1.05, 1.2, 0.8, 0.95, 1.15])
    loud = base.clone()
    loud[1], loud[2] = 4.0, 3.0  # a sound over two steps; median 1.15, MAD 0.15: z 19, 12.3
    loud[6] = 1.6  # z 3: too weak
    targets = onset_targets(torch.stack([base, loud, torch.full((8,), 2.0)]).view(3, 2, 4))
    assert targets[0].sum() == 0.0
    assert targets[1].flatten().tolist() == [0, 1, 0, 0, 0, 0, 0, 0]  # the peak only
    assert targets[2].sum() == 0.0  # MAD 0: floored, nothing is an onset
    # peaks are found within a segment: a rise at the last step of segment 0 and the first of
    # segment 1 marks both
    edge = base.clone()
    edge[3], edge[4] = 1.9, 2.0  # median 1.0, MAD 0.1: z 9 and 10
    assert onset_targets(edge.view(1, 2, 4)).flatten().tolist() == [0, 0, 0, 1, 1, 0, 0, 0]
    assert ONSET_Z == 6.0


def test_onset_loss_weighs_an_onsets_term_and_averages_the_two_paths() -> None:
    logits = torch.tensor([2.0, -1.0, 0.5, 0.0])
    targets = torch.tensor([1.0, 0.0, 0.0, 0.5])
    positive = -F.logsigmoid(logits)  # -log p
    negative = -F.logsigmoid(-logits)  # -log (1 - p)
    expected = (ONSET_POSITIVE_WEIGHT * targets * positive + (1 - targets) * negative).mean()
    assert weighted_onset_loss(logits, targets).item() == pytest.approx(expected.item())
    other = torch.tensor([0.0, 1.0, -2.0, 3.0])
    assert two_path_onset_loss(logits, other, targets).item() == pytest.approx(
        0.5 * (expected + weighted_onset_loss(other, targets)).item()
    )


def test_onset_auc_from_binned_counts_equals_counting_every_pair() -> None:
    """The held-out AUC that tells whether stage 1 started: counted per logit bin and summed
    over batches, it equals the share of (onset, no onset) pairs ranked right, ties half."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 40, 8, generator=generator) * 3
    logits[0, :4] = 1.0  # exact ties across both kinds of step
    targets = (torch.rand(3, 40, 8, generator=generator) < 0.1 + 0.05 * logits.clamp(0)).float()
    counts = sum(onset_score_counts(logits[i], targets[i]) for i in range(3))
    positives, negatives = logits[targets > 0.5], logits[targets < 0.5]
    pairs = positives[:, None] - negatives[None, :]
    expected = ((pairs > 0).double() + 0.5 * (pairs == 0).double()).mean().item()
    assert auc_from_counts(counts) == pytest.approx(expected, abs=2e-3)  # 1/32-logit bins
    assert auc_from_counts(onset_score_counts(torch.tensor([2.0, -2.0]),
                                              torch.tensor([1.0, 0.0]))) == 1.0
    assert auc_from_counts(onset_score_counts(torch.tensor([-2.0, 2.0]),
                                              torch.tensor([1.0, 0.0]))) == 0.0
    assert math.isnan(auc_from_counts(onset_score_counts(logits[0], torch.zeros(40, 8))))


def test_conv_stem_keeps_the_encoders_token_contract() -> None:
    config = load_config(CONFIGS / "tiny.yaml", ["model.visual_encoder.stem=conv"])
    torch.manual_seed(0)
    encoder = VisualEncoder(config.model.visual_encoder, 16, 64)
    video = torch.randn(3, 16, 3, 64, 64)
    tokens = encoder(video)
    assert tokens.shape == (3, 8, config.model.visual_encoder.dim)
    # The stem embeds each tubelet step with 2 frames of context on each side, no further
    # (the blocks after it then mix the steps).
    changed = video.clone()
    changed[:, 12:] += 1.0  # frames of steps 6-7; step 4's context ends at frame 11
    stem = encoder.conv_stem
    before, after = stem(video).unflatten(1, (8, 16)), stem(changed).unflatten(1, (8, 16))
    torch.testing.assert_close(after[:, :5], before[:, :5])
    assert not torch.allclose(after[:, 5:], before[:, 5:])


def test_conv_stem_refuses_what_it_cannot_build() -> None:
    with pytest.raises(ConfigError, match="power of two"):
        VisualEncoder(EncoderConfig(dim=32, depth=1, heads=2, patch_size=12, stem="conv"), 16, 48)
    with pytest.raises(ConfigError, match="visual encoder only"):
        AudioEncoder(EncoderConfig(dim=32, depth=1, heads=2, out_tokens=6, patch_stride=10,
                                   stem="conv"), 128, 66)


def test_visual_onset_loss_trains_the_visual_encoder_and_its_probe_only() -> None:
    config = load_config(CONFIGS / "tiny.yaml", ["model.kind=snapshot",
                                                 "model.visual_encoder.stem=conv"])
    torch.manual_seed(0)
    snapshot = build_model(config).snapshot
    snapshot.visual_onset_head.requires_grad_(True)  # what the stage-1 training loop does
    generator = torch.Generator().manual_seed(3)
    segments = config.time.segments_per_window
    video = torch.randn(2, segments, 16, 3, 64, 64, generator=generator)
    audio = 0.01 * torch.randn(2, segments, config.audio.n_mels, 66, generator=generator)
    audio[..., 20:] += 4.0  # an onset at mel frame 20 of every segment: step 2 (8 mel a step)
    loss = snapshot.visual_onset_loss(video, audio)
    assert math.isfinite(loss.item())
    targets = snapshot.visual_onset_targets(audio)
    assert targets.shape == (2, config.time.segments_per_window, 8)
    assert (targets[..., 2] == 1.0).all() and targets.sum() == targets[..., 2].sum()
    loss.backward()
    assert snapshot.visual_onset_head.weight.grad is not None
    assert snapshot.visual_encoder.conv_stem.layers[0].weight.grad is not None
    assert snapshot.sync.off_head.weight.grad is None
    assert snapshot.audio_encoder.patch_embed.weight.grad is None


def shaky_reversals(count: int, seed: int, shake: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` 16-frame 32 px segments of a noise texture (a new one each) under random camera
    shake, with two
    4 px objects: one moves straight through, the other reverses its motion at a random frame;
    and a log-mel whose level steps up at that frame (4 mel frames per 2-frame step)."""
    generator = torch.Generator().manual_seed(seed)
    videos, mels = [], []
    for _ in range(count):
        texture = torch.rand(3, 96, 96, generator=generator)
        path = torch.randint(-shake, shake + 1, (16, 2), generator=generator).cumsum(0) + 32
        frames = torch.stack([texture[:, y : y + 32, x : x + 32] for y, x in path.tolist()])
        turn = int(torch.randint(3, 14, (1,), generator=generator))
        for reverses in (False, True):
            colour = torch.rand(3, 1, 1, generator=generator)
            row = int(torch.randint(0, 28, (1,), generator=generator))
            # straight: x = start + frame (start 0-12); reversing: leftwards at 1.5 px a frame
            # until `turn`, then back (start 20-27, so it stays inside the 32 px frame)
            start = int(torch.randint(20, 28, (1,), generator=generator)) if reverses else int(
                torch.randint(0, 13, (1,), generator=generator))
            for frame in range(16):
                if reverses:
                    x = round(start - 1.5 * (frame if frame <= turn else 2 * turn - frame))
                else:
                    x = start + frame
                frames[frame, :, row : row + 4, x : x + 4] = colour
        mel = torch.randn(8, 32, generator=generator) * 0.05
        mel[:, 2 * turn :] += 3.0  # 2 mel frames a video frame: the onset in step turn // 2
        videos.append(frames)
        mels.append(mel)
    return (torch.stack(videos) - 0.5) / 0.5, torch.stack(mels)


def test_a_conv_stem_encoder_learns_when_a_small_object_reverses_from_its_sound() -> None:
    """The mechanism: from the audio alone as a teacher, the visual encoder learns to find the
    step where a small object reverses its motion, beside an object that moves straight over
    a new texture each time, and finds it in segments it never saw. (Under camera shake the
    same takes hundreds of steps more: the benchmark's `hard` level, docs/BENCHMARKS.md.)"""
    config = EncoderConfig(dim=32, depth=1, heads=2, patch_size=8, out_tokens=8, stem="conv",
                           stem_channels=16)
    torch.manual_seed(0)
    encoder = VisualEncoder(config, 16, 32)
    head = torch.nn.Linear(32, 1)
    optimizer = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=2e-3)
    test_video, test_mel = shaky_reversals(64, seed=2, shake=0)

    def targets(mel: torch.Tensor) -> torch.Tensor:
        return onset_targets(step_onset_strength(mel, 8, 4)[:, None])[:, 0]

    def logits(video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # what SnapshotModel.visual_onset_logits does: pooled token, strongest patch
        patches = encoder.patch_tokens(video)
        return head(encoder.pool(patches)).squeeze(-1), head(patches).squeeze(-1).amax(-1)

    for step in range(250):  # fresh segments every step
        video, mel = shaky_reversals(16, seed=100 + step, shake=0)
        loss = two_path_onset_loss(*logits(video), targets(mel))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        pooled = head(encoder(test_video)).squeeze(-1)  # the encoder's output tokens
    found = (pooled.argmax(dim=1) == targets(test_mel).argmax(dim=1)).float().mean().item()
    assert found > 0.6, f"the reversal's step found in {found:.2f} of unseen segments (chance 1/8)"
