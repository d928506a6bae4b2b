"""Helpers of the evaluation tests: the shard set fixture's type and tiny model checkpoints."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from assynch.config import AssynchConfig, apply_overrides, build_config
from assynch.models import build_model, save_model_checkpoint

VIDEOS = 3  # all in the test split
SAMPLES_PER_VIDEO = 1  # stream samples of 2 windows (7.2 s) per 24 s clip
# A smaller model than `tiny` (one block per encoder) keeps each evaluation a few seconds.
SMALL_MODEL = (
    "model.audio_encoder.depth=1", "model.visual_encoder.depth=1", "model.sync.depth=1",
    "model.streaming.depth=1", "model.history_windows=2",
)


@dataclass(frozen=True)
class EvalShards:
    url: str
    config: AssynchConfig  # the preprocessing config (time base of the shards)
    other_time_base: str  # a shard set of the same clips with another stream hop


def model_config(shards: EvalShards, kind: str = "as_synchformer") -> AssynchConfig:
    data = apply_overrides(shards.config.model_dump(mode="json"),
                           [f"model.kind={kind}", *SMALL_MODEL])
    return build_config(data, "test")


def save_tiny_model(shards: EvalShards, path: Path, *, seed: int = 0,
                    kind: str = "as_synchformer") -> Path:
    config = model_config(shards, kind)
    torch.manual_seed(seed)
    return save_model_checkpoint(build_model(config), config, path)
