"""`make quickstart`: the whole graph on the embedded default (configs/quickstart.yaml).

It runs exactly `assynch pipeline run --config configs/quickstart.yaml` (pipelines/dag.py:
synthetic clips -> shards -> trained and registered model -> evaluation and promotion, on a
local Ray and a local MLflow), then prints the evaluation table and the commands that open the
MLflow UI and the Dagster graph. A second run recomputes nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import time as clock
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from assynch.config import load_config

log = logging.getLogger(__name__)
console = Console()

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"


def mlflow_ui_command(tracking_uri: str) -> str:
    """What to run (or open) to see the quickstart's runs and registry."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri} in a browser"
    return f"mlflow ui --backend-store-uri {tracking_uri} --port 5000"


def evaluation_table(report: dict[str, Any]) -> Table:
    """Overall ACC@1, ACC@1±1 and EMD per mode with their bootstrap intervals."""
    data = report["data"]
    table = Table(title=f"{report['model']['uri']} on {data['split']} ({data['samples']} stream "
                        f"samples, {data['videos']} videos; 95% bootstrap over videos)")
    scored = {"streaming": "end of stream", "snapshot": "each window alone"}
    for column in ("mode", "scored", "ACC@1", "ACC@1±1", "EMD (s)"):
        table.add_column(column)
    for mode, summary in report["modes"].items():
        overall = summary["overall"]
        cells = [
            f"{overall[n]['value']:.3f} [{overall[n]['ci_low']:.3f}, {overall[n]['ci_high']:.3f}]"
            for n in ("acc1", "acc1_pm1", "emd_sec")
        ]
        table.add_row(mode, scored.get(mode, mode), *cells)
    return table


def latest_report(reports: Path) -> dict[str, Any] | None:
    """The newest evaluation report the graph wrote (its folder names the model version)."""
    found = sorted(reports.glob("dag-*/report.json"), key=lambda path: path.stat().st_mtime)
    return json.loads(found[-1].read_text()) if found else None


def main(argv: list[str] | None = None) -> None:
    from assynch.jobs import run_job_module
    from assynch.tracking import resolve_tracking_uri

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = load_config(args.config, args.overrides)
    started = clock.perf_counter()
    console.rule("[bold]assynch pipeline run (clips -> shards -> model -> evaluation)")
    job_args = ["run", "--config", str(args.config)]
    for override in args.overrides:
        job_args += ["--set", override]
    code = run_job_module("dag", job_args)
    if code != 0:
        raise SystemExit(f"the pipeline failed (exit code {code}); see the messages above")
    report = latest_report(Path(config.eval.output))
    if report is not None:
        console.print(evaluation_table(report))
    tracking_uri = resolve_tracking_uri(config)
    console.print(f"MLflow UI (runs, registered model, evaluation): "
                  f"[bold]{mlflow_ui_command(tracking_uri)}[/]")
    console.print(f"Dagster graph: [bold]ASSYNCH_CONFIG={args.config} "
                  f"DAGSTER_HOME={Path(config.dag.dagster_home).resolve()} "
                  "dagster dev -m pipelines.dag[/]")
    console.rule(f"[bold green]quickstart finished in {clock.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
