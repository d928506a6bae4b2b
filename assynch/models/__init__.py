"""Models: encoders, the snapshot model, streaming models (APA, StreamSync, AS-Synchformer), losses.

No Ray, decoding, storage or tracking imports here (checked by import-linter).
"""

from assynch.models.as_synchformer import ASSynchformer
from assynch.models.build import MODEL_KINDS, build_model
from assynch.models.checkpoint import load_model_checkpoint, save_model_checkpoint
from assynch.models.losses import cross_entropy, info_nce, squared_emd, total_loss
from assynch.models.regimes import apply_encoder_regime
from assynch.models.snapshot import SegmentFeatures, SnapshotModel
from assynch.models.streaming import (
    AveragedPredictionStream,
    SnapshotStream,
    StreamingModel,
    StreamOutput,
    StreamState,
    StreamSync,
    Window,
)
from assynch.models.synchformer import (
    LoadReport,
    load_synchformer_checkpoint,
    synchformer_key_map,
    to_synchformer_state_dict,
)

__all__ = [
    "ASSynchformer",
    "AveragedPredictionStream",
    "LoadReport",
    "MODEL_KINDS",
    "SegmentFeatures",
    "SnapshotModel",
    "SnapshotStream",
    "StreamOutput",
    "StreamState",
    "StreamSync",
    "StreamingModel",
    "Window",
    "apply_encoder_regime",
    "build_model",
    "cross_entropy",
    "info_nce",
    "load_model_checkpoint",
    "load_synchformer_checkpoint",
    "save_model_checkpoint",
    "squared_emd",
    "synchformer_key_map",
    "to_synchformer_state_dict",
    "total_loss",
]
