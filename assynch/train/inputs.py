"""Shard rows -> model inputs for a training step (plain torch, no Ray).

A batch arrives as numpy/torch columns (`frames` uint8 (B, T, H, W, 3), `mel` float (B, M, F),
`offset_sec`, `offset_class`, `audio_margin_sec`, `sample_id`). Turning the uint8 frames into
normalised float segments multiplies their size by ~8, so it happens here, on the step's device,
not on the data side.

Offsets follow docs/DESIGN.md: positive d means the audio is early. With fresh offsets the audio
is re-cut from the stored margin (`stream_sample_to_model_inputs`' arithmetic), the video never
moves. AS-Synchformer's contrastive candidates are more re-cuts of the same stored audio
(`draw_contrastive_classes`, `to_model_inputs(contrastive_classes=...)`).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from assynch.config import AssynchConfig
from assynch.media.features import segment_mels
from assynch.models.contrastive import contrastive_offset_classes, hypotheses_for_offsets
from assynch.samples.model_inputs import audio_segment_start_frames, batch_video_segments
from assynch.samples.offsets import offset_grid_sec
from assynch.samples.plan import segment_samples, source_video_uid

BATCH_COLUMNS = ("sample_id", "offset_sec", "offset_class", "audio_margin_sec", "frames", "mel")
_CUTS_STREAM = 1  # keeps draw_contrastive_classes' random stream apart from draw_offset_classes'


@dataclass
class StreamBatch:
    """Stream samples as stored: frames uint8 (B, T, H, W, 3), mel (B, M, F)."""

    sample_id: list[str]
    frames: Tensor
    mel: Tensor
    offset_sec: Tensor  # float64 (B,), the stored offsets
    offset_class: Tensor  # int64 (B,)
    audio_margin_sec: Tensor  # float64 (B,)

    def __len__(self) -> int:
        return len(self.sample_id)

    @classmethod
    def from_columns(cls, columns: Mapping[str, Any]) -> StreamBatch:
        """numpy arrays, torch tensors or lists per column (Ray Data's numpy batches,
        ShardDataset's dicts)."""
        missing = [name for name in BATCH_COLUMNS if name not in columns]
        if missing:
            raise ValueError(f"a training batch needs the columns {missing}")
        sample_ids = [
            value.decode() if isinstance(value, bytes) else str(value)
            for value in list(columns["sample_id"])
        ]
        return cls(
            sample_id=sample_ids,
            frames=torch.as_tensor(np.asarray(columns["frames"])),
            mel=torch.as_tensor(np.asarray(columns["mel"])).to(torch.float32),
            offset_sec=torch.as_tensor(np.asarray(columns["offset_sec"], dtype=np.float64)),
            offset_class=torch.as_tensor(np.asarray(columns["offset_class"], dtype=np.int64)),
            audio_margin_sec=torch.as_tensor(
                np.asarray(columns["audio_margin_sec"], dtype=np.float64)
            ),
        )


def draw_offset_classes(
    batch: StreamBatch, config: AssynchConfig, *, epoch: int, seed: int
) -> Tensor:
    """A fresh offset class per sample for this epoch: uniform over the grid classes whose
    re-cut stays inside the stored audio margin. Deterministic per (seed, epoch, sample_id), so
    a restarted epoch and every rank draw the same ones, whatever the batch order."""
    grid = offset_grid_sec(config.time)
    classes = []
    for sample_id, stored, margin in zip(
        batch.sample_id, batch.offset_sec.tolist(), batch.audio_margin_sec.tolist(), strict=True
    ):
        allowed = np.flatnonzero(np.abs(grid - stored) <= margin + 1e-6)
        rng = np.random.default_rng([seed, epoch, zlib.crc32(sample_id.encode())])
        classes.append(int(rng.choice(allowed)))
    return torch.tensor(classes, dtype=torch.int64)


def audio_at_offsets(
    mel: Tensor,
    *,
    stored_offset_sec: float,
    audio_margin_sec: float,
    offsets_sec: Sequence[float],
    config: AssynchConfig,
) -> Tensor:
    """One stored mel (M, F) re-cut for each offset -> (len(offsets), W, S, M, segment frames).

    Offset d shows the audio of [t + d, t + d + L): the contrastive loss's negatives (the same
    stream's audio at other offsets) come from here too.
    """
    cuts = []
    for offset in offsets_sec:
        shift = float(offset) - stored_offset_sec
        if abs(shift) > audio_margin_sec + 1e-6:
            raise ValueError(
                f"offset {offset} s is {abs(shift):.3f} s from the stored offset "
                f"{stored_offset_sec} s, beyond the stored audio margin of {audio_margin_sec} s"
            )
        starts = audio_segment_start_frames(
            config.time, config.audio, audio_margin_sec=audio_margin_sec, shift_sec=shift
        )
        cuts.append(
            segment_mels(
                mel, starts, audio_cfg=config.audio, segment_samples=segment_samples(config.time)
            )
        )
    return torch.stack(cuts)


def draw_contrastive_classes(
    batch: StreamBatch,
    labels: Tensor,
    count: int,
    config: AssynchConfig,
    *,
    epoch: int,
    seed: int,
) -> Tensor:
    """AS-Synchformer's contrastive audio cuts: (B, count) absolute offset classes per stream.

    `contrastive_offset_classes` per sample: the in-sync cut (0 s) first unless the label is 0 s
    (then the model's own input is the in-sync candidate), the rest distinct and random, never the
    label's own class, all within the sample's stored audio margin. Deterministic per (seed,
    epoch, sample_id) like `draw_offset_classes`: the same cuts on any rank, in any batch order,
    after a restart.
    """
    classes = config.time.num_offset_classes
    rows = []
    for index, sample_id in enumerate(batch.sample_id):
        margin = int(float(batch.audio_margin_sec[index]) / config.time.offset_step_sec + 1e-6)
        rng = np.random.default_rng([seed, epoch, zlib.crc32(sample_id.encode()), _CUTS_STREAM])
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        cuts, _ = contrastive_offset_classes(
            labels[index : index + 1].cpu(), count, classes, generator,
            stored_classes=batch.offset_class[index : index + 1], margin_classes=margin,
        )
        rows.append(cuts)
    return torch.cat(rows) if rows else torch.zeros((0, count), dtype=torch.int64)


@dataclass
class ModelInputs:
    video: Tensor  # (B, W, S, F, 3, H, W) float, normalised
    audio: Tensor  # (B, W, S, M, segment frames)
    offset_class: Tensor  # (B,) the label the inputs show
    contrastive_audio: Tensor | None = None  # (B, W, N, S, M, segment frames)
    contrastive_hypotheses: Tensor | None = None  # (B, N): the label under which each is in sync
    source_ids: Tensor | None = None  # (B,) one id per source video (not each other's negatives)


def source_ids(sample_ids: Sequence[str]) -> Tensor:
    """(B,) an integer per source video: streams cut from one video share it, so the contrastive
    loss never takes one as the other's negative (their relative timing is unknown)."""
    return torch.tensor(
        [zlib.crc32(source_video_uid(sample_id).encode()) for sample_id in sample_ids],
        dtype=torch.int64,
    )


def to_model_inputs(
    batch: StreamBatch,
    config: AssynchConfig,
    *,
    device: torch.device | str = "cpu",
    offset_class: Tensor | None = None,
    contrastive_classes: Tensor | None = None,
) -> ModelInputs:
    """The inputs of a step: the stored offsets, or `offset_class` (B,) re-cut from the margin.

    With `contrastive_classes` (B, N) absolute offset classes (`draw_contrastive_classes`) also
    AS-Synchformer's contrastive audio candidates: each stream's audio re-cut at those offsets,
    (B, W, N, S, M, F), and their hypotheses (B, N), h = label - cut + centre: the label under
    which that audio is in sync with the video (docs/MODELS.md). The cut at 0 s has h = label
    (the positive); a cut at the label's own offset would be the input audio itself (h = 0 s).
    """
    grid = offset_grid_sec(config.time)
    labels = batch.offset_class if offset_class is None else offset_class
    labels = labels.cpu()
    cut_classes = (
        labels[:, None] if contrastive_classes is None
        else torch.cat((labels[:, None], contrastive_classes.cpu().long()), dim=1)
    )  # (B, 1 + N): the input's own offset first, then the candidates'
    cuts = [
        audio_at_offsets(
            batch.mel[index].float(),
            stored_offset_sec=float(batch.offset_sec[index]),
            audio_margin_sec=float(batch.audio_margin_sec[index]),
            offsets_sec=[float(grid[int(c)]) for c in cut_classes[index]],
            config=config,
        )  # (1 + N, W, S, M, F)
        for index in range(len(batch))
    ]
    frames = batch.frames.to(device, non_blocking=True)
    inputs = ModelInputs(
        video=batch_video_segments(frames, config.time, config.video),
        audio=torch.stack([cut[0] for cut in cuts]).to(device, non_blocking=True),
        offset_class=labels.to(device),
        source_ids=source_ids(batch.sample_id).to(device),
    )
    if contrastive_classes is not None:
        candidates = torch.stack([cut[1:].transpose(0, 1) for cut in cuts])  # (B, W, N, ...)
        inputs.contrastive_audio = candidates.to(device, non_blocking=True)
        inputs.contrastive_hypotheses = hypotheses_for_offsets(
            labels, cut_classes[:, 1:], config.time.num_offset_classes
        ).to(device)
    return inputs
