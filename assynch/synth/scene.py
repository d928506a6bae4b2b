"""The picture of a synthetic clip: a first-person viewport over a textured scene, plus sprites.

The scene texture is rendered once per clip, larger than the frame; each frame crops a viewport
that pans slowly, shakes like a hand-held camera and drifts in brightness (a 256-entry lookup
table per frame). Sprites (event objects) are drawn in screen coordinates on top, unaffected by
the brightness drift; a flashing sprite is drawn white. At `difficulty="hard"` the head turns
fast and often (the viewport wraps around the texture horizontally), shakes harder and the
exposure steps (`camera_path_hard`), so that global frame change no longer marks events.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from assynch.synth.noise import fractal_noise_2d, smooth_curve
from assynch.synth.plan import WHITE, ClipPlan, SpriteTrack
from assynch.synth.schema import SynthSpec

TEXTURE_SCALE_X = 3.0
TEXTURE_SCALE_Y = 1.7
TEXTURE_MIN = 25
TEXTURE_MAX = 175
BRIGHTNESS_DRIFT = 0.18

# Hard: head motion strong enough that global frame change no longer marks events.
HARD_TURN_INTERVAL_SEC = 1.0  # mean time between head turns (fast pans)
HARD_TURN_SEC = (0.3, 0.9)  # duration of one turn
HARD_TURN_WIDTHS = (0.2, 0.9)  # how far one turn goes, in frame widths
HARD_SHAKE_DIVISOR = 24.0  # shake amplitude = height / this (easy: / 90)
HARD_TILT = 0.7  # vertical look around, fraction of the room above/below
HARD_EXPOSURE_INTERVAL_SEC = 0.8  # mean time between auto-exposure steps
HARD_EXPOSURE_STEP = (0.06, 0.2)  # size of one step in log gain
HARD_EXPOSURE_RAMP_SEC = (0.04, 0.16)  # how fast a step happens (1-4 frames at 25 fps)
HARD_GAIN_RANGE = (0.6, 1.5)


@dataclass(frozen=True)
class CameraPath:
    """Top-left corner of the viewport in the texture, and the brightness gain, per frame."""

    x: np.ndarray
    y: np.ndarray
    gain: np.ndarray


def render_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A (height, width, 3) uint8 scene: smooth colour regions, flat 'objects' with dark edges,
    and fine detail on top."""
    base = rng.uniform(75, 115, size=3)
    shade = fractal_noise_2d(rng, height, width, 1.6)[..., None]
    tint = np.stack([fractal_noise_2d(rng, height, width, 2.0) for _ in range(3)], axis=-1)
    scene = base + 24.0 * shade + 12.0 * tint
    area = height * width
    for _ in range(max(8, area // 15000)):
        rect_h = int(rng.uniform(0.03, 0.2) * height)
        rect_w = int(rng.uniform(0.02, 0.12) * width)
        top = int(rng.integers(0, height - rect_h))
        left = int(rng.integers(0, width - rect_w))
        fill = np.clip(scene[top, left] + rng.uniform(-55, 55, size=3), 0, 255)
        scene[top : top + rect_h, left : left + rect_w] = fill
        edge = max(1, min(rect_h, rect_w) // 12)
        scene[top : top + rect_h, left : left + edge] *= 0.45
        scene[top : top + edge, left : left + rect_w] *= 0.45
    detail = fractal_noise_2d(rng, height, width, 1.0)
    scene += 14.0 * detail[..., None]
    return np.clip(scene, TEXTURE_MIN, TEXTURE_MAX).astype(np.uint8)


def texture_shape(spec: SynthSpec) -> tuple[int, int]:
    return int(spec.height * TEXTURE_SCALE_Y), int(spec.width * TEXTURE_SCALE_X)


def _raised_cosine_steps(
    rng: np.random.Generator,
    num_frames: int,
    fps: float,
    interval_sec: float,
    duration_sec: tuple[float, float],
    size: tuple[float, float],
    towards_zero: bool = False,
) -> np.ndarray:
    """A sum of smooth steps at Poisson times: each rises by a random size with a raised-cosine
    velocity (zero at both ends) over a random duration. With `towards_zero` the sign of each
    step pulls the running level back towards 0, so the level stays bounded."""
    level = np.zeros(num_frames)
    current = 0.0
    t = rng.exponential(interval_sec)
    while t * fps < num_frames:
        length = max(1, int(round(rng.uniform(*duration_sec) * fps)))
        amount = rng.uniform(*size)
        sign = 1.0 if rng.random() < 0.5 else -1.0
        if towards_zero and current != 0.0:
            back = 0.5 + min(0.45, 3.0 * abs(current))  # the further out, the likelier back
            sign = -np.sign(current) if rng.random() < back else np.sign(current)
        start = int(round(t * fps))
        phase = np.clip((np.arange(num_frames) - start) / length, 0.0, 1.0)
        level += sign * amount * (phase - np.sin(2 * np.pi * phase) / (2 * np.pi))
        current += sign * amount
        t += rng.exponential(interval_sec)
    return level


def camera_path_hard(
    rng: np.random.Generator, spec: SynthSpec, num_frames: int, texture_hw: tuple[int, int]
) -> CameraPath:
    """Head turns (fast pans of 0.2-0.9 frame widths in 0.3-0.9 s, every 1.2 s on average; the
    texture wraps around horizontally), strong hand-held shake and a walking bob, looking up and
    down, and brightness that drifts and steps like auto-exposure. `x` may exceed the texture
    width: the renderer wraps it."""
    tex_h, _ = texture_hw
    fps = spec.fps
    room_y = (tex_h - spec.height) / 2
    shake_px = max(1.0, spec.height / HARD_SHAKE_DIVISOR)
    turns = spec.width * _raised_cosine_steps(
        rng, num_frames, fps, HARD_TURN_INTERVAL_SEC, HARD_TURN_SEC, HARD_TURN_WIDTHS
    )
    drift = 0.5 * spec.width * smooth_curve(rng, num_frames, fps, 0.02, 0.1)
    shake_x = shake_px * smooth_curve(rng, num_frames, fps, 2.0, 8.0, components=6)
    shake_y = shake_px * smooth_curve(rng, num_frames, fps, 2.0, 8.0, components=6)
    step_hz = rng.uniform(1.6, 2.2)
    bob = 0.8 * shake_px * np.sin(2 * np.pi * step_hz * np.arange(num_frames) / fps)
    tilt = HARD_TILT * (room_y - 2 * shake_px) * smooth_curve(rng, num_frames, fps, 0.05, 0.5)
    x = np.round(turns + drift + shake_x).astype(int)
    y = np.clip(np.round(room_y + tilt + shake_y + bob), 0, tex_h - spec.height).astype(int)
    log_gain = BRIGHTNESS_DRIFT * smooth_curve(rng, num_frames, fps, 0.05, 0.4)
    log_gain += _raised_cosine_steps(
        rng, num_frames, fps, HARD_EXPOSURE_INTERVAL_SEC, HARD_EXPOSURE_RAMP_SEC,
        HARD_EXPOSURE_STEP, towards_zero=True,
    )
    gain = np.clip(np.exp(log_gain), *HARD_GAIN_RANGE)
    return CameraPath(x, y, gain)


def camera_path(
    rng: np.random.Generator, spec: SynthSpec, num_frames: int, texture_hw: tuple[int, int]
) -> CameraPath:
    """A slow pan over the texture, hand-held shake, a walking bob, and brightness drift."""
    tex_h, tex_w = texture_hw
    room_x, room_y = (tex_w - spec.width) / 2, (tex_h - spec.height) / 2
    if not spec.camera_motion:
        zeros = np.zeros(num_frames)
        return CameraPath(
            (zeros + room_x).astype(int), (zeros + room_y).astype(int), np.ones(num_frames)
        )
    fps = spec.fps
    shake_px = max(1.0, spec.height / 90.0)
    pan_x = 0.92 * (room_x - 2 * shake_px) * smooth_curve(rng, num_frames, fps, 0.01, 0.06)
    pan_y = 0.8 * (room_y - 2 * shake_px) * smooth_curve(rng, num_frames, fps, 0.01, 0.05)
    shake_x = shake_px * smooth_curve(rng, num_frames, fps, 1.5, 6.0, components=5)
    shake_y = shake_px * smooth_curve(rng, num_frames, fps, 1.5, 6.0, components=5)
    step_hz = rng.uniform(1.6, 2.0)
    bob = 0.8 * shake_px * np.sin(2 * np.pi * step_hz * np.arange(num_frames) / fps)
    x = np.clip(np.round(room_x + pan_x + shake_x), 0, tex_w - spec.width).astype(int)
    y = np.clip(np.round(room_y + pan_y + shake_y + bob), 0, tex_h - spec.height).astype(int)
    gain = 1.0 + BRIGHTNESS_DRIFT * smooth_curve(rng, num_frames, fps, 0.03, 0.15)
    return CameraPath(x, y, gain)


@lru_cache(maxsize=256)
def sprite_mask(shape: str, width: int, height: int) -> np.ndarray:
    """An anti-aliased (height, width, 1) float32 coverage mask of a disc or a box."""
    ys = np.arange(height)[:, None] + 0.5 - height / 2
    xs = np.arange(width)[None, :] + 0.5 - width / 2
    if shape == "disc":
        distance = np.sqrt((xs / (width / 2)) ** 2 + (ys / (height / 2)) ** 2)
        mask = np.clip((1.0 - distance) * min(width, height) / 2 + 0.5, 0.0, 1.0)
    else:
        mask = np.ones((height, width))
    return mask.astype(np.float32)[..., None]


def draw_sprite(frame: np.ndarray, track: SpriteTrack, index: int) -> None:
    """Blend sprite `track` as it is at its `index`-th frame into `frame`, in place."""
    frame_h, frame_w = frame.shape[:2]
    left = int(round(track.cx[index] - track.width / 2))
    top = int(round(track.cy[index] - track.height / 2))
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + track.width, frame_w), min(top + track.height, frame_h)
    if x0 >= x1 or y0 >= y1:
        return
    mask = sprite_mask(track.shape, track.width, track.height)
    coverage = mask[y0 - top : y1 - top, x0 - left : x1 - left] * np.float32(track.alpha[index])
    color = np.asarray(WHITE if track.flash[index] else track.color, dtype=np.float32)
    region = frame[y0:y1, x0:x1].astype(np.float32)
    frame[y0:y1, x0:x1] = (region + coverage * (color - region) + 0.5).astype(np.uint8)


def render_frames(
    plan: ClipPlan, spec: SynthSpec, rng: np.random.Generator
) -> Iterator[np.ndarray]:
    """Yield every frame of the clip as (height, width, 3) uint8 RGB."""
    texture = render_texture(rng, *texture_shape(spec))
    hard = spec.difficulty == "hard" and spec.camera_motion
    path_of = camera_path_hard if hard else camera_path
    camera = path_of(rng, spec, plan.num_frames, texture.shape[:2])
    tex_w = texture.shape[1]
    columns = np.arange(spec.width)
    draws: dict[int, list[tuple[SpriteTrack, int]]] = defaultdict(list)
    for track in plan.tracks:
        for index, frame_index in enumerate(track.frames.tolist()):
            draws[frame_index].append((track, index))
    levels = np.arange(256, dtype=np.float32)
    for frame_index in range(plan.num_frames):
        lut = np.clip(levels * camera.gain[frame_index] + 0.5, 0, 255).astype(np.uint8)
        x, y = camera.x[frame_index], camera.y[frame_index]
        if hard:  # the view wraps around the texture (its noise is periodic)
            rows = texture[y : y + spec.height]
            frame = np.take(lut, rows.take((x + columns) % tex_w, axis=1))
        else:
            frame = np.take(lut, texture[y : y + spec.height, x : x + spec.width])
        for track, index in draws.get(frame_index, ()):
            draw_sprite(frame, track, index)
        yield frame
