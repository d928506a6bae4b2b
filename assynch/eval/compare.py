"""`assynch compare`: runs side by side: the params that differ, their metrics, sorted by one
metric, and one metric's curve per run. Plain data in, table/markdown/PNG out (MLflow reads are
in assynch/tracking/evaluation.py)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_SORT = "streaming/acc1"
DEFAULT_CURVE = "streaming/curve/acc1"
LOWER_IS_BETTER = ("emd", "loss", "error", "ece")
MISSING = "-"


@dataclass
class ComparedRun:
    run_id: str
    name: str
    experiment_id: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str] = field(default_factory=dict)


def lower_is_better(metric: str) -> bool:
    return any(word in metric.lower() for word in LOWER_IS_BETTER)


def differing_params(runs: Sequence[ComparedRun]) -> list[str]:
    """Param names whose value is not the same in every run (a missing param is a value too)."""
    names = sorted({name for run in runs for name in run.params})
    return [
        name for name in names
        if len({run.params.get(name, MISSING) for run in runs}) > 1
    ]


def shown_metrics(runs: Sequence[ComparedRun], sort_metric: str) -> list[str]:
    """The sort metric first, then every other final metric except intervals, curves and
    bookkeeping (`*_ci_low/high`, `*/curve/*`, `promotion/*`)."""
    names = sorted({name for run in runs for name in run.metrics})
    rest = [
        name for name in names
        if name != sort_metric and "_ci_" not in name and "/curve/" not in name
        and not name.startswith("promotion/")
    ]
    return [sort_metric, *rest]


def sort_runs(
    runs: Sequence[ComparedRun], metric: str, ascending: bool | None = None
) -> list[ComparedRun]:
    """Best first by `metric` (ascending for EMD/loss-like names unless told); runs without
    the metric go last, in their given order."""
    ascending = lower_is_better(metric) if ascending is None else ascending
    having = [run for run in runs if _finite(run.metrics.get(metric))]
    lacking = [run for run in runs if not _finite(run.metrics.get(metric))]
    having.sort(key=lambda run: run.metrics[metric], reverse=not ascending)
    return having + lacking


def _finite(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def _format(value: float | None) -> str:
    return MISSING if not _finite(value) else f"{value:.4f}"


def comparison_table(
    runs: Sequence[ComparedRun], sort_metric: str, ascending: bool | None = None
) -> tuple[list[str], list[list[str]]]:
    """(header, rows): rank, run, differing params, the sort metric (with its logged bootstrap
    interval when there is one, so a reader sees whether the lead is outside the noise), the
    other metrics; best first."""
    ordered = sort_runs(runs, sort_metric, ascending)
    params = differing_params(runs)
    metrics = shown_metrics(runs, sort_metric)
    low, high = f"{sort_metric}_ci_low", f"{sort_metric}_ci_high"
    with_interval = any(low in run.metrics for run in runs)
    header = ["rank", "run", "run id", *params, metrics[0],
              *([f"{sort_metric} interval"] if with_interval else []), *metrics[1:]]
    rows = []
    for rank, run in enumerate(ordered, start=1):
        interval = (
            [f"[{_format(run.metrics.get(low))}, {_format(run.metrics.get(high))}]"
             if low in run.metrics else MISSING] if with_interval else []
        )
        rows.append([
            str(rank), run.name, run.run_id[:12], *(run.params.get(p, MISSING) for p in params),
            _format(run.metrics.get(metrics[0])), *interval,
            *(_format(run.metrics.get(m)) for m in metrics[1:]),
        ])
    return header, rows


def render_markdown(
    runs: Sequence[ComparedRun], sort_metric: str, ascending: bool | None = None,
    plot: str | None = None, source: str = "",
) -> str:
    header, rows = comparison_table(runs, sort_metric, ascending)
    order = "ascending" if (lower_is_better(sort_metric) if ascending is None else ascending) \
        else "descending"
    params = differing_params(runs)
    best = rows[0] if rows else None
    lines = [
        "# Run comparison",
        "",
        f"{len(runs)} runs{(' from ' + source) if source else ''}, sorted by `{sort_metric}` "
        f"({order}, best first). Params shown: those that differ between the runs "
        f"({', '.join(f'`{p}`' for p in params) or 'none'}); `-` = not set / not logged.",
        "",
    ]
    if best is not None:
        lines += [f"Best: **{best[1]}** (`{best[2]}`), {sort_metric} = {best[len(params) + 3]}.",
                  ""]
    escape = [[cell.replace("|", "\\|") for cell in row] for row in [header, *rows]]
    lines.append("| " + " | ".join(escape[0]) + " |")
    lines.append("| " + " | ".join("---" for _ in header) + " |")
    lines += ["| " + " | ".join(row) + " |" for row in escape[1:]]
    if plot:
        lines += ["", f"![curves]({plot})"]
    return "\n".join(lines) + "\n"


def plot_curves(
    histories: dict[str, list[tuple[int, float]]], metric: str, path: str | Path
) -> Path:
    """One line per run of `metric` against its step (windows seen for evaluation curves)."""
    from assynch.eval.plots import agg_figure, save_figure

    figure = agg_figure(8, 4.5)
    axis = figure.subplots()
    plotted = 0
    for label, points in histories.items():
        if not points:
            continue
        steps, values = zip(*points, strict=True)
        axis.plot(steps, values, marker="o", label=label)
        plotted += 1
    axis.set_xlabel("windows seen" if "/curve/" in metric else "step")
    axis.set_ylabel(metric)
    axis.set_title(f"{metric} per run" + ("" if plotted else " (no run logged it)"))
    axis.grid(alpha=0.3)
    if plotted:
        axis.legend(fontsize="small")
    return save_figure(figure, path, dpi=100)


def plot_name(metric: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in metric) + ".png"


def as_json(runs: Sequence[ComparedRun]) -> list[dict[str, Any]]:
    return [
        {"run_id": r.run_id, "name": r.name, "params": r.params, "metrics": r.metrics}
        for r in runs
    ]
