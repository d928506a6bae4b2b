"""Losses: cross-entropy, squared EMD over class CDFs, InfoNCE and the weighted total."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from assynch.config import LossWeights
from assynch.models import StreamOutput, cross_entropy, info_nce, squared_emd, total_loss

CLASSES = 21


def one_hot_logits(predicted: list[int], margin: float = 1e4) -> torch.Tensor:
    return F.one_hot(torch.tensor(predicted), CLASSES).float() * margin


def test_emd_is_zero_for_a_perfect_one_hot_prediction() -> None:
    classes = list(range(CLASSES))
    loss = squared_emd(one_hot_logits(classes), torch.tensor(classes))
    assert loss.item() == 0.0


def test_emd_grows_with_the_distance_of_the_predicted_class() -> None:
    target = torch.tensor([10])
    below = [squared_emd(one_hot_logits([10 - d]), target).item() for d in range(11)]
    above = [squared_emd(one_hot_logits([10 + d]), target).item() for d in range(11)]
    assert all(b < c for b, c in zip(below, below[1:], strict=False))
    assert below == pytest.approx(above)
    # Unlike cross-entropy, which is the same for every wrong class.
    wrong = [cross_entropy(one_hot_logits([10 + d], 5.0), target).item() for d in (1, 5, 10)]
    assert wrong == pytest.approx([wrong[0]] * 3)


def test_emd_matches_the_sum_of_squared_cdf_differences() -> None:
    logits = torch.randn(4, CLASSES, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([0, 7, 10, 20])
    expected = 0.0
    for row, true_class in zip(logits.softmax(dim=-1), target.tolist(), strict=True):
        cdf = 0.0
        for k in range(CLASSES):
            cdf += row[k].item()
            expected += (cdf - (1.0 if k >= true_class else 0.0)) ** 2
    assert squared_emd(logits, target).item() == pytest.approx(expected / 4, rel=1e-5)


def test_offset_losses_score_every_window_against_the_stream_label() -> None:
    logits = torch.randn(2, 3, CLASSES, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([4, 16])
    expanded = target.repeat_interleave(3)
    assert cross_entropy(logits, target).item() == pytest.approx(
        F.cross_entropy(logits.reshape(6, CLASSES), expanded).item()
    )
    assert squared_emd(logits, target).item() == pytest.approx(
        squared_emd(logits.reshape(6, CLASSES), expanded).item()
    )


def test_losses_reject_targets_outside_the_grid() -> None:
    with pytest.raises(ValueError, match="0..20"):
        squared_emd(torch.zeros(1, CLASSES), torch.tensor([21]))
    with pytest.raises(ValueError, match="do not fit"):
        cross_entropy(torch.zeros(2, 3, CLASSES), torch.tensor([[1, 2], [3, 4]]))


def test_info_nce_rewards_the_positive_and_punishes_a_wrong_pairing() -> None:
    anchors = F.normalize(torch.randn(6, 16, generator=torch.Generator().manual_seed(2)), dim=-1)
    positives = torch.arange(6)
    matched = info_nce(anchors, anchors, positives, 50.0).item()
    shuffled = info_nce(anchors, anchors, positives.roll(1), 50.0).item()
    assert matched < 0.1
    assert shuffled > math.log(6)


def contrastive_output(target: torch.Tensor) -> StreamOutput:
    """Embeddings where the audio side under the true offset equals the visual side."""
    batch, windows, features = 2, 3, 32
    generator = torch.Generator().manual_seed(3)
    visual = F.normalize(torch.randn(batch, windows, features, generator=generator), dim=-1)
    audio = F.normalize(
        torch.randn(batch, windows, CLASSES, features, generator=generator), dim=-1
    )
    audio[torch.arange(batch), :, target] = visual
    return StreamOutput(
        logits=torch.zeros(batch, windows, CLASSES),
        visual_embedding=visual,
        audio_embedding=audio,
        logit_scale=torch.tensor(50.0),
    )


def test_total_loss_logs_each_component_and_their_weighted_sum() -> None:
    target = torch.tensor([2, 19])
    output = contrastive_output(target)
    output.logits = torch.randn(2, 3, CLASSES, generator=torch.Generator().manual_seed(4))
    weights = LossWeights(cross_entropy=0.5, emd=2.0, contrastive=0.25)
    losses = total_loss(output, target, weights)
    assert set(losses) == {"cross_entropy", "emd", "contrastive", "total"}
    assert losses["cross_entropy"].item() == pytest.approx(cross_entropy(output.logits, target))
    assert losses["emd"].item() == pytest.approx(squared_emd(output.logits, target).item())
    assert losses["total"].item() == pytest.approx(
        0.5 * losses["cross_entropy"].item() + 2.0 * losses["emd"].item()
        + 0.25 * losses["contrastive"].item()
    )


def test_contrastive_positive_is_the_true_offset_of_the_same_window() -> None:
    target = torch.tensor([2, 19])
    weights = LossWeights()
    aligned = total_loss(contrastive_output(target), target, weights)["contrastive"].item()
    # The same embeddings scored against a shifted offset label: the positive is now wrong.
    shifted = total_loss(contrastive_output(target), target + 1, weights)["contrastive"].item()
    assert aligned < 0.1
    assert shifted > 1.0


def test_models_without_streaming_tokens_have_no_contrastive_term() -> None:
    output = StreamOutput(logits=torch.randn(2, 3, CLASSES))
    losses = total_loss(output, torch.tensor([1, 2]), LossWeights(contrastive=1.0, emd=1.0))
    assert losses["contrastive"].item() == 0.0
    assert losses["total"].item() == pytest.approx(
        losses["cross_entropy"].item() + losses["emd"].item()
    )


def test_the_history_fill_level_alone_cannot_lower_the_contrastive_loss() -> None:
    # Embeddings that encode nothing but the window's place in its stream (how full the pick
    # history is), identical for every stream and every audio candidate: no sync information.
    batch, windows, candidates, features = 4, 3, 5, 8
    levels = F.normalize(torch.eye(features)[:windows], dim=-1)
    visual = levels[None].expand(batch, -1, -1).clone()
    audio = levels[None, :, None].expand(batch, -1, candidates, -1).clone()
    hypotheses = torch.arange(candidates).repeat(batch, 1)
    target = torch.tensor([0, 1, 2, 3])

    def loss(history_windows: int, same_level: bool = False) -> float:
        output = StreamOutput(
            logits=torch.zeros(batch, windows, CLASSES),
            visual_embedding=levels[:1].expand(batch, windows, -1) if same_level else visual,
            audio_embedding=(levels[:1, None].expand(batch, windows, candidates, -1)
                             if same_level else audio),
            logit_scale=torch.tensor(20.0), audio_hypotheses=hypotheses,
            history_windows=history_windows, overlapping_windows=0,
        )
        return total_loss(output, target, LossWeights(contrastive=1.0))["contrastive"].item()

    # Masked (the model's real history of 16 windows): exactly as uninformative as identical
    # embeddings. Unmasked: the fill level alone makes the loss fall below that.
    assert loss(16) == pytest.approx(loss(16, same_level=True), abs=1e-5)
    assert loss(0) < loss(0, same_level=True) - 0.5
