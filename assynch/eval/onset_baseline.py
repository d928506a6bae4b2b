"""The non-learned peer: onset cross-correlation of visual change energy and audio onset strength.

What a user would try first, with no training. From exactly the inputs a learned model gets for
a stored stream sample (its uint8 frames and its stored log-mel with the audio margin):

- visual change energy: per frame, the mean absolute difference to the previous frame (all
  pixels and channels), within each window;
- audio onset strength: positive spectral flux of the stored log-mel (mean over mel bins of the
  frame-to-frame rise), summed over the mel frames of each video frame;
- per window and per offset class d, the Pearson correlation of the window's visual energy at
  window time tau with the onset strength at audio time tau - d (the sign of DESIGN.md: in a
  sample labelled d, a sound comes d seconds before its picture);
- per stream sample, the mean of the window correlations over the windows seen so far, times
  `scale`, as logits over the classes (softmax for probabilities), so that
  `assynch.eval.metrics` scores it after every window.

Audio positions come from `assynch.samples.model_inputs.audio_segment_start_frames`, the same
helper that cuts the model's audio segments: window w's audio starts at mel frame base_w of the
stored mel. With `context="margin"` (default) the audio at a lag may reach into the stored
margin (up to the largest offset on both sides), so every lag is scored over the whole window;
with `context="window"` only the window's own audio (what one snapshot model input holds) is
used and each lag is scored over the overlap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from assynch.config import AssynchConfig, AudioFeatures, TimeBase
from assynch.samples.model_inputs import audio_segment_start_frames
from assynch.samples.offsets import offset_grid_sec
from assynch.samples.plan import sample_frames, window_hop_frames
from assynch.shards.dataset import ShardDataset

Context = Literal["margin", "window"]
VisualSignal = Callable[[np.ndarray], np.ndarray]  # (T, H, W, 3) uint8 -> (T,), NaN = unknown

DEFAULT_SCALE = 20.0  # logits = scale * mean correlation; a correlation lies in [-1, 1]
MIN_PAIRS = 8  # a lag scored over fewer (frame, audio) pairs gets correlation 0


def visual_change_energy(frames_u8: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T,) mean absolute difference to the previous frame; NaN for
    frame 0, which has no previous frame."""
    frames = np.asarray(frames_u8)
    if frames.ndim != 4 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    energy = np.full(frames.shape[0], np.nan, dtype=np.float64)
    if frames.shape[0] > 1:
        change = np.abs(np.diff(frames.astype(np.int16), axis=0))
        energy[1:] = change.reshape(change.shape[0], -1).mean(axis=1)
    return energy


def audio_onset_strength(mel: np.ndarray) -> np.ndarray:
    """(n_mels, F) log-mel (normalised or not) -> (F,) positive spectral flux: the mean over
    bins of the rise since the previous mel frame (0 for frame 0)."""
    values = np.asarray(mel, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"mel must be (n_mels, frames), got shape {values.shape}")
    rise = np.maximum(np.diff(values, axis=1), 0.0).mean(axis=0)
    return np.concatenate([[0.0], rise])


def _pearson_rows(x: np.ndarray, y: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Pearson correlation of x (n,) with each row of y (C, n) over `valid` (C, n) pairs."""
    weights = valid.astype(np.float64)
    count = weights.sum(axis=1)
    xs = np.where(valid, x[None, :], 0.0)
    ys = np.where(valid, y, 0.0)
    safe = np.maximum(count, 1.0)
    x_mean = xs.sum(axis=1) / safe
    y_mean = ys.sum(axis=1) / safe
    xc = (xs - x_mean[:, None]) * weights
    yc = (ys - y_mean[:, None]) * weights
    denominator = np.sqrt((xc**2).sum(axis=1) * (yc**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (xc * yc).sum(axis=1) / denominator
    corr[(count < MIN_PAIRS) | ~np.isfinite(corr)] = 0.0
    return corr


def window_correlations(
    frames_u8: np.ndarray,
    mel: np.ndarray,
    *,
    time: TimeBase,
    audio: AudioFeatures,
    audio_margin_sec: float,
    context: Context = "margin",
    visual: VisualSignal = visual_change_energy,
    shift_sec: float = 0.0,
) -> np.ndarray:
    """(W, C) correlation of visual change energy and audio onset strength per window and
    offset class, for one stored stream sample (frames from its start, mel with margin).
    `visual` replaces the per-frame visual signal (for diagnostics; the peer is the default).
    `shift_sec` shows the sample at another offset (offset - stored offset, within the margin),
    the same re-cut a model's audio gets (`audio_segment_start_frames`)."""
    if context not in ("margin", "window"):
        raise ValueError(f"context must be 'margin' or 'window', got {context!r}")
    needed = sample_frames(time)
    if frames_u8.shape[0] < needed:
        raise ValueError(f"frames cover {frames_u8.shape[0]} frames, a sample needs {needed}")
    mel_rate = time.sample_rate / audio.hop_length
    per_frame = max(1, int(round(mel_rate / time.fps)))  # mel frames per video frame
    flux = audio_onset_strength(mel)
    cumulative = np.concatenate([[0.0], np.cumsum(flux)])
    bases = audio_segment_start_frames(
        time, audio, audio_margin_sec=audio_margin_sec, shift_sec=shift_sec
    )[:, 0]
    hop = window_hop_frames(time)
    window_frames = time.window_frames
    window_mel = int(round(time.window_sec * mel_rate))
    tau = np.arange(window_frames) / time.fps
    lags = offset_grid_sec(time)
    # Mel frame of the audio paired with video frame j of a window at lag d, relative to base_w.
    relative = np.rint((tau[None, :] - lags[:, None]) * mel_rate).astype(np.int64)
    first = relative - per_frame // 2
    scores = np.zeros((time.windows_per_sample, lags.size))
    for window, base in enumerate(bases.tolist()):
        energy = visual(frames_u8[window * hop : window * hop + window_frames])
        start = base + first
        stop = start + per_frame
        if context == "window":
            inside = (start >= base) & (stop <= base + window_mel)
        else:
            inside = (start >= 0) & (stop <= flux.size)
        clipped_start = np.clip(start, 0, flux.size)
        clipped_stop = np.clip(stop, 0, flux.size)
        onset = cumulative[clipped_stop] - cumulative[clipped_start]
        valid = inside & np.isfinite(energy)[None, :]
        scores[window] = _pearson_rows(np.nan_to_num(energy), onset, valid)
    return scores


def streaming_logits(correlations: np.ndarray, scale: float = DEFAULT_SCALE) -> np.ndarray:
    """(W, C) window correlations -> (W, C) logits after each window: `scale` times the mean
    correlation over the windows seen so far."""
    seen = np.arange(1, correlations.shape[0] + 1)[:, None]
    return scale * np.cumsum(correlations, axis=0) / seen


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    weights = np.exp(shifted)
    return weights / weights.sum(axis=-1, keepdims=True)


def predict_stream_sample(
    frames_u8: np.ndarray,
    mel: np.ndarray,
    *,
    time: TimeBase,
    audio: AudioFeatures,
    audio_margin_sec: float,
    scale: float = DEFAULT_SCALE,
    context: Context = "margin",
) -> np.ndarray:
    """(W, C) logits of one stream sample after each window; the last row is its prediction."""
    correlations = window_correlations(
        frames_u8, mel, time=time, audio=audio, audio_margin_sec=audio_margin_sec,
        context=context,
    )
    return streaming_logits(correlations, scale)


@dataclass(frozen=True)
class SplitCorrelations:
    """Window correlations of every sample of a shard split (scale-free: logits come later)."""

    sample_ids: list[str]
    video_uids: list[str]
    targets: np.ndarray  # (N,) offset classes
    correlations: np.ndarray  # (N, W, C)

    def logits(self, scale: float = DEFAULT_SCALE) -> np.ndarray:
        """(N, W, C) streaming logits."""
        return np.stack([streaming_logits(c, scale) for c in self.correlations])

    def probabilities(self, scale: float = DEFAULT_SCALE) -> torch.Tensor:
        """(N, W, C) streaming probabilities, ready for `assynch.eval.metrics`."""
        return torch.from_numpy(softmax(self.logits(scale)))


def _iter_rows(url: str, split: str, config: AssynchConfig) -> Iterator[dict[str, object]]:
    dataset = ShardDataset(
        url, split, batch_size=4, storage=config.storage,
        columns=["sample_id", "video_uid", "offset_class", "audio_margin_sec", "frames", "mel"],
    )
    for batch in dataset:
        for index in range(len(batch["sample_id"])):
            yield {name: value[index] for name, value in batch.items()}


def correlate_split(
    url: str,
    split: str,
    config: AssynchConfig,
    *,
    context: Context = "margin",
    visual: VisualSignal = visual_change_energy,
) -> SplitCorrelations:
    """Window correlations of every stream sample of `split` in the shard set at `url`
    (made by the preprocessing job with `config`'s time base and audio features)."""
    ids: list[str] = []
    videos: list[str] = []
    targets: list[int] = []
    correlations: list[np.ndarray] = []
    for row in _iter_rows(url, split, config):
        frames = np.asarray(row["frames"], dtype=np.uint8)
        mel = np.asarray(row["mel"], dtype=np.float32)
        correlations.append(
            window_correlations(
                frames, mel, time=config.time, audio=config.audio,
                audio_margin_sec=float(row["audio_margin_sec"]),  # type: ignore[arg-type]
                context=context, visual=visual,
            )
        )
        ids.append(str(row["sample_id"]))
        videos.append(str(row["video_uid"]))
        targets.append(int(row["offset_class"]))  # type: ignore[call-overload]
    shape = (0, config.time.windows_per_sample, config.time.num_offset_classes)
    return SplitCorrelations(
        ids, videos, np.asarray(targets, dtype=np.int64),
        np.stack(correlations) if correlations else np.zeros(shape),
    )
