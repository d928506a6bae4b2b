"""Training losses: cross-entropy, squared EMD over class CDFs, InfoNCE, and their weighted sum.

A stream sample has one offset for all its windows, so the offset losses score the prediction
after every window against the same class and average over windows and samples.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.nn import functional as F

from assynch.config import LossWeights

if TYPE_CHECKING:
    from assynch.models.streaming import StreamOutput


def _flatten_offsets(
    logits: torch.Tensor, target_class: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., C) logits with (...) or leading-dim targets -> (N, C), (N,)."""
    if target_class.dim() < logits.dim() - 1:
        shape = target_class.shape + (1,) * (logits.dim() - 1 - target_class.dim())
        target_class = target_class.reshape(shape).expand(logits.shape[:-1])
    if target_class.shape != logits.shape[:-1]:
        raise ValueError(
            f"offset targets of shape {tuple(target_class.shape)} do not fit logits of shape "
            f"{tuple(logits.shape)}; pass one class per sample (B,) or per prediction"
        )
    classes = logits.shape[-1]
    if target_class.numel() and (target_class.min() < 0 or target_class.max() >= classes):
        raise ValueError(f"offset targets must be classes in 0..{classes - 1}")
    return logits.reshape(-1, classes), target_class.reshape(-1).long()


def cross_entropy(logits: torch.Tensor, target_class: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy; logits (B, C) or (B, W, C), targets (B,) or matching logits[..., 0]."""
    flat_logits, flat_target = _flatten_offsets(logits, target_class)
    return F.cross_entropy(flat_logits, flat_target)


def squared_emd(logits: torch.Tensor, target_class: torch.Tensor) -> torch.Tensor:
    """Squared Earth Mover's Distance over the class CDFs (Hou, Yu and Samaras, 2016).

    sum_k (CDF_pred(k) - CDF_true(k))^2 with CDF_true a step at the true class, averaged over
    predictions. Classes are ordered offsets, so the loss grows with the distance of the
    predicted mass from the true class, unlike cross-entropy. Units: classes, not seconds.
    """
    flat_logits, flat_target = _flatten_offsets(logits, target_class)
    predicted_cdf = flat_logits.float().softmax(dim=-1).cumsum(dim=-1)
    classes = torch.arange(flat_logits.shape[-1], device=flat_logits.device)
    true_cdf = (classes.unsqueeze(0) >= flat_target.unsqueeze(1)).to(predicted_cdf.dtype)
    return (predicted_cdf - true_cdf).square().sum(dim=-1).mean()


def info_nce(
    anchors: torch.Tensor,
    candidates: torch.Tensor,
    positive_index: torch.Tensor,
    logit_scale: torch.Tensor | float,
) -> torch.Tensor:
    """InfoNCE: each anchor (N, P) must pick its positive among all candidates (M, P).

    Both sides are expected L2-normalised; `logit_scale` is the inverse temperature. Every
    candidate other than `positive_index[i]` is a negative for anchor i.
    """
    if anchors.shape[-1] != candidates.shape[-1]:
        raise ValueError(
            f"info_nce: anchors have {anchors.shape[-1]} features but candidates have "
            f"{candidates.shape[-1]}"
        )
    similarity = logit_scale * anchors.float() @ candidates.float().T
    return F.cross_entropy(similarity, positive_index.long())


def stream_contrastive_loss(output: StreamOutput, target_class: torch.Tensor) -> torch.Tensor:
    """AS-Synchformer's auxiliary loss on the streaming tokens (see docs/MODELS.md).

    Visual anchor (b, w) must pick the audio embedding of the same window of the same stream under
    the true offset hypothesis among: the same window under the 20 other (shifted) offsets, every
    other window of its stream and every window of the other streams in the batch, under all
    offsets. The audio side at the true offset likewise picks its visual window. Symmetric mean.
    """
    if output.visual_embedding is None or output.audio_embedding is None:
        raise ValueError("this model emits no streaming-token embeddings for a contrastive loss")
    visual, audio = output.visual_embedding, output.audio_embedding  # (B, W, P), (B, W, C, P)
    batch, windows, classes, features = audio.shape
    target = target_class.to(visual.device).long()
    window_index = torch.arange(batch * windows, device=visual.device)
    true_class = target.repeat_interleave(windows)
    scale = output.logit_scale if output.logit_scale is not None else 1.0
    visual_flat = visual.reshape(batch * windows, features)
    audio_flat = audio.reshape(batch * windows * classes, features)
    visual_to_audio = info_nce(visual_flat, audio_flat, window_index * classes + true_class, scale)
    audio_true = audio.reshape(batch * windows, classes, features)[window_index, true_class]
    audio_to_visual = info_nce(audio_true, visual_flat, window_index, scale)
    return 0.5 * (visual_to_audio + audio_to_visual)


def total_loss(
    output: StreamOutput, target_class: torch.Tensor, weights: LossWeights
) -> dict[str, torch.Tensor]:
    """Each component (for logging) and their weighted sum under 'total'.

    `target_class` is (B,): one offset class per stream sample. The contrastive term is 0 (and
    skipped) for models without streaming-token embeddings or when its weight is 0.
    """
    losses = {
        "cross_entropy": cross_entropy(output.logits, target_class),
        "emd": squared_emd(output.logits, target_class),
    }
    if output.visual_embedding is not None and weights.contrastive > 0:
        losses["contrastive"] = stream_contrastive_loss(output, target_class)
    else:
        losses["contrastive"] = output.logits.new_zeros(())
    losses["total"] = (
        weights.cross_entropy * losses["cross_entropy"]
        + weights.emd * losses["emd"]
        + weights.contrastive * losses["contrastive"]
    )
    return losses
