"""Train a tiny offset detector in the test session, on flash/beep clips, in about a minute.

The model is the real tiny `snapshot` model (configs/tiny.yaml) with frozen, randomly
initialised encoders; only its projections and sync transformer learn. Because the encoders are
frozen, their outputs are computed once per clip: visual features for every segment start on the
8-frame grid, audio features for every segment start on the 4-mel-frame (0.04 s) grid, both from
the same decoded arrays and one continuous normalised log-mel (as training and
`windows_to_model_inputs` build them). A training example is a window start t (on the 8-frame
grid) and an offset d (one of the 21 classes): visual segments t + s * 0.32 s, audio segments
t + d + s * 0.32 s, label d. The trained weights are then saved as an ordinary checkpoint, and
`assynch detect` runs the whole model (encoders included) on new files.
"""

from __future__ import annotations

import time as clock
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from media_files import ClipSpec, write_clip

from assynch.config import AssynchConfig
from assynch.media.decode import decode_all
from assynch.media.features import normalised_log_mel, segment_mels
from assynch.models import build_model, cross_entropy, squared_emd
from assynch.samples.plan import segment_samples

CLIP_FPS = 25
MEL_PER_SEC = 100
GRID_FRAMES = 8  # window starts and visual segment starts
AUDIO_GRID = 4  # mel frames between precomputed audio segment starts (0.04 s)


def event_times(duration_sec: float, seed: int, first: float = 0.5) -> tuple[float, ...]:
    """Irregular flash/beep times (gaps 0.7-2.0 s), on the 25 fps grid, so no offset repeats."""
    rng = np.random.default_rng(seed)
    times, t = [], first
    while t < duration_sec - 0.5:
        times.append(round(t * CLIP_FPS) / CLIP_FPS)
        t += rng.uniform(0.7, 2.0)
    return tuple(times)


def flash_beep_clip(path: Path, duration_sec: float, seed: int,
                    audio_shift: Callable[[float], float] | float = 0.0) -> Path:
    """A 25 fps clip with flashes at irregular times and a beep per flash, the beep moved by
    `audio_shift(t)` seconds (positive: the beep comes early, i.e. audio early)."""
    flashes = event_times(duration_sec, seed)
    shift = audio_shift if callable(audio_shift) else (lambda _t: float(audio_shift))
    beeps = tuple(t - shift(t) for t in flashes if 0.05 < t - shift(t) < duration_sec - 0.2)
    return write_clip(path, ClipSpec(duration_sec=duration_sec, fps=Fraction(CLIP_FPS), width=96,
                                     height=72, flash_times=flashes, beep_times=beeps, seed=seed))


@dataclass
class _ClipFeatures:
    visual: torch.Tensor  # (n_visual_segments, 8, Dv) at frame starts 0, 8, 16, ...
    audio: torch.Tensor  # (n_audio_segments, 6, Da) at mel starts 0, 4, 8, ...
    frames: int


def _features(model: torch.nn.Module, path: Path, config: AssynchConfig) -> _ClipFeatures:
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
    encoder = model.snapshot
    with torch.no_grad():
        visual = torch.cat([encoder.visual_encoder(part) for part in video.split(64)])
        audible = torch.cat([encoder.audio_encoder(part) for part in audio.split(256)])
    return _ClipFeatures(visual=visual, audio=audible, frames=int(frames.shape[0]))


def time_aligned_positions(model: torch.nn.Module, config: AssynchConfig) -> None:
    """Start the sync transformer's position embeddings as sinusoids of each token's time in
    the window (visual and audio tokens of the same moment get the same code), instead of
    noise, so the heads need not discover from scratch which visual and audio tokens are
    simultaneous. An initialisation only: the embeddings are trained like the rest."""
    time = config.time
    sync = model.snapshot.sync
    dim = sync.pos_embed.shape[-1]
    visual_per = config.model.visual_encoder.out_tokens
    audio_per = config.model.audio_encoder.out_tokens
    segment_sec = time.segment_frames / time.fps
    starts = np.arange(time.segments_per_window) * time.segment_stride_frames / time.fps
    visual = (starts[:, None] + (np.arange(visual_per) + 0.5) * segment_sec / visual_per).ravel()
    audio = (starts[:, None] + (np.arange(audio_per) + 0.5) * segment_sec / audio_per).ravel()
    periods = np.geomspace(0.3, 12.0, dim // 2)

    def code(seconds: np.ndarray) -> torch.Tensor:
        phase = 2 * np.pi * seconds[:, None] / periods[None, :]
        return torch.as_tensor(np.concatenate([np.sin(phase), np.cos(phase)], axis=1),
                               dtype=torch.float32)

    with torch.no_grad():
        mod_at = 1 + len(visual)
        sync.pos_embed[0, 1:mod_at] = code(visual)
        sync.pos_embed[0, mod_at + 1 :] = code(audio)


def train_tiny_detector(
    clips: list[Path], config: AssynchConfig, *, seed: int = 0, max_seconds: float = 150.0,
    steps: int = 1500, batch: int = 48, lr: float = 3e-3, log: list | None = None,
    aligned_positions: bool = True, emd_weight: float = 0.0,
) -> torch.nn.Module:
    """Build the tiny snapshot model (frozen encoders) and train its heads on `clips`."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_model(config)
    if aligned_positions:
        time_aligned_positions(model, config)
    model.eval()
    features = [_features(model, path, config) for path in clips]
    time = config.time
    segments = time.segments_per_window
    stride_visual = time.segment_stride_frames // GRID_FRAMES  # 1 grid step per segment
    mel_per_frame = MEL_PER_SEC / time.fps  # 4 mel frames per video frame
    classes = time.num_offset_classes
    max_offset_mel = int(round(time.max_offset_sec * MEL_PER_SEC))
    snapshot = model.snapshot
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / 20) * max(0.1, 1 - step / steps))
    started = clock.monotonic()
    snapshot.train()
    for step in range(steps):
        visual_rows, audio_rows, labels = [], [], []
        # Every offset of the same window in one batch: the pictures are the same, only the
        # timing of the sound differs, so the only way to tell the examples apart is sync.
        for _ in range(max(batch // classes, 1)):
            clip = features[int(rng.integers(len(features)))]
            low = int(np.ceil(max_offset_mel / mel_per_frame / GRID_FRAMES))
            high = (clip.frames - time.window_frames - low * GRID_FRAMES) // GRID_FRAMES
            start = int(rng.integers(low, high))  # window start, in grid steps
            visual_index = start + stride_visual * np.arange(segments)
            for offset_class in range(classes):
                offset_mel = (offset_class - classes // 2) * int(round(time.offset_step_sec
                                                                      * MEL_PER_SEC))
                audio_mel = (start * GRID_FRAMES * mel_per_frame + offset_mel
                             + time.segment_stride_frames * mel_per_frame * np.arange(segments))
                audio_index = (audio_mel / AUDIO_GRID).astype(np.int64)
                visual_rows.append(clip.visual[visual_index])
                audio_rows.append(clip.audio[audio_index])
                labels.append(offset_class)
        visual = snapshot.visual_proj(torch.stack(visual_rows).flatten(1, 2))
        audible = snapshot.audio_proj(torch.stack(audio_rows).flatten(1, 2))
        logits = snapshot.sync.off_head(snapshot.sync(visual, audible)[:, 0])
        target = torch.tensor(labels)
        loss = cross_entropy(logits, target) + emd_weight * squared_emd(logits, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if log is not None and step % 50 == 0:
            accuracy = float((logits.argmax(-1) - target).abs().le(1).float().mean())
            log.append((step, round(float(loss.detach()), 3), round(accuracy, 3),
                        round(clock.monotonic() - started, 1)))
            print(log[-1], flush=True)
        if clock.monotonic() - started > max_seconds:
            break
    return model.eval()
