"""Evaluation on Ray Data: a model (registry, run or checkpoint) on one split of a shard set.

    python -m pipelines.evaluate --model models:/as-synchformer@candidate --data SHARDS \
        [--split test] [--config C] [--promote]
    ray job submit --working-dir . -- python -m pipelines.evaluate ...

One Ray Data stage: one row per Parquet row group -> an actor pool of `eval.num_workers` actors,
each holding one copy of the model (shipped once through the object store) and returning one
row of probabilities per stream sample. Everything else is library code (assynch/eval/job.py;
MLflow in assynch/tracking/evaluation.py). Exit codes: 0 done, 1 the evaluation failed, 2 bad
input (unknown model, unfinished or empty shards, another time base, bad config).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import ray
import ray.data

from assynch.config import AssynchConfig, load_config
from assynch.errors import AssynchError, UserError
from assynch.eval.data import EvaluationData
from assynch.eval.job import EvaluationOutcome, PredictFn, predict_locally, run_evaluation
from assynch.eval.predict import (
    Prediction,
    Predictor,
    WorkItem,
    model_from_bytes,
    model_to_bytes,
)
from assynch.models import StreamingModel
from assynch.preprocess.worker import config_for_workers
from pipelines.ray_runtime import connect

log = logging.getLogger("pipelines.evaluate")


class PredictActor:
    """A Ray Data actor: one model copy, one row group per call."""

    def __init__(self, model_ref: Any, settings: dict[str, Any]) -> None:
        import torch

        payload = ray.get(model_ref[0])
        model, config = model_from_bytes(payload)
        torch.set_num_threads(max(1, int(round(settings["cpus"]))))
        self.predictor = Predictor(
            model, config, shards=settings["shards"], batch_size=settings["batch_size"],
            modes=settings["modes"], storage=AssynchConfig.model_validate(
                settings["job_config"]).storage,
        )

    def __call__(self, row: dict[str, Any]) -> Iterator[dict[str, Any]]:
        for prediction in self.predictor(WorkItem.from_json(json.loads(row["item"]))):
            yield prediction.to_row()


def ray_predict(config: AssynchConfig) -> PredictFn:
    settings = config.eval

    def predict(
        model: StreamingModel, model_config: AssynchConfig, data: EvaluationData,
        items: list[WorkItem],
    ) -> Iterator[Prediction]:
        model_ref = ray.put(model_to_bytes(model, model_config))
        job_config = config_for_workers(config)  # with the storage secret for s3:// shards
        dataset = ray.data.from_items(
            [{"item": json.dumps(item.to_json())} for item in items],
            override_num_blocks=len(items),
        ).flat_map(
            PredictActor,
            fn_constructor_kwargs={
                # in a list: Ray would otherwise resolve a top-level ref to the bytes themselves
                "model_ref": [model_ref],
                "settings": {
                    "shards": data.url, "batch_size": settings.batch_size,
                    "modes": list(settings.modes), "cpus": settings.cpus_per_worker,
                    "job_config": job_config,
                },
            },
            compute=ray.data.ActorPoolStrategy(
                size=max(1, min(settings.num_workers, len(items)))
            ),
            num_cpus=settings.cpus_per_worker,
        )
        for row in dataset.iter_rows():
            yield Prediction.from_row(row)

    return predict


def run(
    config: AssynchConfig,
    *,
    promote: bool = False,
    tracking: bool = True,
    tracking_uri: str | None = None,
    output: str | None = None,
    local: bool = False,
    num_cpus: int | None = None,
) -> EvaluationOutcome:
    """The job on Ray (the current cluster, RAY_ADDRESS, or a new local one), or in this process
    with `local`."""
    from assynch.tracking.evaluation import (
        MlflowEvaluationTracker,
        resolve_model,
        tracking_uri_for,
    )

    uri = tracking_uri_for(config, tracking_uri)
    tracker = MlflowEvaluationTracker(uri) if tracking else None
    if local:
        def predict(model: StreamingModel, model_config: AssynchConfig, data: EvaluationData,
                    items: list[WorkItem]) -> Iterator[Prediction]:
            return iter(predict_locally(
                model, model_config, data, items, batch_size=config.eval.batch_size,
                modes=config.eval.modes, storage=config.storage,
            ))
    else:
        connect(num_cpus)
        predict = ray_predict(config)
    return run_evaluation(
        config, resolve=lambda model_uri: resolve_model(model_uri, tracking_uri=uri),
        predict=predict, tracker=tracker, promote=promote, output=output,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.evaluate",
        description="Evaluate a model on one split of a shard set (snapshot and streaming modes), "
                    "log an MLflow evaluation run and optionally promote it to champion.",
    )
    parser.add_argument("--config", "-c", help="YAML config (configs/...); its eval section")
    parser.add_argument("--model", help="overrides eval.model: models:/NAME@ALIAS, "
                        "models:/NAME/VERSION, runs:/RUN_ID/model or a checkpoint path")
    parser.add_argument("--data", help="overrides eval.shards: a finished shard set")
    parser.add_argument("--split", choices=("train", "val", "test"), help="overrides eval.split")
    parser.add_argument("--mode", choices=("snapshot", "streaming", "both"),
                        help="overrides eval.modes (default: both)")
    parser.add_argument("--output", help="write the report into exactly this folder")
    parser.add_argument("--promote", action="store_true",
                        help="move the champion alias here when the promotion rule says so")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: the config's)")
    parser.add_argument("--no-tracking", action="store_true",
                        help="write the report only, log nothing to MLflow")
    parser.add_argument("--local", action="store_true",
                        help="run in this process without Ray (small sets, debugging)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.FIELD=VALUE", help="override one config field")
    parser.add_argument("--num-cpus", type=int, default=None,
                        help="CPUs of a new local Ray (ignored when joining a cluster)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser.parse_args(argv)


def outcome_summary(outcome: EvaluationOutcome) -> str:
    result = outcome.result
    lines = [f"report: {result.folder}"]
    if result.run_id:
        lines.append(f"MLflow evaluation run: {result.run_id}")
    for mode, summary in result.report["modes"].items():
        overall = summary["overall"]
        cells = ", ".join(
            f"{name} {overall[name]['value']:.3f} [{overall[name]['ci_low']:.3f}, "
            f"{overall[name]['ci_high']:.3f}]" for name in ("acc1", "acc1_pm1", "emd_sec")
        )
        lines.append(f"{mode}: {cells}")
    if outcome.decision is not None:
        verdict = "promoted" if outcome.decision.promote else "not promoted"
        lines.append(f"promotion: {verdict}: {outcome.decision.reason}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    overrides = list(args.overrides)
    if args.model:
        overrides.append(f"eval.model={json.dumps(args.model)}")
    if args.data:
        overrides.append(f"eval.shards={json.dumps(args.data)}")
    if args.split:
        overrides.append(f"eval.split={args.split}")
    if args.mode:
        modes = ["snapshot", "streaming"] if args.mode == "both" else [args.mode]
        overrides.append(f"eval.modes={json.dumps(modes)}")
    try:
        config = load_config(args.config, overrides)
        outcome = run(
            config, promote=args.promote, tracking=not args.no_tracking,
            tracking_uri=args.tracking_uri, output=args.output, local=args.local,
            num_cpus=args.num_cpus,
        )
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except AssynchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(outcome.result.report, indent=2))
    else:
        print(outcome_summary(outcome))
    return 0


if __name__ == "__main__":
    sys.exit(main())
