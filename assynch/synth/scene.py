"""The picture of a synthetic clip: a first-person viewport over a textured scene, plus sprites.

The scene texture is rendered once per clip, larger than the frame; each frame crops a viewport
that pans slowly, shakes like a hand-held camera and drifts in brightness (a 256-entry lookup
table per frame). Sprites (event objects) are drawn in screen coordinates on top, unaffected by
the brightness drift; a flashing sprite is drawn white.
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
    camera = camera_path(rng, spec, plan.num_frames, texture.shape[:2])
    draws: dict[int, list[tuple[SpriteTrack, int]]] = defaultdict(list)
    for track in plan.tracks:
        for index, frame_index in enumerate(track.frames.tolist()):
            draws[frame_index].append((track, index))
    levels = np.arange(256, dtype=np.float32)
    for frame_index in range(plan.num_frames):
        lut = np.clip(levels * camera.gain[frame_index] + 0.5, 0, 255).astype(np.uint8)
        x, y = camera.x[frame_index], camera.y[frame_index]
        frame = np.take(lut, texture[y : y + spec.height, x : x + spec.width])
        for track, index in draws.get(frame_index, ()):
            draw_sprite(frame, track, index)
        yield frame
