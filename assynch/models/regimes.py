"""Encoder regimes: which encoder parameters train (`model.encoder_regime`).

- `full`: everything trains.
- `partial`: the last k transformer blocks of each encoder and what follows them (the final norm
  and the token-reduction layer) train; patch/position embeddings and earlier blocks are frozen.
- `frozen`: no encoder parameter trains.

Parts outside the encoders (projections, sync transformer, streaming heads) are not touched.
"""

from __future__ import annotations

from torch import nn

from assynch.models.encoders import AudioEncoder, VisualEncoder
from assynch.models.snapshot import SnapshotModel

REGIMES = ("frozen", "partial", "full")


def encoders_of(model: nn.Module) -> tuple[VisualEncoder, AudioEncoder]:
    snapshot = getattr(model, "snapshot", model)
    if not isinstance(snapshot, SnapshotModel):
        raise TypeError(f"expected an assynch model with a snapshot module, got {type(model)}")
    return snapshot.visual_encoder, snapshot.audio_encoder


def apply_encoder_regime(model: nn.Module, regime: str, trainable_blocks: int = 2) -> None:
    """Set `requires_grad` on the encoders' parameters for `regime` (see the module docstring)."""
    if regime not in REGIMES:
        raise ValueError(
            f"model.encoder_regime must be one of {', '.join(REGIMES)}, got {regime!r}"
        )
    for encoder in encoders_of(model):
        if regime == "full":
            encoder.requires_grad_(True)
            continue
        encoder.requires_grad_(False)
        if regime == "frozen":
            continue
        depth = len(encoder.blocks)
        if not 0 <= trainable_blocks <= depth:
            raise ValueError(
                f"model.trainable_encoder_blocks ({trainable_blocks}) must be within 0..{depth}, "
                f"the depth of the {type(encoder).__name__}"
            )
        for block in encoder.blocks[depth - trainable_blocks :]:
            block.requires_grad_(True)
        for module in encoder.head_modules():
            module.requires_grad_(True)
