"""`draw_contrastive_classes` without shards: which offsets AS-Synchformer's contrastive audio is
re-cut at in training (the cuts themselves are tested on real shards in test_loop.py)."""

from __future__ import annotations

import pytest
import torch
from train_support import REPO

from assynch.config import ConfigError, load_config
from assynch.train.inputs import StreamBatch, draw_contrastive_classes, draw_offset_classes


def _batch(stored_classes: list[int], margin_sec: float = 2.0) -> StreamBatch:
    count = len(stored_classes)
    return StreamBatch(
        sample_id=[f"video{i}-{i:03d}" for i in range(count)],
        frames=torch.zeros((count, 1, 1, 1, 3), dtype=torch.uint8),
        mel=torch.zeros((count, 1, 1)),
        offset_sec=torch.tensor([(c - 10) * 0.2 for c in stored_classes], dtype=torch.float64),
        offset_class=torch.tensor(stored_classes),
        audio_margin_sec=torch.full((count,), margin_sec, dtype=torch.float64),
    )


def test_every_reachable_label_has_the_largest_allowed_number_of_cuts() -> None:
    """For every stored offset and every label the margin reaches, 10 (= the config's maximum,
    half the grid) distinct cuts exist: within the margin, never the label, hypotheses on the
    grid, the in-sync cut (0 s) first unless the label is 0 s."""
    config = load_config(REPO / "configs" / "tiny.yaml")
    centre, most = 10, 10
    for stored in range(21):
        labels = [k for k in range(21) if abs(k - stored) <= 10]
        batch = _batch([stored] * len(labels))
        cuts = draw_contrastive_classes(batch, torch.tensor(labels), most, config, epoch=0, seed=0)
        assert cuts.shape == (len(labels), most)
        for label, row in zip(labels, cuts.tolist(), strict=True):
            assert len(set(row)) == most and label not in row
            assert all(abs(c - stored) <= 10 and 0 <= label - c + centre <= 20 for c in row)
            if label != centre:
                assert row[0] == centre


def test_cuts_are_deterministic_per_sample_whatever_the_batch() -> None:
    config = load_config(REPO / "configs" / "tiny.yaml")
    batch = _batch([3, 10, 17, 10])
    labels = draw_offset_classes(batch, config, epoch=2, seed=5)
    cuts = draw_contrastive_classes(batch, labels, 4, config, epoch=2, seed=5)
    alone = [draw_contrastive_classes(
        StreamBatch([batch.sample_id[i]], batch.frames[i:i + 1], batch.mel[i:i + 1],
                    batch.offset_sec[i:i + 1], batch.offset_class[i:i + 1],
                    batch.audio_margin_sec[i:i + 1]),
        labels[i:i + 1], 4, config, epoch=2, seed=5) for i in range(4)]
    assert torch.equal(cuts, torch.cat(alone))  # the same cuts on any rank, in any batch
    epochs = {tuple(draw_contrastive_classes(batch, labels, 4, config, epoch=e, seed=5)
                    .flatten().tolist()) for e in range(4)}
    assert len(epochs) > 1  # fresh cuts each epoch


def test_config_default_and_limit() -> None:
    config = load_config(REPO / "configs" / "tiny.yaml")
    assert config.train.contrastive_cuts == 2
    assert load_config(REPO / "configs" / "tiny.yaml",
                       ["train.contrastive_cuts=10"]).train.contrastive_cuts == 10
    with pytest.raises(ConfigError, match="contrastive_cuts"):
        load_config(REPO / "configs" / "tiny.yaml", ["train.contrastive_cuts=11"])


def test_streams_of_one_video_share_a_source_id_so_they_are_not_negatives() -> None:
    """The training inputs carry one source id per video (sample ids are `{video_uid}-NNN`),
    which the contrastive loss uses to keep streams of the same video apart."""
    from assynch.samples.plan import source_video_uid
    from assynch.train.inputs import source_ids

    assert source_video_uid("ego-4d_clip-7-012") == "ego-4d_clip-7"
    ids = source_ids(["a-000", "a-001", "b-000", "a-b-000"])
    assert ids[0] == ids[1]
    assert len({int(ids[0]), int(ids[2]), int(ids[3])}) == 3
