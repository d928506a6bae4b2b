"""Offset probabilities of stored stream samples, in the two evaluation modes.

- snapshot: each window alone, i.e. the model stepped once from its initial state (no memory of
  earlier windows). For the snapshot model and APA this is the snapshot logits; for StreamSync
  and AS-Synchformer it is the model with an empty history.
- streaming: the windows of a sample in order through `model.step`, carrying the model's own
  state, exactly as a deployed stream would (the prediction after window k sees windows 0..k).

Work is cut into `WorkItem`s, one Parquet row group each, so that any executor (Ray Data actors
in pipelines/evaluate.py, a plain loop in tests) can spread them; each item yields one
`Prediction` per stream sample. No Ray and no MLflow here.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from assynch.config import AssynchConfig, StorageConfig
from assynch.models import StreamingModel, Window, load_model_checkpoint, save_model_checkpoint
from assynch.samples.model_inputs import stream_sample_to_model_inputs
from assynch.shards.dataset import table_to_batch
from assynch.storage import filesystem

MODES = ("snapshot", "streaming")
COLUMNS = [
    "video_uid", "sample_id", "offset_sec", "offset_class", "audio_margin_sec", "frames", "mel",
]


@dataclass(frozen=True)
class WorkItem:
    """One row group of one shard file."""

    path: str
    row_group: int

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "row_group": self.row_group}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorkItem:
        return cls(str(data["path"]), int(data["row_group"]))


@dataclass
class Prediction:
    """One stream sample: its ids, true class and (W, C) probabilities per mode."""

    video_uid: str
    sample_id: str
    offset_class: int
    probs: dict[str, np.ndarray]

    def to_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "video_uid": self.video_uid, "sample_id": self.sample_id,
            "offset_class": self.offset_class,
        }
        for mode, values in self.probs.items():
            row[f"probs_{mode}"] = values.astype(np.float32)
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Prediction:
        probs = {
            key.removeprefix("probs_"): np.asarray(value, dtype=np.float32)
            for key, value in row.items() if key.startswith("probs_")
        }
        return cls(str(row["video_uid"]), str(row["sample_id"]), int(row["offset_class"]), probs)


def work_items(
    url: str, files: Sequence[str], storage: StorageConfig | None = None
) -> list[WorkItem]:
    """Every row group of `files` (paths on the filesystem of the shard set `url`), in order."""
    if not files:
        return []
    fs, _ = filesystem(url, storage or StorageConfig())
    items = []
    for path in files:
        with fs.open(path, "rb") as handle:
            groups = pq.ParquetFile(handle).metadata.num_row_groups
        items.extend(WorkItem(path, group) for group in range(groups))
    return items


def read_work_item(
    item: WorkItem, url: str, storage: StorageConfig | None = None
) -> pa.Table:
    fs, _ = filesystem(url, storage or StorageConfig())
    with fs.open(item.path, "rb") as handle:
        return pq.ParquetFile(handle).read_row_group(item.row_group, columns=COLUMNS)


def model_inputs(batch: dict[str, Any], config: AssynchConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of shard rows (`table_to_batch`) -> video (B, W, S, F, 3, H, W), audio
    (B, W, S, M, T), each sample shown with its stored offset."""
    videos, audios = [], []
    for index in range(len(batch["video_uid"])):
        video, audio = stream_sample_to_model_inputs(
            batch["frames"][index], batch["mel"][index], time=config.time, video=config.video,
            audio=config.audio, audio_margin_sec=float(batch["audio_margin_sec"][index]),
            stored_offset_sec=float(batch["offset_sec"][index]),
        )
        videos.append(video)
        audios.append(audio)
    return torch.stack(videos), torch.stack(audios)


@torch.no_grad()
def predict_streams(
    model: StreamingModel, video: torch.Tensor, audio: torch.Tensor, modes: Sequence[str] = MODES
) -> dict[str, torch.Tensor]:
    """Whole streams (B, W, ...) -> {mode: probabilities (B, W, C)} (float32, on the CPU)."""
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown:
        raise ValueError(f"unknown evaluation modes {unknown}; use {', '.join(MODES)}")
    batch, windows = video.shape[:2]
    out: dict[str, torch.Tensor] = {}
    if "snapshot" in modes:
        # Every window of every stream alone: one step from a fresh state, all at once.
        flat = Window(video.flatten(0, 1), audio.flatten(0, 1))
        logits, _ = model.step(flat, model.init_state(batch * windows))
        out["snapshot"] = logits.float().softmax(-1).view(batch, windows, -1).cpu()
    if "streaming" in modes:
        state = model.init_state(batch)
        steps = []
        for index in range(windows):
            logits, state = model.step(Window(video[:, index], audio[:, index]), state)
            steps.append(logits.float().softmax(-1))
        out["streaming"] = torch.stack(steps, dim=1).cpu()
    return out


def predict_table(
    model: StreamingModel,
    config: AssynchConfig,
    table: pa.Table,
    *,
    batch_size: int,
    modes: Sequence[str] = MODES,
) -> Iterator[Prediction]:
    """Predictions for every row of `table`, `batch_size` rows per forward pass."""
    device = next(model.parameters()).device
    for start in range(0, table.num_rows, batch_size):
        batch = table_to_batch(table.slice(start, batch_size))
        video, audio = model_inputs(batch, config)
        probs = predict_streams(model, video.to(device), audio.to(device), modes)
        for index, uid in enumerate(batch["video_uid"]):
            yield Prediction(
                video_uid=uid,
                sample_id=batch["sample_id"][index],
                offset_class=int(batch["offset_class"][index]),
                probs={mode: values[index].numpy() for mode, values in probs.items()},
            )


class Predictor:
    """What one worker holds: the model, its config and the run settings."""

    def __init__(
        self,
        model: StreamingModel,
        config: AssynchConfig,
        *,
        shards: str,
        batch_size: int,
        modes: Sequence[str],
        storage: StorageConfig | None = None,
    ) -> None:
        self.model = model.eval()
        self.config = config
        self.shards = shards
        self.batch_size = batch_size
        self.modes = tuple(modes)
        self.storage = storage or StorageConfig()

    def __call__(self, item: WorkItem) -> list[Prediction]:
        table = read_work_item(item, self.shards, self.storage)
        return list(predict_table(
            self.model, self.config, table, batch_size=self.batch_size, modes=self.modes
        ))


def model_to_bytes(model: StreamingModel, config: AssynchConfig) -> bytes:
    """The model as checkpoint bytes (`save_model_checkpoint`'s format) to ship to workers."""
    with tempfile.TemporaryDirectory() as folder:
        path = save_model_checkpoint(model, config, os.path.join(folder, "model.pt"))
        return path.read_bytes()


def model_from_bytes(payload: bytes) -> tuple[StreamingModel, AssynchConfig]:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.pt")
        with open(path, "wb") as handle:
            handle.write(payload)
        return load_model_checkpoint(path)


def predictions_table(predictions: Sequence[Prediction]) -> pa.Table:
    """Predictions as an Arrow table (probabilities as fixed-shape float32 tensors)."""
    columns: dict[str, Any] = {
        "video_uid": pa.array([p.video_uid for p in predictions], pa.string()),
        "sample_id": pa.array([p.sample_id for p in predictions], pa.string()),
        "offset_class": pa.array([p.offset_class for p in predictions], pa.int32()),
    }
    for mode in (predictions[0].probs if predictions else {}):
        stacked = np.ascontiguousarray(np.stack([p.probs[mode] for p in predictions]))
        columns[f"probs_{mode}"] = pa.FixedShapeTensorArray.from_numpy_ndarray(stacked)
    return pa.table(columns)


def write_predictions(predictions: Sequence[Prediction], path: str) -> None:
    buffer = io.BytesIO()
    pq.write_table(predictions_table(predictions), buffer, compression="zstd")
    with open(path, "wb") as handle:
        handle.write(buffer.getvalue())
