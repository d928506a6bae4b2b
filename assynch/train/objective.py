"""Every call from training into the model lives here (one place to change when the model's API
changes): the forward pass, the loss terms, and which parameters a run leaves unused.

`TrainingObjective` wraps the model so that DDP sees one `forward` per step whatever the
objective (DDP only synchronises gradients of a forward it ran itself).
"""

from __future__ import annotations

from torch import Tensor, nn

from assynch.config import AssynchConfig
from assynch.models import StreamingModel, total_loss


class TrainingObjective(nn.Module):
    """forward(video, audio, offset_class, contrastive_audio=None, contrastive_hypotheses=None)
    -> {loss term: scalar, "total": ..., "logits": (B, W, C) or absent, and under visual
    onset pre-training "onset_logits" / "onset_targets"}: the scalar entries are the loss
    terms (`loss_terms`)."""

    def __init__(self, model: StreamingModel, config: AssynchConfig) -> None:
        super().__init__()
        self.model = model
        self.config = config

    def forward(
        self, video: Tensor, audio: Tensor, offset_class: Tensor,
        contrastive_audio: Tensor | None = None, contrastive_hypotheses: Tensor | None = None,
        source_ids: Tensor | None = None,
    ) -> dict[str, Tensor]:
        return compute_losses(self.model, video, audio, offset_class, self.config,
                              contrastive_audio, contrastive_hypotheses, source_ids)


def contrastive_cuts(config: AssynchConfig) -> int:
    """Audio candidates per stream a training step cuts for the contrastive loss:
    `train.contrastive_cuts` for AS-Synchformer under the offsets objective with a contrastive
    weight, else 0 (the other kinds ignore `contrastive_audio`, stage 1 has no such loss, and a
    zero weight would discard the term: none of them is worth the re-cuts). Validation never
    cuts (docs/TRAINING.md)."""
    if (config.train.objective != "offsets" or config.model.kind != "as_synchformer"
            or config.model.losses.contrastive == 0):
        return 0
    return config.train.contrastive_cuts


def compute_losses(
    model: StreamingModel, video: Tensor, audio: Tensor, offset_class: Tensor,
    config: AssynchConfig, contrastive_audio: Tensor | None = None,
    contrastive_hypotheses: Tensor | None = None,
    source_ids: Tensor | None = None,
) -> dict[str, Tensor]:
    """The loss terms of one batch for `train.objective` (each term separately, plus "total").

    offsets: CE + squared EMD + the streaming contrastive term (`total_loss`, weighted by
    model.losses; its negatives are `contrastive_audio`, the same windows' audio re-cut at other
    offsets, and the other windows of the batch); the per-window logits come back under
    "logits" for the metrics.
    segment_contrastive: Synchformer's stage 1 on every window's segments (no offset logits).
    visual_onset: the visual encoder predicts the in-sync audio's onsets (no offset logits);
    its pooled-path logits and targets come back under "onset_logits" / "onset_targets" for
    the held-out AUC.
    """
    windows = video.flatten(0, 1), audio.flatten(0, 1)  # (B*W, S, ...) for a stage 1
    if config.train.objective == "segment_contrastive":
        loss = model.snapshot.segment_contrastive_loss(*windows)
        return {"segment_contrastive": loss, "total": loss}
    if config.train.objective == "visual_onset":
        loss, onset_logits, onset_targets = model.snapshot.visual_onset_outputs(*windows)
        return {"visual_onset": loss, "total": loss, "onset_logits": onset_logits,
                "onset_targets": onset_targets}
    output = model(video, audio, contrastive_audio, contrastive_hypotheses)
    losses = total_loss(output, offset_class, config.model.losses, source_ids)
    return {**losses, "logits": output.logits}


def loss_terms(losses: dict[str, Tensor]) -> dict[str, Tensor]:
    """The loss terms of `compute_losses`' output: its scalar entries (not the logits and
    targets it returns beside them for the metrics)."""
    return {name: value for name, value in losses.items() if value.ndim == 0}


def needs_find_unused_parameters(config: AssynchConfig) -> bool:
    """Whether DDP must look for parameters without gradients (docs/MODELS.md, DDP note).

    Yes unless `train.find_unused_parameters` says otherwise: `snapshot.segment_logit_scale`
    only serves the contrastive terms (unused by snapshot/APA/StreamSync), stage 1 leaves the
    sync transformer and the streaming parts unused, and AS-Synchformer's contrastive head only
    receives a gradient in steps whose batch has a contrastive pair (without re-cut audio: a
    stream labelled 0 s), so which parameters a step uses depends on its batch. Finding them
    costs one graph walk per step.
    """
    if config.train.find_unused_parameters is not None:
        return config.train.find_unused_parameters
    return True


def is_encoder_parameter(name: str) -> bool:
    """Encoder weights (a lower learning-rate group is common practice; here: own group)."""
    return ".visual_encoder." in f".{name}" or ".audio_encoder." in f".{name}"


def logits_of(losses: dict[str, Tensor]) -> Tensor | None:
    return losses.get("logits")


def unwrap(module: nn.Module) -> StreamingModel:
    """The StreamingModel inside DDP and/or TrainingObjective."""
    inner = getattr(module, "module", module)
    inner = getattr(inner, "model", inner)
    assert isinstance(inner, StreamingModel), type(inner)
    return inner


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

