"""The evaluation report's plots (matplotlib's Agg canvas, no pyplot: no display needed), one
PNG each.

The confusion matrix is the same figure training logs (`assynch.eval.plots`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from assynch.eval.plots import agg_figure, confusion_figure, save_figure

LABELS = {"acc1": "ACC@1", "acc1_pm1": "ACC@1±1", "emd_sec": "EMD (s)"}


def _save(figure: Any, path: Path) -> Path:
    return save_figure(figure, path, dpi=100)


def plot_confusion(summary: dict[str, Any], mode: str, step_sec: float, path: Path) -> Path:
    figure = confusion_figure(np.asarray(summary["confusion"]), step_sec, title=f"{mode} mode")
    return save_figure(figure, path)


def plot_curves(modes: dict[str, dict[str, Any]], path: Path) -> Path:
    """ACC@1 and EMD against windows seen, one line per mode, with their bootstrap bands."""
    figure = agg_figure(11, 4)
    axes = figure.subplots(1, 2)
    for axis, metric in zip(axes, ("acc1", "emd_sec"), strict=True):
        for mode, summary in modes.items():
            points = summary["curve"]
            seen = [p["windows_seen"] for p in points]
            value = [p[metric]["value"] for p in points]
            low = [p[metric]["ci_low"] for p in points]
            high = [p[metric]["ci_high"] for p in points]
            axis.plot(seen, value, marker="o", label=mode)
            axis.fill_between(seen, low, high, alpha=0.2)
        axis.set_xscale("log", base=2)
        axis.set_xticks(seen, [str(s) for s in seen])
        axis.set_xlabel("windows seen")
        axis.set_ylabel(LABELS[metric])
        if metric == "acc1":
            axis.set_ylim(-0.02, 1.02)
        axis.grid(alpha=0.3)
        axis.legend()
    axes[0].set_title("ACC@1 against windows seen (95% bootstrap band over videos)")
    axes[1].set_title("EMD against windows seen")
    return _save(figure, path)


def plot_error_histogram(summary: dict[str, Any], mode: str, path: Path) -> Path:
    histogram = summary["error_histogram"]
    errors = np.asarray(histogram["errors_sec"])
    counts = np.asarray(histogram["counts"])
    figure = agg_figure(8, 4)
    axis = figure.subplots()
    step = float(errors[1] - errors[0]) if len(errors) > 1 else 0.2
    axis.bar(errors, counts, width=step * 0.9)
    axis.set_xlabel("predicted minus true offset (s)")
    axis.set_ylabel("predictions")
    axis.set_title(f"offset error ({mode})")
    axis.grid(alpha=0.3, axis="y")
    return _save(figure, path)


def plot_reliability(summary: dict[str, Any], mode: str, path: Path) -> Path:
    table = summary["reliability"]
    figure = agg_figure(5, 5)
    axis = figure.subplots()
    axis.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfectly calibrated")
    filled = [b for b in table["bins"] if b["count"]]
    centres = [(b["low"] + b["high"]) / 2 for b in filled]
    width = filled[0]["high"] - filled[0]["low"] if filled else 0.1
    axis.bar(centres, [b["accuracy"] for b in filled], width=width * 0.9, alpha=0.7,
             label="ACC@1 in bin")
    axis.plot([b["confidence"] for b in filled], [b["accuracy"] for b in filled], "o",
              color="black", label="mean confidence")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_xlabel("top-class confidence")
    axis.set_ylabel("ACC@1")
    ece = table["ece"]
    axis.set_title(f"reliability ({mode}; ECE {ece:.3f})" if ece is not None else mode)
    axis.legend(loc="upper left")
    return _save(figure, path)


def write_plots(
    modes: dict[str, dict[str, Any]], folder: Path, step_sec: float
) -> list[Path]:
    """Every plot of a report into `folder`; returns the files."""
    paths = [plot_curves(modes, folder / "windows_seen.png")]
    for mode, summary in modes.items():
        paths.append(plot_confusion(summary, mode, step_sec, folder / f"confusion_{mode}.png"))
        paths.append(plot_error_histogram(summary, mode, folder / f"errors_{mode}.png"))
        paths.append(plot_reliability(summary, mode, folder / f"reliability_{mode}.png"))
    return paths
