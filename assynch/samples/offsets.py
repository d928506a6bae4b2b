"""The offset grid: 21 classes from -2.0 s to +2.0 s in 0.2 s steps (DESIGN.md).

Sign: a positive offset means the audio is early (leads the video): a sample labelled d shows the
video of [t, t+L) and the audio of [t+d, t+d+L).
"""

from __future__ import annotations

import numpy as np

from assynch.config import TimeBase


def center_class(time: TimeBase) -> int:
    return time.num_offset_classes // 2


def class_to_offset_sec(offset_class: int, time: TimeBase) -> float:
    if not 0 <= offset_class < time.num_offset_classes:
        raise ValueError(
            f"offset class {offset_class} is outside 0..{time.num_offset_classes - 1}"
        )
    return round((offset_class - center_class(time)) * time.offset_step_sec, 6)


def offset_sec_to_class(offset_sec: float, time: TimeBase) -> int:
    """The class of an offset that lies on the grid (within 1 ms); raises otherwise."""
    position = offset_sec / time.offset_step_sec + center_class(time)
    offset_class = int(round(position))
    if abs(position - offset_class) * time.offset_step_sec > 1e-3 or not (
        0 <= offset_class < time.num_offset_classes
    ):
        raise ValueError(
            f"offset {offset_sec} s is not on the grid of {time.num_offset_classes} classes "
            f"every {time.offset_step_sec} s; use a multiple of {time.offset_step_sec} s within "
            f"+-{time.max_offset_sec} s"
        )
    return offset_class


def nearest_offset_class(offset_sec: float | np.ndarray, time: TimeBase) -> np.ndarray:
    """Round any offset(s) to the nearest class, clipping to the grid's ends."""
    position = np.rint(np.asarray(offset_sec) / time.offset_step_sec) + center_class(time)
    return np.clip(position, 0, time.num_offset_classes - 1).astype(np.int64)


def offset_grid_sec(time: TimeBase) -> np.ndarray:
    """The offsets of all classes, in seconds, ascending."""
    return np.round(
        (np.arange(time.num_offset_classes) - center_class(time)) * time.offset_step_sec, 6
    )
