"""pipelines.train on the session's local Ray: 2 DDP workers (gloo on CPU) fed by Ray Data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import torch
from train_support import train_config

from assynch.errors import UserError
from pipelines.train import run


def _train_ids(shards: str) -> list[str]:
    files = sorted((Path(shards) / "train").glob("*.parquet"))
    return sorted(i for f in files for i in pq.read_table(f, columns=["sample_id"])
                  .column("sample_id").to_pylist())


def test_two_workers_see_each_sample_once_and_stay_identical(
    train_shards: dict[str, Any], tmp_path: Path
) -> None:
    audit = tmp_path / "audit"
    audit.mkdir()
    # batch 1 and 3 micro-batches per step: uneven shares (7 samples), zero-weight joins and a
    # last, partial accumulation per epoch all take part.
    config = train_config(train_shards["shards"], str(tmp_path / "runs"), "train.epochs=3",
                          "train.num_workers=2", "train.resample_offsets=false",
                          "train.batch_size=1", "train.grad_accum_steps=3",
                          "train.run_name=ddp")
    result = run(config, audit_dir=str(audit))
    assert result.error is None
    assert int(result.metrics["epoch"]) == 3

    expected = _train_ids(train_shards["shards"])
    records = [json.loads(line) for rank in (0, 1)
               for line in (audit / f"rank{rank}.jsonl").read_text().splitlines()]
    for epoch in (1, 2, 3):
        by_rank = {r["rank"]: r for r in records if r["epoch"] == epoch}
        assert set(by_rank) == {0, 1}
        seen = by_rank[0]["sample_ids"] + by_rank[1]["sample_ids"]
        assert sorted(seen) == expected, (epoch, by_rank)  # each sample once, none missing
        assert by_rank[0]["param_digest"] == by_rank[1]["param_digest"], epoch

    state = torch.load(Path(result.checkpoint.path) / "train_state.pt", weights_only=True)
    history = state["progress"]["history"]
    assert [int(row["epoch"]) for row in history] == [1, 2, 3]
    assert all(row["train/samples"] == len(expected) for row in history)
    # AS-Synchformer got its 2 re-cut contrastive audios per stream on both ranks (train_config)
    assert all(row["train/contrastive_cuts"] == 2 for row in history), history
    losses = [row["train/cross_entropy"] for row in history]
    assert losses[-1] < losses[0], losses
    # ceil(longest share / 3) steps per epoch: Ray Data hands blocks to whichever rank asks
    assert 3 * 2 <= state["progress"]["step"] <= 3 * 3, state["progress"]["step"]
    checkpoint = Path(result.checkpoint.path)
    assert {"model.pt", "train_state.pt"} <= {p.name for p in checkpoint.iterdir()}


def test_bad_inputs_fail_before_any_worker(train_shards: dict[str, Any], tmp_path: Path) -> None:
    shards = train_shards["shards"]
    bad = tmp_path / "other.pt"
    torch.save({"model": {"some.other.weight": torch.zeros(3)}}, bad)
    cases = {
        "no _manifest.json": train_config(str(tmp_path / "nothing"), str(tmp_path)),
        "is empty": train_config(shards, str(tmp_path), "train.val_split=test"),
        "another time base": train_config(shards, str(tmp_path), "time.stream_hop_sec=2.0"),
        "not found": train_config(shards, str(tmp_path), "model.pretrained_checkpoint="
                                  + str(tmp_path / "missing.pt")),
        "does not fit": train_config(shards, str(tmp_path), f"model.pretrained_checkpoint={bad}"),
        "cannot write": train_config(shards, "/proc/forbidden/runs"),
    }
    for expected, config in cases.items():
        with pytest.raises(UserError, match=expected):
            run(config)
