"""Preprocessing on Ray Data: videos -> Parquet shards with offset labels.

This module imports no torch or PyAV: Ray pickles `VideoActor` and `write_shard_row` by
reference, so every worker imports it, and only the decoding child pays for the heavy
libraries.

    python -m pipelines.preprocess --config configs/quickstart.yaml [--input X] [--output Y]
    ray job submit --working-dir . -- python -m pipelines.preprocess --config ...

Two Ray Data stages, both calling library code (assynch.preprocess.job):
1. one row per video -> an actor pool of `preprocess.num_workers` decoders, each with
   `preprocess.cpus_per_worker` CPUs; every video becomes one part file or one error marker;
2. one row per planned shard -> tasks that copy rows from the parts into shards.
The driver only sees small JSON results. Exit codes: 0 done, 1 every video failed, 2 bad
config / unreachable input or output / output of another config.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable, Iterator
from typing import Any

import ray
import ray.data

from assynch.config import AssynchConfig, load_config
from assynch.errors import UserError
from assynch.preprocess.compaction import write_shard_row
from assynch.preprocess.job import AllVideosFailedError, PreprocessJob
from assynch.preprocess.plan import ShardPlan, VideoResult, VideoTask
from assynch.preprocess.report import PreprocessReport
from assynch.preprocess.worker import VideoWorker, config_for_workers, run_video_task
from pipelines.ray_runtime import connect

log = logging.getLogger("pipelines.preprocess")

class VideoActor:
    """A Ray Data actor: one long-lived decoding child process per actor."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = AssynchConfig.model_validate(config)
        threads = max(1, int(round(self.config.preprocess.cpus_per_worker)))
        self.worker = VideoWorker(self.config, threads=threads)

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        task = VideoTask.from_json(row["task"])
        return {"result": run_video_task(self.worker, task, self.config).to_json()}


def ray_map_videos(config: AssynchConfig) -> Any:
    pre = config.preprocess

    def run(tasks: list[VideoTask]) -> Iterator[VideoResult]:
        dataset = ray.data.from_items(
            [{"task": task.to_json()} for task in tasks], override_num_blocks=len(tasks)
        ).map(
            VideoActor,
            fn_constructor_kwargs={"config": config_for_workers(config)},
            compute=ray.data.ActorPoolStrategy(size=max(1, min(pre.num_workers, len(tasks)))),
            num_cpus=pre.cpus_per_worker,
        )
        for row in dataset.iter_rows():
            yield VideoResult.from_json(row["result"])

    return run


def ray_map_shards(config: AssynchConfig) -> Any:
    pre = config.preprocess

    def run(plans: list[ShardPlan]) -> Iterable[tuple[ShardPlan, int]]:
        dataset = ray.data.from_items(
            [{"plan": plan.to_json()} for plan in plans], override_num_blocks=len(plans)
        ).map(
            write_shard_row,
            fn_kwargs={"config": config_for_workers(config)},
            compute=ray.data.TaskPoolStrategy(size=max(1, min(pre.num_workers, len(plans)))),
            num_cpus=min(pre.cpus_per_worker, 1.0),
        )
        for row in dataset.iter_rows():
            yield ShardPlan.from_json(row["plan"]), int(row["rows"])

    return run


def run(
    config: AssynchConfig,
    *,
    overwrite: bool = False,
    retry_errors: bool = False,
    num_cpus: int | None = None,
) -> PreprocessReport:
    """Run the job on Ray (the current cluster, RAY_ADDRESS, or a new local one)."""
    job = PreprocessJob(config, overwrite=overwrite, retry_errors=retry_errors)
    report = job.prepare()
    if report is not None:
        return report
    connect(num_cpus)
    return job.execute(ray_map_videos(config), ray_map_shards(config))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.preprocess",
        description="Decode videos into Parquet shards of stream samples with offset labels.",
    )
    parser.add_argument("--config", "-c", help="YAML config (configs/...)")
    parser.add_argument("--input", help="overrides preprocess.input")
    parser.add_argument("--output", help="overrides preprocess.output")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.FIELD=VALUE", help="override one config field")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete the output's previous contents and redo every video")
    parser.add_argument("--retry-errors", action="store_true",
                        help="try again the videos that failed in an earlier run")
    parser.add_argument("--num-cpus", type=int, default=None,
                        help="CPUs of a new local Ray (ignored when joining a cluster)")
    parser.add_argument("--json", action="store_true", help="print the manifest as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    overrides = list(args.overrides)
    if args.input:
        overrides.append(f"preprocess.input={json.dumps(args.input)}")
    if args.output:
        overrides.append(f"preprocess.output={json.dumps(args.output)}")
    try:
        config = load_config(args.config, overrides)
        report = run(config, overwrite=args.overwrite, retry_errors=args.retry_errors,
                     num_cpus=args.num_cpus)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except AllVideosFailedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report.manifest, indent=2) if args.json else report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
