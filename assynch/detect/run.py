"""`detect_video`: one video through the model, analysed (the library side of `assynch detect`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from assynch.detect.analysis import analyse, evidence_mask
from assynch.detect.inference import run_windows
from assynch.detect.loading import LoadedModel
from assynch.detect.report import DetectReport
from assynch.media.decode import DecodeError
from assynch.models.streaming import SnapshotStream
from assynch.samples.offsets import offset_grid_sec


class VideoTooShortError(DecodeError):
    """The video (with sound) is shorter than one window."""


def detect_video(
    source: str,
    loaded: LoadedModel,
    *,
    context: int | None | str = "trained",
    storage_options: dict[str, Any] | None = None,
    on_progress: Callable[[float, float | None], None] | None = None,
    block_windows: int = 8,
) -> DetectReport:
    """Stream `source` through the model and say what its sync is.

    `context`: windows each prediction sees ("trained": the model's `time.windows_per_sample`;
    None: one state carried through the whole video).
    """
    config = loaded.config
    time = config.time
    windows = time.windows_per_sample if context == "trained" else context
    if type(loaded.model) is SnapshotStream:
        windows = 1  # no memory: each prediction sees its own window only
    assert windows is None or isinstance(windows, int)
    results = run_windows(
        source, loaded.model, config, context=windows, storage_options=storage_options,
        block_windows=block_windows, on_progress=on_progress,
    )
    summary = results.summary
    duration = min(summary.frames / time.fps, summary.audio_samples / time.sample_rate)
    if results.count == 0:
        raise VideoTooShortError(
            source,
            f"only {duration:.2f} s of video with sound; detection needs at least one window of "
            f"{time.window_sec:g} s (pass a longer video)",
        )
    offsets = offset_grid_sec(time)
    analysis = analyse(
        results.probabilities, evidence_mask(results.audio_db, results.motion),
        results.center_sec, duration, offsets,
    )
    return DetectReport(
        source=source, model=loaded.description, duration_sec=duration,
        window_sec=time.window_sec, context_windows=windows, offsets_sec=offsets,
        results=results, analysis=analysis, sample_rate=time.sample_rate,
    )
