"""`model.init_from`: start training from one of our own models (e.g. a stage-1 run's encoders).

Sources: a model file written by `save_model_checkpoint` (`model.pt`), a training checkpoint
folder (its `model.pt`), or an MLflow URI (`models:/NAME@ALIAS`, `models:/NAME/VERSION`,
`runs:/ID/model`) through `assynch.tracking.load_streaming_model`. Every tensor whose name and
shape match is copied (so a stage-1 snapshot's encoders fill an AS-Synchformer); a source with no
matching tensor is an error.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from assynch.config import AssynchConfig
from assynch.errors import UserError
from assynch.models import StreamingModel

log = logging.getLogger(__name__)

MLFLOW_SCHEMES = ("models:/", "runs:/")


def source_state_dict(uri: str, config: AssynchConfig) -> dict[str, torch.Tensor]:
    if uri.startswith(MLFLOW_SCHEMES):
        from assynch.tracking import load_streaming_model, resolve_tracking_uri

        model, _ = load_streaming_model(uri, tracking_uri=resolve_tracking_uri(config))
        return model.state_dict()
    path = Path(uri)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise UserError(
            f"model.init_from {uri!r}: no such model file or checkpoint folder; pass a model.pt, "
            "a training checkpoint folder, or models:/NAME@ALIAS"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        state: dict[str, torch.Tensor] = payload["state_dict"]
    except Exception as exc:  # unreadable or not ours: one clear line
        raise UserError(
            f"model.init_from {uri!r} is not an assynch model file ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else exc}); for Synchformer weights use "
            "model.pretrained_checkpoint"
        ) from None
    return state


def load_init_weights(model: StreamingModel, uri: str, config: AssynchConfig) -> int:
    """Copy the matching tensors of `uri` into `model`; returns how many were copied."""
    source = source_state_dict(uri, config)
    target = model.state_dict()
    matched = {k: v for k, v in source.items() if k in target and target[k].shape == v.shape}
    if not matched:
        raise UserError(
            f"model.init_from {uri!r}: none of its {len(source)} tensors fits this "
            f"{config.model.kind} model (names or shapes differ); check model.* sizes"
        )
    model.load_state_dict(matched, strict=False)
    log.info("init_from %s: %d of %d tensors copied (%d of the model's left as built)", uri,
             len(matched), len(source), len(target) - len(matched))
    return len(matched)
