"""Helpers shared by the training tests: configs for tiny runs on the test shards."""

from __future__ import annotations

from pathlib import Path

from assynch.config import AssynchConfig, load_config

REPO = Path(__file__).resolve().parents[1]
CLIP_COUNT = 8
CLIP_SEC = 9.0  # one 4.0 s stream sample plus 2 s audio margins per clip
# Smaller than the tiny preset so that a step costs ~0.1 s on two shared cores: 4 segments per
# window (1.6 s windows, 2.4 s apart, 2 windows per sample) and 32 px frames. Shards and model
# share it (the trainer refuses shards of another time base).
TEST_TIME = [
    "time.windows_per_sample=2",
    "time.segments_per_window=4",
    "video.short_side=36",
    "video.crop=32",
]


def shard_overrides(clips: Path, shards: Path) -> list[str]:
    return [
        *TEST_TIME,
        f"preprocess.input={clips}",
        f"preprocess.output={shards}",
        "preprocess.samples_per_video=1",
        "preprocess.rows_per_shard=2",
        "preprocess.rows_per_row_group=1",
        "preprocess.num_workers=2",
        "preprocess.splits={train: 0.75, val: 0.25, test: 0.0}",
        "preprocess.video_timeout_sec=120",
    ]


def train_config(shards: str, storage_path: str, *extra: str) -> AssynchConfig:
    """The tiny model on the test shards: frozen encoders and a high learning rate, so a few
    epochs on a handful of samples visibly lower the loss; tracking off (tests of MLflow
    belong to assynch.tracking)."""
    overrides = [
        *TEST_TIME,
        "preprocess.samples_per_video=1",
        "preprocess.rows_per_shard=2",
        "preprocess.rows_per_row_group=1",
        "preprocess.splits={train: 0.75, val: 0.25, test: 0.0}",
        f"train.shards={shards}",
        f"train.storage_path={storage_path}",
        "model.encoder_regime=frozen",
        "train.batch_size=2",
        "train.learning_rate=0.003",
        "train.min_learning_rate=0.003",
        "train.weight_decay=0.0",
        "train.warmup_steps=0",
        "train.tracking=false",
        "train.log_every_steps=1",
        "train.cpus_per_worker=0.5",
        "train.data_cpus=0.25",
        "train.contrastive_cuts=2",
        *extra,
    ]
    return load_config(REPO / "configs" / "quickstart.yaml", overrides)
