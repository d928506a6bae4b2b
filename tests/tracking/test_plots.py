"""assynch.eval.plots: headless figures of curves and the offset confusion matrix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from assynch.eval.plots import (
    confusion_figure,
    confusion_matrix,
    curves_figure,
    offset_labels,
    save_figure,
)


def test_confusion_matrix_counts_rows_true_columns_predicted() -> None:
    counts = confusion_matrix([0, 0, 2, 20], [0, 1, 2, 19], num_classes=21)
    assert counts.shape == (21, 21) and counts.sum() == 4
    assert counts[0, 0] == 1 and counts[0, 1] == 1 and counts[2, 2] == 1 and counts[20, 19] == 1
    with pytest.raises(ValueError, match="0..20"):
        confusion_matrix([21], [0], num_classes=21)
    with pytest.raises(ValueError, match="predictions"):
        confusion_matrix([1, 2], [1], num_classes=21)


def test_offset_labels_follow_the_class_grid() -> None:
    labels = offset_labels(21, 0.2)
    assert labels[0] == "-2.0" and labels[10] == "+0.0" and labels[20] == "+2.0"


def test_figures_render_to_png_without_pyplot(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    confusion = rng.integers(0, 5, size=(21, 21))
    confusion[3] = 0  # a class without samples stays blank
    history = [
        {"epoch": 0, "train/loss": 3.0, "val/acc1": 0.1},
        {"epoch": 1, "train/loss": 2.0, "val/acc1": 0.2, "val/emd_sec": 0.6},
    ]
    paths = [
        save_figure(confusion_figure(confusion, title="best"), tmp_path / "c.png"),
        save_figure(curves_figure(history, best_x=1), tmp_path / "sub" / "k.png"),
    ]
    for path in paths:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_the_plotting_modules_never_import_pyplot(tmp_path: Path) -> None:
    """In a fresh process (other tests or libraries may import pyplot in this one): drawing
    every kind of figure leaves pyplot, its global state and its backend choice alone."""
    code = f"""
import sys
import numpy as np
from assynch.eval import compare, plots, report_plots
plots.save_figure(plots.confusion_figure(np.eye(21, dtype=int)), {str(tmp_path / 'c.png')!r})
compare.plot_curves({{"run": [(1, 0.1), (2, 0.2)]}}, "acc1", {str(tmp_path / 'k.png')!r})
assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported"
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_bad_figure_inputs_raise() -> None:
    with pytest.raises(ValueError, match="square"):
        confusion_figure(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="history is empty"):
        curves_figure([])
