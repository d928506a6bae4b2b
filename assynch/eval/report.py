"""The evaluation report: one JSON document (schema `assynch-evaluation/1`, docs/EVALUATION.md),
its markdown rendering, and the folder they are written to with the plots and predictions."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from assynch.eval.metrics import METRIC_NAMES
from assynch.eval.report_plots import LABELS, write_plots

REPORT_FORMAT = "assynch-evaluation/1"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
PLOTS = "plots"
PREDICTIONS = "predictions.parquet"


def _stat(stat: dict[str, Any], digits: int = 3) -> str:
    if stat["value"] is None:
        return "-"
    if stat["ci_low"] is None:
        return f"{stat['value']:.{digits}f}"
    return f"{stat['value']:.{digits}f} [{stat['ci_low']:.{digits}f}, {stat['ci_high']:.{digits}f}]"


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


def _metric_cells(entry: dict[str, Any]) -> list[str]:
    return [_stat(entry[name]) for name in METRIC_NAMES]


def render_markdown(report: dict[str, Any]) -> str:
    model, data, settings = report["model"], report["data"], report["settings"]
    confidence = int(round(settings["confidence"] * 100))
    names = [LABELS[name] for name in METRIC_NAMES]
    lines = [
        f"# Evaluation of {model['uri']}",
        "",
        f"- model: kind `{model['kind']}`"
        + (f", registered `{model['name']}` version {model['version']}" if model["name"] else "")
        + (f", logged model `{model['model_id']}`" if model.get("model_id") else ""),
        f"- data: `{data['shards']}` split `{data['split']}`: {data['samples']} stream samples of "
        f"{data['windows_per_sample']} windows from {data['videos']} videos (shard set digest "
        f"`{data['digest']}`)",
        f"- intervals: {confidence}% bootstrap over videos ({settings['bootstrap_resamples']} "
        f"resamples, seed {settings['bootstrap_seed']}); a video's own interval resamples its "
        f"predictions",
        f"- {report['created_at']}, {report['wall_sec']:.1f} s",
        "",
    ]
    promotion = report.get("promotion")
    if promotion:
        verdict = "promoted to champion" if promotion["promote"] else "not promoted"
        lines += [f"**Promotion: {verdict}.** {promotion['reason']}.", "",
                  f"Rule: {promotion['rule']} (margin {promotion['margin_points']:g} points).", ""]
    for mode, summary in report["modes"].items():
        overall = summary["overall"]
        lines += [
            f"## {mode}",
            "",
            f"Scored: {summary['scored']} ({overall['predictions']} predictions, "
            f"{overall['videos']} videos). Values with their [{confidence}% interval].",
            "",
            *_table(["", *names], [["overall", *_metric_cells(overall)]]),
            "",
            "### Against windows seen",
            "",
            *_table(["windows seen", *names],
                    [[p["windows_seen"], *_metric_cells(p)] for p in summary["curve"]]),
            "",
            "### Per offset class",
            "",
            *_table(["offset (s)", "predictions", *names],
                    [[f"{c['offset_sec']:+.1f}", c["predictions"], *_metric_cells(c)]
                     for c in summary["per_class"]]),
            "",
            "### Per video",
            "",
            *_table(["video", "predictions", *names],
                    [[v["video_uid"], v["predictions"], *_metric_cells(v)]
                     for v in summary["per_video"]]),
            "",
            f"Reliability: expected calibration error {summary['reliability']['ece']:.3f} "
            f"({settings['reliability_bins']} bins).",
            "",
            f"![confusion]({PLOTS}/confusion_{mode}.png) "
            f"![errors]({PLOTS}/errors_{mode}.png) "
            f"![reliability]({PLOTS}/reliability_{mode}.png)",
            "",
        ]
    lines += [f"![windows seen]({PLOTS}/windows_seen.png)", ""]
    return "\n".join(lines)


def write_report(report: dict[str, Any], folder: str | Path) -> list[Path]:
    """report.json, report.md and plots/ into `folder` (created); returns the files written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    step_sec = report["settings"]["offset_step_sec"]
    written = write_plots(report["modes"], folder / PLOTS, step_sec)
    for name, text in (
        (REPORT_JSON, json.dumps(report, indent=2)), (REPORT_MD, render_markdown(report))
    ):
        temporary = folder / f".{name}.{os.getpid()}.tmp"
        temporary.write_text(text)
        os.replace(temporary, folder / name)
        written.append(folder / name)
    return written


def read_report(folder: str | Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((Path(folder) / REPORT_JSON).read_text())
    if report.get("format") != REPORT_FORMAT:
        raise ValueError(f"{folder}/{REPORT_JSON} is not an {REPORT_FORMAT} report")
    return report
