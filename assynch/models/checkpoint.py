"""Save and restore a whole model (weights + the config that builds it) in one file.

The file holds only tensors, strings and plain containers, so it loads with `weights_only=True`.
It is written to a temporary name and renamed, so a crash never leaves a half-written file.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import torch

from assynch.config import AssynchConfig, build_config
from assynch.models.build import build_model
from assynch.models.streaming import StreamingModel

CHECKPOINT_FORMAT = "assynch-model/1"


def save_model_checkpoint(model: StreamingModel, config: AssynchConfig, path: str | Path) -> Path:
    """Write `model`'s weights and `config` (without storage credentials) to a local `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": json.dumps(config.model_dump(mode="json", exclude={"storage"})),
        "state_dict": {key: value.detach().cpu() for key, value in model.state_dict().items()},
    }
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(payload, temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def load_model_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[StreamingModel, AssynchConfig]:
    """Rebuild the model saved by `save_model_checkpoint` (eval mode) and its config."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise ValueError(
            f"{path} is not a readable assynch model checkpoint ({str(exc).splitlines()[0]})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path} is not an assynch model checkpoint (format {CHECKPOINT_FORMAT}); for "
            f"Synchformer weights use model.pretrained_checkpoint instead"
        )
    config = build_config(json.loads(payload["config"]), source=str(path))
    model = build_model(config, load_pretrained=False).to(map_location)
    model.load_state_dict(payload["state_dict"])
    return model.eval(), config
