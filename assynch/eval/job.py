"""The evaluation job's logic, free of Ray and MLflow: both are passed in.

    run_evaluation(config, resolve=..., predict=..., tracker=...)

1. open the split of the shard set (`eval.shards`, `eval.split`): refused when unfinished or empty;
2. resolve the model URI (`resolve`: MLflow registry, run or checkpoint path) and refuse shards
   whose time base or features differ from the model's config;
3. `predict` spreads the row groups over workers (Ray Data actors in pipelines/evaluate.py,
   `predict_locally` here) and returns one `Prediction` per stream sample;
4. summarise per mode (assynch/eval/summary.py) and write report.json, report.md, plots and
   predictions.parquet to a folder under `eval.output`;
5. with a tracker: log the evaluation run; with `promote`, compare with the champion on the same
   shard set (its logged evaluation, or an evaluation run now), decide by the rule
   (assynch/eval/promotion.py), log the decision and move the alias when it says so.
"""

from __future__ import annotations

import logging
import re
import time as wall_time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from assynch.config import AssynchConfig, StorageConfig
from assynch.errors import AssynchError, UserError
from assynch.eval.data import (
    EvaluationData,
    TimeBaseMismatchError,
    check_time_base,
    open_evaluation_data,
)
from assynch.eval.predict import Prediction, Predictor, WorkItem, work_items, write_predictions
from assynch.eval.promotion import PromotionDecision, decide_promotion
from assynch.eval.report import PREDICTIONS, REPORT_FORMAT, write_report
from assynch.eval.summary import SummarySettings, headline, summarise
from assynch.models import StreamingModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelInfo:
    """Where a model comes from. `name`/`version` are set for registered models, `model_id` for
    MLflow 3 logged models, `run_id`/`experiment_id` for the run that logged it."""

    uri: str
    name: str | None = None
    version: str | None = None
    model_id: str | None = None
    run_id: str | None = None
    experiment_id: str | None = None

    @property
    def slug(self) -> str:
        text = f"{self.name}-v{self.version}" if self.name and self.version else (
            Path(self.uri.rstrip("/")).stem if "://" not in self.uri else self.uri
        )
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "model"


@dataclass
class ResolvedModel:
    model: StreamingModel
    config: AssynchConfig
    info: ModelInfo


@dataclass
class EvaluationResult:
    report: dict[str, Any]
    predictions: list[Prediction]
    folder: Path | None = None
    run_id: str | None = None

    @property
    def streaming(self) -> dict[str, float]:
        overall = self.report["modes"]["streaming"]["overall"]
        return {"acc1": overall["acc1"]["value"], "emd_sec": overall["emd_sec"]["value"]}


class EvaluationFailedError(AssynchError):
    """The evaluation ran but its output does not add up (e.g. samples went missing)."""


Resolver = Callable[[str], ResolvedModel]
PredictFn = Callable[
    [StreamingModel, AssynchConfig, EvaluationData, list[WorkItem]], Iterable[Prediction]
]


class Tracker(Protocol):
    """What the job needs from experiment tracking (assynch/tracking/evaluation.py)."""

    def champion(self, name: str, alias: str) -> ModelInfo | None:
        """The version holding `alias`, or None."""

    def find_evaluation(
        self, info: ModelInfo, digest: str, split: str
    ) -> dict[str, float] | None:
        """{'acc1', 'emd_sec'} (streaming) of the latest evaluation of `info` on that data."""

    def log_evaluation(self, result: EvaluationResult, eval_experiment: str | None) -> str:
        """Log an evaluation run (metrics, model-linked metrics, artifacts); returns its id."""

    def apply_promotion(
        self, decision: PromotionDecision, name: str, alias: str, run_id: str
    ) -> None:
        """Move `alias` to the candidate when the decision says so; record it either way."""


def predict_locally(
    model: StreamingModel, config: AssynchConfig, data: EvaluationData, items: list[WorkItem],
    *, batch_size: int, modes: Sequence[str], storage: StorageConfig | None = None,
) -> Iterable[Prediction]:
    """Every work item in this process, one after another (tests, small sets, debugging)."""
    predictor = Predictor(model, config, shards=data.url, batch_size=batch_size, modes=modes,
                          storage=storage)
    for item in items:
        yield from predictor(item)


def build_report(
    info: ModelInfo, model_config: AssynchConfig, data: EvaluationData,
    predictions: Sequence[Prediction], config: AssynchConfig, started_at: float,
) -> dict[str, Any]:
    settings = config.eval
    summary_settings = SummarySettings(
        step_sec=model_config.time.offset_step_sec, resamples=settings.bootstrap_resamples,
        seed=settings.bootstrap_seed, confidence=settings.confidence,
        reliability_bins=settings.reliability_bins,
    )
    modes = summarise(predictions, settings.modes, summary_settings)
    return {
        "format": REPORT_FORMAT,
        "model": {
            "uri": info.uri, "name": info.name, "version": info.version,
            "model_id": info.model_id, "run_id": info.run_id, "kind": model_config.model.kind,
            "preset": model_config.model.preset,
            "config_hash": model_config.content_hash("time", "video", "audio", "model"),
        },
        "data": {
            "shards": data.url, "split": data.split, "digest": data.digest,
            "config_hash": data.manifest.get("config_hash"),
            "videos": len({p.video_uid for p in predictions}), "samples": len(predictions),
            "windows_per_sample": model_config.time.windows_per_sample,
        },
        "settings": {
            "modes": list(settings.modes), "batch_size": settings.batch_size,
            "bootstrap_resamples": settings.bootstrap_resamples,
            "bootstrap_seed": settings.bootstrap_seed, "confidence": settings.confidence,
            "reliability_bins": settings.reliability_bins,
            "offset_step_sec": model_config.time.offset_step_sec,
        },
        "created_at": wall_time.strftime("%Y-%m-%dT%H:%M:%SZ", wall_time.gmtime()),
        "wall_sec": round(wall_time.time() - started_at, 3),
        "headline": headline(modes),
        "modes": modes,
    }


def evaluate_model(
    resolved: ResolvedModel, data: EvaluationData, config: AssynchConfig, predict: PredictFn
) -> EvaluationResult:
    """Steps 2-4 for one model: check, predict, summarise (nothing written yet)."""
    started = wall_time.time()
    check_time_base(data, resolved.config, resolved.info.uri)
    items = work_items(data.url, list(data.files), config.storage)
    log.info("evaluating %s on %s/%s: %d row groups, %d samples, modes %s", resolved.info.uri,
             data.url, data.split, len(items), data.samples, ",".join(config.eval.modes))
    predictions = sorted(
        predict(resolved.model, resolved.config, data, items),
        key=lambda p: (p.video_uid, p.sample_id),
    )
    if len(predictions) != data.samples:
        raise EvaluationFailedError(
            f"{len(predictions)} predictions for the {data.samples} samples the manifest of "
            f"{data.url} lists in split {data.split!r}"
        )
    report = build_report(resolved.info, resolved.config, data, predictions, config, started)
    return EvaluationResult(report=report, predictions=predictions)


def write_result(result: EvaluationResult, folder: Path) -> EvaluationResult:
    write_report(result.report, folder)
    write_predictions(result.predictions, str(folder / PREDICTIONS))
    return replace(result, folder=folder)


def result_folder(config: AssynchConfig, info: ModelInfo, data: EvaluationData) -> Path:
    return Path(config.eval.output) / f"{info.slug}_{data.split}_{data.digest[:8]}"


@dataclass
class EvaluationOutcome:
    result: EvaluationResult
    decision: PromotionDecision | None = None
    champion: EvaluationResult | None = None
    messages: list[str] = field(default_factory=list)


def run_evaluation(
    config: AssynchConfig,
    *,
    resolve: Resolver,
    predict: PredictFn,
    tracker: Tracker | None,
    promote: bool = False,
    output: str | Path | None = None,
) -> EvaluationOutcome:
    """The whole job (see the module docstring). `output` overrides the report folder."""
    settings = config.eval
    if promote and tracker is None:
        raise UserError("--promote needs MLflow tracking; drop --no-tracking")
    if promote and "streaming" not in settings.modes:
        raise UserError("--promote compares streaming results; keep 'streaming' in eval.modes")
    data = open_evaluation_data(settings.shards, settings.split, config.storage)
    candidate = resolve(settings.model)
    if promote and not (candidate.info.name and candidate.info.version):
        raise UserError(
            f"--promote moves an alias of a registered model version, and {settings.model} is "
            f"not one; pass models:/NAME@ALIAS or models:/NAME/VERSION"
        )
    result = evaluate_model(candidate, data, config, predict)
    outcome = EvaluationOutcome(result=result)

    if promote:
        assert tracker is not None and candidate.info.name is not None
        champion = tracker.champion(candidate.info.name, settings.champion_alias)
        champion_numbers = None
        champion_problem: str | None = None
        if champion is not None and champion.version != candidate.info.version:
            champion_numbers = tracker.find_evaluation(champion, data.digest, data.split)
            if champion_numbers is None:
                log.info("champion %s has no evaluation on this shard set: evaluating it now",
                         champion.uri)
                try:
                    champion_result = evaluate_model(
                        resolve(champion.uri), data, config, predict
                    )
                except TimeBaseMismatchError as exc:
                    champion_problem = str(exc)
                else:
                    champion_result = write_result(
                        champion_result, result_folder(config, champion, data)
                    )
                    champion_result.run_id = tracker.log_evaluation(
                        champion_result, settings.experiment
                    )
                    outcome.champion = champion_result
                    champion_numbers = champion_result.streaming
        if champion is not None and champion_problem is not None:
            decision = PromotionDecision(
                promote=False,
                reason=f"the champion (version {champion.version}) cannot be scored on this shard "
                       f"set, so the rule cannot compare them: {champion_problem}",
                candidate_version=candidate.info.version,
                champion_version=champion.version,
                candidate_acc1=result.streaming["acc1"],
                candidate_emd_sec=result.streaming["emd_sec"],
                champion_acc1=None, champion_emd_sec=None,
                margin_points=settings.promote_margin,
            )
        else:
            decision = decide_promotion(
                candidate_version=candidate.info.version, candidate=result.streaming,
                champion_version=champion.version if champion else None,
                champion=champion_numbers, margin_points=settings.promote_margin,
            )
        result.report["promotion"] = {**decision.as_dict(), "alias": settings.champion_alias}
        outcome.decision = decision

    folder = Path(output) if output is not None else result_folder(config, candidate.info, data)
    result = write_result(result, folder)
    outcome.result = result
    if tracker is not None:
        result.run_id = tracker.log_evaluation(result, settings.experiment)
        if outcome.decision is not None:
            assert candidate.info.name is not None
            tracker.apply_promotion(
                outcome.decision, candidate.info.name, settings.champion_alias, result.run_id
            )
    return outcome
