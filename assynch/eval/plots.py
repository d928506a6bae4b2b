"""Figures of training and evaluation: metric curves and the offset confusion matrix.

Headless and free of global state: figures are `matplotlib.figure.Figure` objects drawn with the
Agg canvas (no pyplot, no display, safe in Ray workers and threads). Nothing here knows MLflow;
`assynch.tracking` saves these figures as run artifacts, evaluation reuses them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def agg_figure(width: float, height: float) -> Figure:
    """A figure on its own Agg canvas: no pyplot, no global state, nothing to close."""
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def offset_labels(num_classes: int, step_sec: float) -> list[str]:
    """Class k <-> offset (k - centre) * step, as tick labels: '-2.0', ..., '+0.0', ..., '+2.0'."""
    centre = num_classes // 2
    return [f"{(k - centre) * step_sec:+.1f}" for k in range(num_classes)]


def confusion_matrix(true: Sequence[int] | np.ndarray, predicted: Sequence[int] | np.ndarray,
                     num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) int64 counts; rows are true classes, columns predictions."""
    true = np.asarray(true, dtype=np.int64).reshape(-1)
    predicted = np.asarray(predicted, dtype=np.int64).reshape(-1)
    if true.shape != predicted.shape:
        raise ValueError(f"{true.size} true classes but {predicted.size} predictions")
    for name, values in (("true", true), ("predicted", predicted)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} classes must lie in 0..{num_classes - 1}")
    counts = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(counts, (true, predicted), 1)
    return counts


def confusion_figure(confusion: np.ndarray, step_sec: float = 0.2, title: str = "",
                     normalise_rows: bool = True) -> Figure:
    """The confusion matrix as a heat map: true offset down, predicted offset across.

    With `normalise_rows` the colour is the share of each true class (counts stay printed where
    the matrix is small enough to read them); rows without samples stay blank.
    """
    confusion = np.asarray(confusion)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion must be square (classes, classes), got {confusion.shape}")
    classes = confusion.shape[0]
    counts = confusion.astype(np.float64)
    if normalise_rows:
        totals = counts.sum(axis=1, keepdims=True)
        shown = np.divide(counts, totals, out=np.full_like(counts, np.nan), where=totals > 0)
        colour_label = "share of the true class"
    else:
        shown = counts
        colour_label = "samples"
    figure = agg_figure(7.5, 6.5)
    axes = figure.add_subplot()
    image = axes.imshow(shown, cmap="viridis", vmin=0.0, origin="upper")
    figure.colorbar(image, ax=axes, label=colour_label)
    labels = offset_labels(classes, step_sec)
    ticks = np.arange(classes)
    axes.set_xticks(ticks, labels, rotation=90, fontsize=7)
    axes.set_yticks(ticks, labels, fontsize=7)
    axes.set_xlabel("predicted offset (s)")
    axes.set_ylabel("true offset (s)")
    total = int(confusion.sum())
    correct = int(np.trace(confusion))
    accuracy = correct / total if total else float("nan")
    heading = title or "offset confusion"
    axes.set_title(f"{heading}: {total} samples, ACC@1 {accuracy:.3f}")
    if classes <= 25 and total:
        for row in range(classes):
            for column in range(classes):
                value = int(confusion[row, column])
                if value:
                    colour = "black" if (shown[row, column] or 0) > 0.6 else "white"
                    axes.text(column, row, str(value), ha="center", va="center", fontsize=5,
                              color=colour)
    return figure


def _is_loss(name: str) -> bool:
    return "loss" in name.lower()


def curves_figure(history: Sequence[Mapping[str, float]], x_key: str = "epoch",
                  best_x: float | None = None, title: str = "") -> Figure:
    """Loss and metric curves over `x_key` (default: epoch), one panel each.

    `history` is a list of dicts, one per epoch (or evaluation), e.g.
    `{"epoch": 0, "train/loss": 2.9, "val/acc1": 0.12, "val/emd_sec": 0.9}`. Every numeric key
    other than `x_key` becomes a line; names containing 'loss' go to the left panel, the rest to
    the right. `best_x` draws a vertical marker (the best epoch).
    """
    if not history:
        raise ValueError("history is empty: log at least one epoch before drawing curves")
    xs = [float(entry.get(x_key, index)) for index, entry in enumerate(history)]
    names = sorted({
        key for entry in history for key, value in entry.items()
        if key != x_key and isinstance(value, int | float) and not isinstance(value, bool)
    })
    losses = [name for name in names if _is_loss(name)]
    metrics = [name for name in names if not _is_loss(name)]
    figure = agg_figure(11, 4.5)
    panels = figure.subplots(1, 2, squeeze=True)
    for axes, group, label in ((panels[0], losses, "loss"), (panels[1], metrics, "metric")):
        for name in group:
            points = [
                (x, float(entry[name])) for x, entry in zip(xs, history, strict=True)
                if name in entry and entry[name] is not None
            ]
            if points:
                px, py = zip(*points, strict=True)
                axes.plot(px, py, marker="o", markersize=3, label=name)
        if best_x is not None:
            axes.axvline(best_x, color="grey", linestyle="--", linewidth=1, label=f"best {x_key}")
        axes.set_xlabel(x_key)
        axes.set_ylabel(label)
        axes.grid(True, alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=7)
        else:
            axes.text(0.5, 0.5, f"no {label} values", ha="center", va="center",
                      transform=axes.transAxes)
    if title:
        figure.suptitle(title)
    return figure


def save_figure(figure: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Write `figure` as PNG (or the format its suffix names) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    return path
