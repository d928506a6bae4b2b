"""Build a model from an `AssynchConfig` (its `model`, `time`, `video` and `audio` sections)."""

from __future__ import annotations

import logging

from assynch.config import AssynchConfig
from assynch.models.as_synchformer import ASSynchformer
from assynch.models.regimes import apply_encoder_regime
from assynch.models.streaming import (
    AveragedPredictionStream,
    SnapshotStream,
    StreamingModel,
    StreamSync,
)
from assynch.models.synchformer import load_synchformer_checkpoint

log = logging.getLogger(__name__)

MODEL_KINDS: dict[str, type[StreamingModel]] = {
    "snapshot": SnapshotStream,
    "apa": AveragedPredictionStream,
    "streamsync": StreamSync,
    "as_synchformer": ASSynchformer,
}


def build_model(config: AssynchConfig, load_pretrained: bool = True) -> StreamingModel:
    """The streaming model named by `model.kind`, initialised from `model.pretrained_checkpoint`
    (a local Synchformer-format file) when set and `load_pretrained`, with the encoder regime set.
    """
    model = MODEL_KINDS[config.model.kind](config)
    if load_pretrained and config.model.pretrained_checkpoint:
        load_synchformer_checkpoint(model, config.model.pretrained_checkpoint)
    apply_encoder_regime(
        model, config.model.encoder_regime, config.model.trainable_encoder_blocks
    )
    log.debug(
        "built %s (%s preset): %.2f M parameters",
        config.model.kind, config.model.preset,
        sum(p.numel() for p in model.parameters()) / 1e6,
    )
    return model
