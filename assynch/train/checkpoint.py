"""Training checkpoints: one folder per reported checkpoint.

    model.pt        the model at this checkpoint (assynch.models.save_model_checkpoint: weights +
                    config; what `assynch.tracking.load_streaming_model` and evaluation read)
    best_model.pt   the best model so far, only when it is not this one (see `best_model_file`)
    train_state.pt  optimizer, scheduler, step, epoch, RNG states, history, best epoch, run ids

Everything loads with `torch.load(weights_only=True)`: tensors, numbers, strings, lists, dicts.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from assynch.config import AssynchConfig
from assynch.models import StreamingModel, load_model_checkpoint, save_model_checkpoint

MODEL_FILE = "model.pt"
BEST_MODEL_FILE = "best_model.pt"
STATE_FILE = "train_state.pt"
STATE_FORMAT = "assynch-train-state/1"


@dataclass
class TrainProgress:
    """What the loop carries from epoch to epoch (and across restarts)."""

    epoch: int = 0  # epochs finished
    step: int = 0  # optimizer steps taken
    samples: int = 0  # training samples seen, all ranks
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch
    best_epoch: int | None = None
    best_score: float | None = None
    epochs_without_improvement: int = 0
    restarts: int = 0  # how often this run continued from a checkpoint
    tracking_run_id: str | None = None
    stopped_early: bool = False


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached": float(np_state[4])},
        "python": repr(random.getstate()),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state((np_state["name"], np_state["keys"].numpy().astype(np.uint32),
                         np_state["pos"], np_state["has_gauss"], np_state["cached"]))
    version, internal, gauss = _parse_python_state(state["python"])
    random.setstate((version, internal, gauss))


def _parse_python_state(text: str) -> tuple[int, tuple[int, ...], float | None]:
    import ast

    value = ast.literal_eval(text)
    return value[0], tuple(value[1]), value[2]


def save_training_checkpoint(
    folder: str | Path,
    *,
    model: StreamingModel,
    config: AssynchConfig,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    progress: TrainProgress,
    best_model_state: dict[str, torch.Tensor] | None,
) -> Path:
    """Write a checkpoint folder (local). `best_model_state` is the best weights when they are
    not the current ones (None: the current model is the best)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_model_checkpoint(model, config, folder / MODEL_FILE)
    if best_model_state is not None:
        best = _ModelView(model, best_model_state)
        save_model_checkpoint(best, config, folder / BEST_MODEL_FILE)  # type: ignore[arg-type]
    state = {
        "format": STATE_FORMAT,
        "progress": asdict(progress),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(),
        "best_model_file": BEST_MODEL_FILE if best_model_state is not None else MODEL_FILE,
    }
    temporary = folder / f".{STATE_FILE}.tmp"
    torch.save(state, temporary)
    temporary.replace(folder / STATE_FILE)
    return folder


class _ModelView:
    """Just enough of a module for save_model_checkpoint: a state dict to write."""

    def __init__(self, model: StreamingModel, state: dict[str, torch.Tensor]) -> None:
        self._state = state

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._state


@dataclass
class RestoredTraining:
    progress: TrainProgress
    model_state: dict[str, torch.Tensor]
    best_model_state: dict[str, torch.Tensor] | None
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]


def load_training_checkpoint(folder: str | Path) -> RestoredTraining:
    folder = Path(folder)
    state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    if state.get("format") != STATE_FORMAT:
        raise ValueError(f"{folder} holds no assynch training state ({STATE_FORMAT})")
    model_state = _model_state(folder / MODEL_FILE)
    best_file = state["best_model_file"]
    best_state = None if best_file == MODEL_FILE else _model_state(folder / best_file)
    return RestoredTraining(
        progress=TrainProgress(**state["progress"]),
        model_state=model_state,
        best_model_state=best_state,
        optimizer=state["optimizer"],
        scheduler=state["scheduler"],
        rng=state["rng"],
    )


def _model_state(path: Path) -> dict[str, torch.Tensor]:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    state: dict[str, torch.Tensor] = payload["state_dict"]
    return state


def best_model_path(folder: str | Path) -> Path:
    """The model file of the best epoch inside a checkpoint folder."""
    folder = Path(folder)
    state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    return folder / state["best_model_file"]


def load_checkpoint_model(folder: str | Path) -> tuple[StreamingModel, AssynchConfig]:
    """The model of a checkpoint folder (or a model.pt file), in eval mode."""
    path = Path(folder)
    return load_model_checkpoint(path / MODEL_FILE if path.is_dir() else path)
