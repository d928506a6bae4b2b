"""Visual onset pre-training: a stage 1 that teaches the visual encoder when sounds start.

In an in-sync training window, the audio says when something audible happens. The visual
encoder, through a linear probe on each tubelet step's token, learns to predict that from the
frames alone: where the picture shows a contact, a hit or a reversal, there is an onset. No
labels beyond the audio itself, so it runs on any in-sync footage (docs/TRAINING.md, "Visual
onset pre-training"). It exists because Synchformer's segment-level contrastive stage 1 barely
moves on sparse footage within a small budget: most segments hold no event, so InfoNCE can only
learn which clip a segment comes from (docs/BENCHMARKS.md).

Two paths read the same linear probe: each step's pooled token (what the models after the encoder
see) and the strongest of its patch tokens (a short path to the patch where a small object
moves: through the pooling alone the encoder did not start learning within 600 steps on the
`hard` clips, with it the held-out AUC was 0.87 after 600).

Targets, per window: the positive spectral flux of the normalised log-mel (mean over mel bins of
the rise since the previous mel frame), summed over the mel frames of each tubelet step; then a
robust z-score over the window's steps (median, median absolute deviation); a step is an onset
(target 1) where that is at least `ONSET_Z` and a peak among its segment's neighbouring steps,
so each sound marks one step. (Soft targets, a ramp from z = 3 to z = 9 on every step, kept
the encoder at its starting loss for 1000 steps on the `hard` clips, where the clips' listed
onsets as targets had it learning by step 400.) Onsets are rare, so the loss is a
binary cross-entropy whose onset term is weighted `ONSET_POSITIVE_WEIGHT` times.

Off-screen sounds are onsets no picture can predict. On the `hard` clips they are a fifth of the
targets, and they make the start depend on the initialisation: with one seed the held-out AUC
left 0.5 by step 600, with another not by step 2000; without them (a diagnostic that keeps the
audio's onsets where the clip lists an on-screen one) both seeds started by step 400-500. Two
noise-robust losses (a noisy-OR with a 25% off-screen share; dropping the hardest 30% of the
positives) did not start either within 800 steps. So watch `val/onset_auc`
(`onset_score_counts`, `auc_from_counts`), which the training loop reports for this objective
(docs/TRAINING.md).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

# On the synthetic hard clips (120 train streams, per window) the steps at z >= 6 that are a
# peak hold 78% of the steps with a listed on-screen onset, and 80% of them are such steps (the
# rest: off-screen sounds); 2.0% of all steps.
ONSET_Z = 6.0
# The spread never counts as less than this (normalised log-mel units; the ambient noise of the
# synthetic clips gives ~0.014): a silent window (flux all 0) has no onset, and a window with
# more than half its steps at the same flux does not call every small rise one.
MAD_FLOOR = 0.01
# Onsets are rare (a few % of steps): their term counts this many times. A loss that weighs
# onsets and the rest half each (balanced) sat at ln 2 through the 400 steps it ran on the `hard`
# clips, where this one (same encoder, same labels) had started to learn by step 400.
ONSET_POSITIVE_WEIGHT = 4.0


def step_onset_strength(mel: torch.Tensor, steps: int, mel_per_step: int) -> torch.Tensor:
    """(..., n_mels, F) normalised log-mel segments -> (..., steps) positive spectral flux
    summed over each tubelet step's `mel_per_step` mel frames (the segment's first mel frame
    has no previous one: flux 0)."""
    if steps * mel_per_step > mel.shape[-1]:
        raise ValueError(
            f"{steps} steps of {mel_per_step} mel frames need {steps * mel_per_step} mel frames "
            f"per segment, the segments have {mel.shape[-1]}"
        )
    rise = torch.relu(mel[..., 1:] - mel[..., :-1]).mean(dim=-2)
    flux = F.pad(rise, (1, 0))[..., : steps * mel_per_step]
    return flux.unflatten(-1, (steps, mel_per_step)).sum(dim=-1)


def onset_targets(strength: torch.Tensor) -> torch.Tensor:
    """(N, S, steps) onset strength of each window's segments -> (N, S, steps) onset targets, 1
    at a step whose robust z-score over the window's steps is at least `ONSET_Z` and the largest
    of its segment's neighbouring steps (one step per sound), else 0."""
    flat = strength.flatten(1)
    median = flat.median(dim=1, keepdim=True).values
    spread = (flat - median).abs().median(dim=1, keepdim=True).values.clamp_min(MAD_FLOOR)
    z = ((flat - median) / spread).view_as(strength)
    peak = z == F.max_pool1d(z.flatten(0, 1).unsqueeze(1), 3, stride=1, padding=1).view_as(z)
    return ((z >= ONSET_Z) & peak).to(strength.dtype)


def weighted_onset_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy against soft onset targets, an onset's term weighted
    `ONSET_POSITIVE_WEIGHT` times; the mean over steps, in float32 whatever precision the
    logits come in."""
    weight = torch.tensor(ONSET_POSITIVE_WEIGHT, device=logits.device)
    return F.binary_cross_entropy_with_logits(
        logits.float(), targets.float(), pos_weight=weight
    )


def two_path_onset_loss(
    pooled: torch.Tensor, strongest: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """The stage-1 loss: the mean of `weighted_onset_loss` on the pooled-token logits and on
    the strongest-patch logits (`SnapshotModel.visual_onset_logits`)."""
    return 0.5 * (weighted_onset_loss(pooled, targets) + weighted_onset_loss(strongest, targets))


# The held-out AUC of the onset probe: whether stage 1 has started (it can sit at its starting
# loss for hundreds of steps, then learn fast). Counted per logit bin so that ranks and batches
# add up (an all-reduce of counts); the bins are 1/32 of a logit wide over [-16, 16], finer
# than any difference that matters for a ranking, and a bin's ties count half.
AUC_LOGIT_RANGE = 16.0
AUC_BINS = 1024


def onset_score_counts(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(2, AUC_BINS) float64 counts of steps per logit bin: row 0 the steps without an onset
    (target < 0.5), row 1 those with one."""
    scaled = (logits.detach().float().flatten() + AUC_LOGIT_RANGE) / (2 * AUC_LOGIT_RANGE)
    index = (scaled * AUC_BINS).long().clamp(0, AUC_BINS - 1)
    onset = (targets.detach().flatten() > 0.5).long()
    counts = torch.zeros(2 * AUC_BINS, dtype=torch.float64, device=logits.device)
    counts.index_add_(0, onset * AUC_BINS + index,
                      torch.ones_like(index, dtype=torch.float64))
    return counts.view(2, AUC_BINS)


def auc_from_counts(counts: torch.Tensor) -> float:
    """ROC AUC from `onset_score_counts` (summed over batches and ranks): the chance that an
    onset step scores above a step without one, ties (same bin) counting half; NaN without
    both kinds of step."""
    negatives, positives = counts[0].double(), counts[1].double()
    pairs = positives.sum() * negatives.sum()
    if pairs == 0:
        return float("nan")
    below = torch.cumsum(negatives, 0) - negatives
    return float((positives * (below + 0.5 * negatives)).sum() / pairs)
