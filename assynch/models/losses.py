"""Training losses: cross-entropy, squared EMD over class CDFs, InfoNCE, AS-Synchformer's
contrastive alignment and token diversity terms, and their weighted sum.

A stream sample has one offset for all its windows, so the offset losses score the prediction
after every window against the same class and average over windows and samples. Every term is
computed in float32, whatever precision the model ran in.
"""

from __future__ import annotations

import math
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
    return F.cross_entropy(flat_logits.float(), flat_target)


def squared_emd(logits: torch.Tensor, target_class: torch.Tensor) -> torch.Tensor:
    """Squared Earth Mover's Distance over the class CDFs (Hou, Yu and Samaras, 2016).

    sum_k (CDF_pred(k) - CDF_true(k))^2 with CDF_true a step at the true class, averaged over
    predictions. Classes are ordered offsets, so the loss grows with the distance of the
    predicted mass from the true class, unlike cross-entropy. Units: classes, not seconds; the
    range is 0..C-1 (a one-hot prediction d classes away scores d), which is why its default
    weight is 1 / (C - 1) (`LossWeights.emd`).
    """
    flat_logits, flat_target = _flatten_offsets(logits, target_class)
    predicted_cdf = flat_logits.float().softmax(dim=-1).cumsum(dim=-1)
    classes = torch.arange(flat_logits.shape[-1], device=flat_logits.device)
    true_cdf = (classes.unsqueeze(0) >= flat_target.unsqueeze(1)).to(predicted_cdf.dtype)
    return (predicted_cdf - true_cdf).square().sum(dim=-1).mean()


MAX_LOGIT_SCALE = 100.0


def bounded_logit_scale(raw: torch.Tensor) -> torch.Tensor:
    """A learnable inverse temperature in (1/100, 100): exp(L * tanh(raw / L)), L = ln 100.

    CLIP clamps exp(raw) at 100, which zeroes the gradient once the clamp is reached (and a
    clamped parameter can drift unseen). The tanh bound is smooth: the gradient shrinks near the
    bound but never vanishes, and it is ~exp(raw) well inside it (exactly 1 at raw = 0).
    """
    bound = math.log(MAX_LOGIT_SCALE)
    return torch.exp(bound * torch.tanh(raw.float() / bound))


def logit_scale_parameter(temperature: float) -> torch.Tensor:
    """The raw value for which `bounded_logit_scale` gives 1 / temperature."""
    bound = math.log(MAX_LOGIT_SCALE)
    target = math.log(1.0 / temperature)
    if not abs(target) < bound:
        raise ValueError(f"temperature {temperature} must lie in (1/{MAX_LOGIT_SCALE:g}, "
                         f"{MAX_LOGIT_SCALE:g})")
    return torch.tensor(bound * math.atanh(target / bound))


def info_nce(
    anchors: torch.Tensor,
    candidates: torch.Tensor,
    positive_index: torch.Tensor,
    logit_scale: torch.Tensor | float,
    allowed: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE: each anchor (N, P) must pick its positive among all candidates (M, P).

    Both sides are expected L2-normalised; `logit_scale` is the inverse temperature. Every
    candidate other than `positive_index[i]` is a negative for anchor i, unless `allowed` (N, M)
    is given and False there (then that candidate is left out of anchor i's softmax).
    """
    if anchors.shape[-1] != candidates.shape[-1]:
        raise ValueError(
            f"info_nce: anchors have {anchors.shape[-1]} features but candidates have "
            f"{candidates.shape[-1]}"
        )
    similarity = logit_scale * anchors.float() @ candidates.float().T
    if allowed is not None:
        similarity = similarity.masked_fill(~allowed, float("-inf"))
    return F.cross_entropy(similarity, positive_index.long())


# ---------------------------------------------------------------------------------------------
# AS-Synchformer's contrastive alignment


def audio_hypotheses_of(output: StreamOutput) -> torch.Tensor:
    """(B, A) the offset class under which each audio candidate is in sync with the video.

    Without explicit hypotheses, one candidate is the model's own input audio (in sync only if
    the label is 0 s, the centre class) and C candidates are the whole grid, in class order.
    """
    if output.audio_embedding is None:
        raise ValueError("this model emits no streaming-token embeddings for a contrastive loss")
    batch, _, candidates, _ = output.audio_embedding.shape
    device = output.audio_embedding.device
    if output.audio_hypotheses is not None:
        return output.audio_hypotheses.to(device).long()
    classes = output.logits.shape[-1]
    if candidates == 1:
        return torch.full((batch, 1), classes // 2, dtype=torch.long, device=device)
    if candidates == classes:
        return torch.arange(classes, device=device).expand(batch, -1)
    raise ValueError(
        f"audio_embedding has {candidates} candidates per window but no audio_hypotheses; pass "
        f"contrastive_hypotheses to the model (docs/MODELS.md)"
    )


def _contrastive_pairs(
    output: StreamOutput, target_class: torch.Tensor, source_ids: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    """Positives and the allowed candidate sets of both directions (see the loss's docstring)."""
    audio = output.audio_embedding
    assert audio is not None
    batch, windows, candidates, _ = audio.shape
    device = audio.device
    target = target_class.to(device).long().reshape(batch)
    hypotheses = audio_hypotheses_of(output)
    matches = hypotheses == target[:, None]  # (B, A)
    has_positive = matches.any(dim=1)  # (B,)
    positive_candidate = matches.float().argmax(dim=1)  # first match

    stream = torch.arange(batch, device=device)
    same_stream = stream[:, None] == stream[None, :]
    if source_ids is None:
        same_source = same_stream
    else:
        source = source_ids.to(device).reshape(batch)
        same_source = source[:, None] == source[None, :]
    window = torch.arange(windows, device=device)
    distance = (window[:, None] - window[None, :]).abs()
    overlapping = (distance > 0) & (distance <= output.overlapping_windows)  # (W, W)
    # Visual window (b, w) against any window (b', w'): excluded when they share a source and
    # overlap in time, or share a source but are different streams (their timing is unknown).
    excluded = (same_stream[:, None, :, None] & overlapping[None, :, None, :]) | (
        same_source & ~same_stream
    )[:, None, :, None].expand(-1, windows, -1, windows)
    if output.history_windows:
        # Windows whose pick history holds a different number of windows (a stream's first R
        # windows) are not each other's negatives: how full the history is shows in both
        # modalities' embeddings and would tell them apart without any sync.
        filled = window.clamp(max=output.history_windows)
        excluded = excluded | (filled[:, None] != filled[None, :])[None, :, None, :]
    allowed_windows = ~excluded.reshape(batch * windows, batch * windows)

    # visual -> audio: candidates are every audio candidate of every allowed window; other
    # candidates of the anchor's own stream matching its label (duplicates) are left out.
    duplicate = matches & (
        torch.arange(candidates, device=device)[None, :] != positive_candidate[:, None]
    )  # (B, A)
    allowed_audio = allowed_windows[:, :, None].expand(-1, -1, candidates).clone()
    allowed_audio = allowed_audio.view(batch, windows, batch, windows, candidates)
    allowed_audio[stream, :, stream] &= ~duplicate[:, None, None, :]
    allowed_audio = allowed_audio.view(batch * windows, batch * windows * candidates)
    anchor_stream = stream.repeat_interleave(windows)
    anchors = has_positive[anchor_stream]  # (B*W,)
    anchor_index = torch.arange(batch * windows, device=device)
    positive_audio = anchor_index * candidates + positive_candidate[anchor_stream]
    return {
        "anchors": anchors,
        "positive_audio": positive_audio,
        "allowed_audio": allowed_audio,
        "allowed_visual": allowed_windows,
        "anchor_index": anchor_index,
    }


def stream_contrastive_loss(
    output: StreamOutput,
    target_class: torch.Tensor,
    source_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """AS-Synchformer's contrastive alignment of audio and visual streaming tokens.

    The visual embedding of window (b, w) must pick, among audio embeddings, the audio of the
    same window in sync with it: the candidate whose hypothesis (`audio_hypotheses`, the label
    under which that audio is in sync) equals the stream's label. Its negatives: the same
    window's audio at the other offsets given (the same source audio, shifted in time), and the
    audio of every other window of the batch, except windows of the same stream that overlap it
    in time (`overlapping_windows`), windows of other streams with the same `source_ids`
    (same video, unknown timing) and windows whose history is filled to another level (a
    stream's first `history_windows` windows: the fill level alone would tell them apart).
    The in-sync audio likewise picks its visual window among the allowed visual windows.
    Symmetric mean; windows whose stream has no in-sync candidate are left out (0 when none has
    one). float32 throughout.
    """
    if output.visual_embedding is None or output.audio_embedding is None:
        raise ValueError("this model emits no streaming-token embeddings for a contrastive loss")
    pairs = _contrastive_pairs(output, target_class, source_ids)
    anchors = pairs["anchors"]
    visual = output.visual_embedding.float().reshape(-1, output.visual_embedding.shape[-1])
    audio = output.audio_embedding.float().reshape(-1, visual.shape[-1])
    if not anchors.any():
        return visual.sum() * 0.0 + audio.sum() * 0.0
    scale = output.logit_scale.float() if output.logit_scale is not None else 1.0
    positive_audio = pairs["positive_audio"][anchors]
    visual_to_audio = info_nce(
        visual[anchors], audio, positive_audio, scale, pairs["allowed_audio"][anchors]
    )
    audio_to_visual = info_nce(
        audio[positive_audio], visual, pairs["anchor_index"][anchors], scale,
        pairs["allowed_visual"][anchors],
    )
    return 0.5 * (visual_to_audio + audio_to_visual)


def contrastive_chance_level(
    output: StreamOutput,
    target_class: torch.Tensor,
    source_ids: torch.Tensor | None = None,
) -> float:
    """The contrastive loss of embeddings that carry no information: the mean over both
    directions and all anchors of ln(number of candidates in the anchor's softmax)."""
    pairs = _contrastive_pairs(output, target_class, source_ids)
    anchors = pairs["anchors"]
    if not anchors.any():
        return 0.0
    to_audio = pairs["allowed_audio"][anchors].sum(dim=1).float().log().mean()
    to_visual = pairs["allowed_visual"][anchors].sum(dim=1).float().log().mean()
    return float(0.5 * (to_audio + to_visual))


def token_diversity(tokens: torch.Tensor) -> torch.Tensor:
    """Mean squared cosine between different tokens of one window, (..., K, D) -> scalar.

    0 when a window's K tokens are orthogonal, 1 when they are copies.
    """
    unit = F.normalize(tokens.float(), dim=-1)
    cosine = unit @ unit.transpose(-1, -2)
    count = tokens.shape[-2]
    off_diagonal = ~torch.eye(count, dtype=torch.bool, device=tokens.device)
    return cosine[..., off_diagonal].square().mean()


def mean_pairwise_cosine(tokens: torch.Tensor) -> torch.Tensor:
    """Mean cosine between different tokens of one window, (..., K, D) -> scalar (a metric)."""
    unit = F.normalize(tokens.float(), dim=-1)
    cosine = unit @ unit.transpose(-1, -2)
    count = tokens.shape[-2]
    off_diagonal = ~torch.eye(count, dtype=torch.bool, device=tokens.device)
    return cosine[..., off_diagonal].mean()


def total_loss(
    output: StreamOutput,
    target_class: torch.Tensor,
    weights: LossWeights,
    source_ids: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Each component (for logging) and their weighted sum under 'total'.

    `target_class` is (B,): one offset class per stream sample; `source_ids` (B,) optional, one
    id per source video (streams of the same video are never contrastive negatives of each
    other). The contrastive term is 0 (and skipped) for models without streaming-token
    embeddings or when its weight is 0. Models with streaming tokens add 'diversity'.
    """
    losses = {
        "cross_entropy": cross_entropy(output.logits, target_class),
        "emd": squared_emd(output.logits, target_class),
    }
    if output.visual_embedding is not None and weights.contrastive > 0:
        losses["contrastive"] = stream_contrastive_loss(output, target_class, source_ids)
    else:
        losses["contrastive"] = output.logits.new_zeros((), dtype=torch.float32)
    total = (
        weights.cross_entropy * losses["cross_entropy"]
        + weights.emd * losses["emd"]
        + weights.contrastive * losses["contrastive"]
    )
    if output.snapshot_logits is not None and weights.snapshot > 0:
        # AS-Synchformer accumulates its snapshot module's per-window predictions; supervised
        # directly, each becomes a snapshot model's prediction (docs/MODELS.md, "Losses").
        losses["snapshot"] = weights.cross_entropy * cross_entropy(
            output.snapshot_logits, target_class
        ) + weights.emd * squared_emd(output.snapshot_logits, target_class)
        total = total + weights.snapshot * losses["snapshot"]
    if output.streaming_tokens is not None:
        token_sets = [output.streaming_tokens, output.visual_tokens, output.audio_tokens]
        losses["diversity"] = torch.stack(
            [token_diversity(tokens) for tokens in token_sets if tokens is not None]
        ).mean()
        total = total + weights.diversity * losses["diversity"]
    losses["total"] = total
    return losses
