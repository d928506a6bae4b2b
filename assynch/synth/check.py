"""Find a synthetic clip's events again in decoded frames and in the log-mel.

Used by the tests (and usable by any part that wants to check that its frames or features still
show the events): a visual onset is the largest rise of mean luminance inside the event's box; an
audio onset is a peak of positive spectral flux (mean over mel bins of the frame-to-frame rise
of the log-mel).
"""

from __future__ import annotations

import numpy as np

from assynch.synth.schema import ClipEvents, SynthEvent

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def box_in_decoded_frames(
    box: tuple[int, int, int, int], width: int, height: int, short_side: int, crop: int
) -> tuple[int, int, int, int]:
    """Where a box of a (width x height) clip lands after resizing the short side to
    `short_side` and taking the centred `crop` x `crop` square (as the decoder does). The result
    is clipped to the crop; it may be empty (zero width or height)."""
    scale = short_side / min(width, height)
    resized_w = max(short_side, int(round(width * scale)))
    resized_h = max(short_side, int(round(height * scale)))
    left, top = (resized_w - crop) // 2, (resized_h - crop) // 2
    x, y, w, h = box
    x0 = int(np.clip(np.floor(x * scale) - left, 0, crop))
    y0 = int(np.clip(np.floor(y * scale) - top, 0, crop))
    x1 = int(np.clip(np.ceil((x + w) * scale) - left, 0, crop))
    y1 = int(np.clip(np.ceil((y + h) * scale) - top, 0, crop))
    return x0, y0, x1 - x0, y1 - y0


def luminance_rise(frames: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Per frame, how much the mean luminance inside `box` rose since the previous frame
    (0 for the first frame). `frames` is (n, H, W, 3) uint8 RGB."""
    x, y, w, h = box
    if w <= 0 or h <= 0:
        raise ValueError(f"box {box} is empty; it lies outside the frames")
    region = frames[:, y : y + h, x : x + w].astype(np.float32)
    mean = (region @ LUMA).mean(axis=(1, 2))
    return np.diff(mean, prepend=mean[:1])


def find_visual_onset(
    frames: np.ndarray,
    fps: float,
    box: tuple[int, int, int, int],
    near_sec: float,
    search_sec: float,
) -> tuple[float, float]:
    """(time, rise) of the largest luminance rise inside `box` within `search_sec` of
    `near_sec`; frame i is at i / fps."""
    rise = luminance_rise(frames, box)
    first = max(1, int(np.floor((near_sec - search_sec) * fps)))
    last = min(rise.size, int(np.ceil((near_sec + search_sec) * fps)) + 1)
    best = first + int(np.argmax(rise[first:last]))
    return best / fps, float(rise[best])


def spectral_flux(log_mel: np.ndarray) -> np.ndarray:
    """Per mel frame, the mean over bins of the positive rise of the log-mel since the previous
    frame (0 for the first). `log_mel` is (n_mels, frames), natural log."""
    rise = np.maximum(np.diff(np.asarray(log_mel, dtype=np.float32), axis=1), 0.0)
    return np.concatenate([[0.0], rise.mean(axis=0)])


def flux_peaks(flux: np.ndarray, hop_sec: float, threshold: float) -> list[tuple[float, float]]:
    """(time, flux) of every local maximum above `threshold`; mel frame j is at j * hop_sec
    (centred frames)."""
    inner = flux[1:-1]
    is_peak = (inner > threshold) & (inner >= flux[:-2]) & (inner > flux[2:])
    return [((j + 1) * hop_sec, float(flux[j + 1])) for j in np.flatnonzero(is_peak)]


def find_audio_onset(
    flux: np.ndarray, hop_sec: float, near_sec: float, search_sec: float
) -> tuple[float, float]:
    """(time, flux) of the largest flux within `search_sec` of `near_sec`."""
    first = max(0, int(np.floor((near_sec - search_sec) / hop_sec)))
    last = min(flux.size, int(np.ceil((near_sec + search_sec) / hop_sec)) + 1)
    best = first + int(np.argmax(flux[first:last]))
    return best * hop_sec, float(flux[best])


def sound_onsets_sec(clip: ClipEvents) -> list[float]:
    """Every listed sound onset: audio-visual events and off-screen sounds."""
    return sorted(t for event in clip.events if event.sound is not None for t in event.onsets_sec)


def visual_events(clip: ClipEvents) -> list[SynthEvent]:
    return [event for event in clip.events if event.audio_visual and event.box is not None]
