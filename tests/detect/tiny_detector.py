"""Train a tiny offset detector in the test session, on synthetic `easy` clips, in under a minute.

The model is the project's tiny `snapshot` model (configs/tiny.yaml) with frozen, randomly
initialised encoders (`model.encoder_regime=frozen`); its projections and sync transformer learn.
What makes it learn in a few hundred steps is the sync transformer's lag-correlation path
(`model.lag_correlation`, on by default; docs/MODELS.md): the frozen random features carry the
timing of events (their change from token to token lines up across the modalities), and the lag
path compares visual and audio tokens at each offset's lag directly. Without it the model stayed
at chance (docs/DETECT.md, Tests).

Because the encoders are frozen, their features are computed once per clip through the model's
own API (`snapshot.encode_video` / `encode_audio`): visual features for every segment start on the
8-frame grid, audio features for every segment start on the 4-mel-frame (0.04 s) grid, from the
decoded arrays and one continuous normalised log-mel (as training and `windows_to_model_inputs`
build them). A training example is a window start t (on the 8-frame grid) and an offset d (one of
the 21 classes): visual segments at t + s * 0.32 s, audio segments at t + d + s * 0.32 s, label d
(positive d: audio early, docs/DESIGN.md; an event seen at window time u is heard at u - d, as
`snapshot.lag_kernel` expects). The features of a window are laid out as the encoders give them
for it, (S, 8, Dv) and (S, 6, Da) segment-major, so the lag kernel's token times
(`snapshot.token_times`) hold. `model.forward_features` runs the rest of the model on them. The
trained weights are saved as an ordinary checkpoint, and `assynch detect` runs the whole model
(encoders included) on new files.

Clips: `assynch.synth` at `easy` (flashes, appearances and knocks), 160x120, with denser events
than the default (a mean gap of 2.5 s), no camera motion, no distractors and no ambient noise, so
a window nearly always holds an event and nothing else moves or sounds (`TRAINING_SPEC`).
"""

from __future__ import annotations

import time as clock
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from assynch.config import AssynchConfig
from assynch.media.decode import decode_all
from assynch.media.features import normalised_log_mel, segment_mels
from assynch.models import build_model, cross_entropy, squared_emd
from assynch.models.snapshot import SegmentFeatures
from assynch.models.streaming import StreamingModel
from assynch.samples.plan import segment_samples
from assynch.synth.clips import SynthSpec, generate_clip

GRID_FRAMES = 8  # window starts and visual segment starts
AUDIO_GRID = 4  # mel frames between audio segment starts (0.04 s)
MEL_PER_SEC = 100

SUMMARY: list[str] = []  # what the session's training reached, for the terminal summary

TRAINING_SPEC = SynthSpec(
    difficulty="easy", width=160, height=120, event_interval_sec=2.5, min_event_gap_sec=1.0,
    distractors=False, ambient_noise=False, camera_motion=False,
)


def synth_clip(path: Path, seconds: float, seed: int, spec: SynthSpec = TRAINING_SPEC) -> Path:
    """One synthetic clip (and its sidecar of events) at `path`."""
    generate_clip(path, duration_sec=seconds, seed=seed, spec=spec)
    return path


@dataclass
class ClipFeatures:
    visual: torch.Tensor  # (n_visual_segments, 8, Dv) at frames 0, 8, 16, ...
    audio: torch.Tensor  # (n_audio_segments, 6, Da) at mel frames 0, 4, 8, ...
    frames: int

    def window_starts(self, config: AssynchConfig) -> range:
        """Window starts (grid steps) whose audio at every offset lies inside the clip."""
        time = config.time
        margin = int(np.ceil(time.max_offset_sec * time.fps / GRID_FRAMES))
        last = (self.frames - time.window_frames) // GRID_FRAMES - margin
        return range(margin, last)

    def window(self, start: int, offset_class: int, config: AssynchConfig
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder features (S, 8, Dv), (S, 6, Da) of the window at grid step `start` whose
        audio is cut at `offset_class` (audio at t + d for video at t)."""
        time = config.time
        segments = np.arange(time.segments_per_window)
        mel_per_frame = MEL_PER_SEC / time.fps
        offset_mel = round((offset_class - time.num_offset_classes // 2)
                           * time.offset_step_sec * MEL_PER_SEC)
        audio_mel = (start * GRID_FRAMES + time.segment_stride_frames * segments) * mel_per_frame
        audio_index = ((audio_mel + offset_mel) / AUDIO_GRID).astype(np.int64)
        return self.visual[start + segments], self.audio[audio_index]


def clip_features(model: StreamingModel, path: Path, config: AssynchConfig) -> ClipFeatures:
    time, video_cfg = config.time, config.video
    media = decode_all(str(path), time=time, video=video_cfg)
    frames = torch.as_tensor(media.frames)
    starts = np.arange(0, frames.shape[0] - time.segment_frames + 1, GRID_FRAMES)
    index = torch.as_tensor(starts)[:, None] + torch.arange(time.segment_frames)
    video = frames[index].permute(0, 1, 4, 2, 3).float()
    video = (video / 255.0 - video_cfg.mean) / video_cfg.std
    mel = normalised_log_mel(media.audio, config.audio, time.sample_rate)
    taken = 1 + segment_samples(time) // config.audio.hop_length
    mel_starts = np.arange(0, mel.shape[-1] - taken + 1, AUDIO_GRID)
    audio = segment_mels(mel, mel_starts, audio_cfg=config.audio,
                         segment_samples=segment_samples(time))
    snapshot = model.snapshot
    with torch.no_grad():  # one segment per "window": (N, 1, ...) -> (N, 1, tokens, D)
        visual = torch.cat([snapshot.encode_video(part[:, None])[:, 0]
                            for part in video.split(64)])
        audible = torch.cat([snapshot.encode_audio(part[:, None])[:, 0]
                             for part in audio.split(256)])
    return ClipFeatures(visual=visual, audio=audible, frames=int(frames.shape[0]))


def batch_of(clips: list[ClipFeatures], windows: int, config: AssynchConfig,
             rng: np.random.Generator) -> tuple[SegmentFeatures, torch.Tensor]:
    """`windows` random windows, each at all 21 offsets: the pictures of a window are the same
    for all 21 rows, so only the timing of the sound tells them apart."""
    classes = config.time.num_offset_classes
    visual, audio, labels = [], [], []
    for _ in range(windows):
        clip = clips[int(rng.integers(len(clips)))]
        starts = clip.window_starts(config)
        start = int(starts[int(rng.integers(len(starts)))])
        for offset_class in range(classes):
            v, a = clip.window(start, offset_class, config)
            visual.append(v)
            audio.append(a)
            labels.append(offset_class)
    features = SegmentFeatures(torch.stack(visual)[:, None], torch.stack(audio)[:, None])
    return features, torch.tensor(labels)


def window_accuracy(model: StreamingModel, clips: list[ClipFeatures], config: AssynchConfig,
                    every: int = 6) -> tuple[float, float]:
    """(ACC@1, ACC@1±1) over windows every `every` grid steps of `clips`, at all 21 offsets."""
    classes = config.time.num_offset_classes
    hits = near = total = 0
    model.eval()
    with torch.no_grad():
        for clip in clips:
            for start in clip.window_starts(config)[::every]:
                rows = [clip.window(start, c, config) for c in range(classes)]
                features = SegmentFeatures(torch.stack([r[0] for r in rows])[:, None],
                                           torch.stack([r[1] for r in rows])[:, None])
                predicted = model.forward_features(features).logits[:, 0].argmax(-1)
                error = (predicted - torch.arange(classes)).abs()
                hits += int((error == 0).sum())
                near += int((error <= 1).sum())
                total += classes
    return hits / max(total, 1), near / max(total, 1)


def train_tiny_detector(
    features: list[ClipFeatures], model: StreamingModel, config: AssynchConfig, *,
    seed: int = 0, steps: int = 400, max_seconds: float = 120.0, windows_per_batch: int = 2,
    lr: float = 3e-3, emd_weight: float = 1.0,
    log: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Train `model`'s trainable parts (frozen encoders) on cached features for `steps` steps
    (warm-up, then a linear decay over them), or until `max_seconds` of wall time have passed;
    returns what ran."""
    rng = np.random.default_rng(seed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / 20) * max(0.1, 1 - step / steps))
    started = clock.monotonic()
    model.train()
    step = 0
    loss = torch.zeros(())
    for step in range(1, steps + 1):
        batch, target = batch_of(features, windows_per_batch, config, rng)
        logits = model.forward_features(batch).logits[:, 0]
        loss = cross_entropy(logits, target) + emd_weight * squared_emd(logits, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if log is not None and step % 100 == 0:
            log(f"step {step}: loss {float(loss.detach()):.3f} "
                f"({clock.monotonic() - started:.0f} s)")
        if clock.monotonic() - started > max_seconds:
            break
    model.eval()
    return {"steps": step, "seconds": round(clock.monotonic() - started, 1),
            "final_loss": round(float(loss.detach()), 3)}


def build_tiny_detector(config: AssynchConfig, seed: int = 0) -> StreamingModel:
    """The tiny snapshot model with frozen (random) encoders, as `build_model` makes it."""
    torch.manual_seed(seed)
    return build_model(config)
