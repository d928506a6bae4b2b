"""Run a streaming model over every window of a video and collect per-window probabilities.

Each window is encoded once (`StreamingModel.encode`, batched over a block of windows: the
encoders do not depend on the stream state) and only its encoder features are kept. The
prediction for window k then comes from the rest of the model (`step_features`) run from a fresh
state over the last `context` windows' features (k - context + 1 .. k): the history the model was
trained with (`time.windows_per_sample` windows per stream sample), so it never reads a longer
history than it has seen in training, and a change of offset reaches the timeline after at most
`context` windows. `context=None` carries one state through the whole video instead. The
prediction is placed at the centre of the video span it has seen.
"""

from __future__ import annotations

import logging
import time as clock
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from assynch.config import AssynchConfig
from assynch.detect.windows import StreamSummary, WindowCutter, iter_window_blocks
from assynch.media.decode import DecodedChunk, iter_decode
from assynch.models.snapshot import SegmentFeatures
from assynch.models.streaming import StreamingModel, Window
from assynch.samples.plan import window_hop_frames

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowResults:
    """Per-window results of one video, in window order."""

    start_sec: np.ndarray  # (K,) window start
    center_sec: np.ndarray  # (K,) centre of the span the prediction has seen
    probabilities: np.ndarray  # (K, C) float32
    audio_db: np.ndarray  # (K,)
    motion: np.ndarray  # (K,)
    summary: StreamSummary
    wall_sec: float

    @property
    def count(self) -> int:
        return int(self.start_sec.shape[0])


class _Predictor:
    def __init__(self, model: StreamingModel, context: int | None) -> None:
        self.model = model
        self.context = context
        self.features: deque[SegmentFeatures] = deque(maxlen=context or 1)
        self.state = model.init_state(1) if context is None else None

    def __call__(self, features: SegmentFeatures) -> torch.Tensor:
        """One window's encoder features (1, S, tokens, D) -> the logits (1, C) after it."""
        if self.context is None:
            logits, self.state = self.model.step_features(features, self.state)
            return logits
        self.features.append(features)
        state = self.model.init_state(1)
        for past in self.features:
            logits, state = self.model.step_features(past, state)
        return logits


def run_windows(
    source: str,
    model: StreamingModel,
    config: AssynchConfig,
    *,
    context: int | None,
    storage_options: dict[str, Any] | None = None,
    block_windows: int = 8,
    on_progress: Callable[[float, float | None], None] | None = None,
) -> WindowResults:
    """Decode `source` once (streaming) and predict every window; memory stays bounded."""
    if context is not None and context < 1:
        raise ValueError(f"context must be >= 1 window or None, got {context}")
    started = clock.perf_counter()
    time = config.time
    cutter = WindowCutter(config, block_windows=block_windows)
    predictor = _Predictor(model, context)
    hop_sec = window_hop_frames(time) / time.fps
    starts, probabilities, audio_db, motion = [], [], [], []

    def progress(chunk: DecodedChunk) -> None:
        if on_progress is not None:
            info = chunk.info
            on_progress(chunk.stop_frame / time.fps,
                        info.video_duration_sec or info.container_duration_sec)

    chunks = iter_decode(source, time=time, video=config.video, storage_options=storage_options)
    model.eval()
    with torch.inference_mode():
        for block in iter_window_blocks(chunks, cutter, progress):
            features = model.encode(Window(block.video, block.audio))
            for i in range(block.count):
                logits = predictor(SegmentFeatures(features.visual[i : i + 1],
                                                   features.audio[i : i + 1]))
                probabilities.append(logits.float().softmax(dim=-1)[0].numpy())
                starts.append((block.first_window + i) * hop_sec)
            audio_db.extend(block.audio_db.tolist())
            motion.extend(block.motion.tolist())
    start_sec = np.round(np.asarray(starts, dtype=np.float64), 6)
    seen = 1 if context is None else context
    first_seen = np.maximum(np.arange(len(starts)) - seen + 1, 0) * hop_sec
    center_sec = np.round((first_seen + start_sec + time.window_sec) / 2, 6)
    if context is None:
        center_sec = np.round(start_sec + time.window_sec / 2, 6)
    classes = time.num_offset_classes
    return WindowResults(
        start_sec=start_sec,
        center_sec=center_sec,
        probabilities=np.asarray(probabilities, dtype=np.float32).reshape(-1, classes),
        audio_db=np.asarray(audio_db, dtype=np.float64),
        motion=np.asarray(motion, dtype=np.float64),
        summary=cutter.summary,
        wall_sec=clock.perf_counter() - started,
    )
