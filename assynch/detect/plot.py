"""`--plot out.png`: the offset probability over time with the detected segments drawn over it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from assynch.detect.analysis import evidence_mask
from assynch.detect.report import DetectReport


def plot_report(report: DetectReport, path: str | Path) -> Path:
    """A heat map of the classes (rows) against time (each prediction at the centre of what it
    saw); windows without evidence are hatched; segments are red lines at their offset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    results, offsets = report.results, report.offsets_sec
    step = float(offsets[1] - offsets[0])
    hop = float(results.start_sec[1] - results.start_sec[0]) if results.count > 1 else (
        report.window_sec
    )
    centers = results.center_sec
    left = np.concatenate([centers - hop / 2, [centers[-1] + hop / 2]])
    bottom = np.concatenate([offsets - step / 2, [offsets[-1] + step / 2]])
    width = min(16.0, max(6.0, 2.0 + results.count * 0.08))
    figure, axis = plt.subplots(figsize=(width, 4.5), dpi=100)
    mesh = axis.pcolormesh(left, bottom, results.probabilities.T, cmap="viridis", vmin=0,
                           vmax=1, shading="flat")
    figure.colorbar(mesh, ax=axis, label="probability")
    evidence = evidence_mask(results.audio_db, results.motion)
    for k in np.flatnonzero(~evidence):
        axis.axvspan(left[k], left[k + 1], facecolor="none", edgecolor="white", hatch="//",
                     linewidth=0)
    for segment in report.analysis.segments:
        axis.plot([segment.start_sec, segment.end_sec], [segment.offset_sec] * 2, color="red",
                  linewidth=2.5)
        axis.axvline(segment.start_sec, color="red", linestyle=":", linewidth=1)
    axis.axhline(0.0, color="white", linestyle="--", linewidth=0.8)
    analysis = report.analysis
    offset = "-" if analysis.offset_sec is None else f"{analysis.offset_sec:+.1f} s"
    axis.set_title(f"{Path(report.source).name}: {analysis.verdict}, offset {offset}, "
                   f"confidence {analysis.confidence:.2f}  (+ = audio early)")
    axis.set_xlabel("video time (s)")
    axis.set_ylabel("offset (s)")
    axis.set_xlim(0, max(report.duration_sec, left[-1]))
    figure.tight_layout()
    temporary = path.with_name(f".{path.stem}.tmp{path.suffix or '.png'}")
    figure.savefig(temporary, format="png")
    plt.close(figure)
    temporary.replace(path)
    return path
