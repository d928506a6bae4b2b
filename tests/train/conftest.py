"""Fixtures of the training tests: real shards made by the real preprocessing job (local Ray)
from flash/beep clips."""

from __future__ import annotations

import json
from typing import Any

import pytest
from preprocess_support import good_clip
from train_support import CLIP_COUNT, CLIP_SEC, REPO, shard_overrides

from assynch.config import load_config


@pytest.fixture(scope="session")
def train_shards(ray_local: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """8 flash/beep clips -> `python -m pipelines.preprocess`'s `run` on the session's local Ray
    -> shards with a train and a val split (2 rows per shard file)."""
    from pipelines.preprocess import run

    root = tmp_path_factory.mktemp("train_shards")
    clips = root / "clips"
    clips.mkdir()
    for index in range(CLIP_COUNT):
        good_clip(clips / f"clip{index}.mp4", seed=index, duration_sec=CLIP_SEC)
    shards = root / "shards"
    config = load_config(REPO / "configs" / "quickstart.yaml", shard_overrides(clips, shards))
    run(config)
    manifest = json.loads((shards / "_manifest.json").read_text())
    assert manifest["splits"]["train"]["samples"] >= 4, manifest["splits"]
    assert manifest["splits"]["val"]["samples"] >= 1, manifest["splits"]
    return {"root": root, "clips": clips, "shards": str(shards), "manifest": manifest}
