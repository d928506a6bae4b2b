"""Stage 1 (segment contrastive, visual onset) -> `model.init_from` -> offsets; early stopping
(in-process)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from train_support import train_config

from assynch.config import AssynchConfig
from assynch.errors import UserError
from assynch.train.local import local_checkpoints, run_local
from assynch.train.loop import build_training_model


def run_stage1(
    train_shards: dict[str, Any], tmp_path: Path, objective: str, *overrides: str
) -> tuple[AssynchConfig, Path, dict[str, torch.Tensor]]:
    """Two steps of a stage-1 run with `objective`: its config, last checkpoint and weights,
    after checking that it reports its own loss term and no offset metrics."""
    config = train_config(train_shards["shards"], str(tmp_path), "train.epochs=1",
                          "train.max_steps_per_epoch=2", f"train.objective={objective}",
                          "model.encoder_regime=full", *overrides)
    progress = run_local(config, tmp_path / objective)
    row = progress.history[0]
    assert math.isfinite(row[f"train/{objective}"]) and row[f"train/{objective}"] > 0
    assert f"val/{objective}" in row and "val/acc1" not in row  # no offset logits
    if objective == "visual_onset":  # whether stage 1 started: its probe's held-out AUC
        assert 0.0 <= row["val/onset_auc"] <= 1.0
    checkpoint = local_checkpoints(tmp_path / objective)[-1]
    return config, checkpoint, torch.load(checkpoint / "model.pt", weights_only=True)["state_dict"]


def test_stage1_run_then_an_offsets_model_starts_from_its_weights(
    train_shards: dict[str, Any], tmp_path: Path
) -> None:
    _, checkpoint, trained = run_stage1(train_shards, tmp_path, "segment_contrastive")

    offsets = train_config(train_shards["shards"], str(tmp_path), f"model.init_from={checkpoint}",
                           "train.seed=5")
    model = build_training_model(offsets)
    fresh = build_training_model(train_config(train_shards["shards"], str(tmp_path),
                                              "train.seed=5"))
    state = model.state_dict()
    encoder_keys = [k for k in trained if ".visual_encoder." in k or ".audio_encoder." in k]
    assert encoder_keys
    for key in encoder_keys:
        assert torch.equal(state[key], trained[key]), key
    changed = [k for k in encoder_keys if not torch.equal(fresh.state_dict()[k], trained[k])]
    assert changed  # stage 1 moved the encoders, and init_from carried that over

    with pytest.raises(UserError, match="init_from"):
        build_training_model(train_config(train_shards["shards"], str(tmp_path),
                                          f"model.init_from={tmp_path / 'none.pt'}"))


def test_visual_onset_stage1_trains_the_visual_encoder_and_its_probe_only(
    train_shards: dict[str, Any], tmp_path: Path
) -> None:
    stage1, _, trained = run_stage1(train_shards, tmp_path, "visual_onset",
                                    "model.visual_encoder.stem=conv")
    fresh = build_training_model(stage1).state_dict()  # same seed: the weights it started from
    moved = {key for key in trained if not torch.equal(fresh[key], trained[key])}
    assert any(".visual_encoder.conv_stem." in key for key in moved)
    assert any(".visual_onset_head." in key for key in moved)
    # Nothing else has a gradient in this objective: audio encoder, sync, streaming parts.
    assert all(".visual_encoder." in key or ".visual_onset_head." in key for key in moved), moved


def test_early_stopping_after_patience_epochs_without_a_better_score(
    train_shards: dict[str, Any], tmp_path: Path
) -> None:
    # A learning rate of ~0 leaves the validation loss where it is: no epoch beats the first.
    config = train_config(train_shards["shards"], str(tmp_path), "train.epochs=5",
                          "train.max_steps_per_epoch=1", "train.learning_rate=1e-30",
                          "train.min_learning_rate=0", "train.select_metric=loss",
                          "train.early_stopping_patience=1", "train.resample_offsets=false")
    progress = run_local(config, tmp_path / "run")
    assert progress.stopped_early and progress.epoch == 2 and progress.best_epoch == 1
