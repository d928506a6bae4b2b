"""The Dagster graph on the embedded default: every asset materialises by running its job
module, a second run recomputes nothing, a step that fails once is retried alone, and a changed
config recomputes only what depends on it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import dagster as dg
import pytest

from pipelines.dag import JobRunner, PipelineConfig, run_pipeline

REPO = Path(__file__).resolve().parents[2]


class CountingRunner(JobRunner):
    """The real runner, logging the job modules it starts (under `label`: Dagster copies
    resources) and failing the modules in `fail_once` on their first start."""

    label: str
    fail_once: list[str] = []

    def run(self, context: dg.AssetExecutionContext, module: str, args: Sequence[str]) -> None:
        calls = _calls.setdefault(self.label, [])
        calls.append(module)
        if module in self.fail_once and calls.count(module) == 1:
            raise dg.Failure(f"{module}: injected failure (first attempt)")
        super().run(context, module, args)


_calls: dict[str, list[str]] = {}


def pipeline_in(folder: Path, *extra: str) -> PipelineConfig:
    """The quickstart graph at its smallest: 4 clips of 20 s (with these split fractions:
    2 train, 1 val, 1 test video), one short epoch, everything under `folder`."""
    return PipelineConfig(str(REPO / "configs" / "quickstart.yaml"), (
        f"preprocess.input={folder / 'clips'}",
        f"preprocess.output={folder / 'shards'}",
        "preprocess.splits={train: 0.3, val: 0.2, test: 0.5}",
        f"train.shards={folder / 'shards'}",
        f"train.storage_path={folder / 'runs'}",
        "train.epochs=1",
        f"tracking.tracking_uri=sqlite:///{folder / 'mlflow.db'}",
        f"eval.shards={folder / 'shards'}",
        f"eval.output={folder / 'reports'}",
        "eval.bootstrap_resamples=50",
        f"dag.dagster_home={folder / 'dagster'}",
        "dag.synthetic_clips.count=4",
        "dag.synthetic_clips.duration_sec=20",
        "dag.retry_delay_sec=0",
        *extra,
    ))


def statuses(outcomes: Sequence) -> dict[str, str]:  # type: ignore[type-arg]
    return {outcome.name: outcome.status for outcome in outcomes}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:  # type: ignore[type-arg]
    folder = tmp_path_factory.mktemp("dag")
    runner = CountingRunner(label="first", fail_once=["pipelines.preprocess"])
    outcomes = run_pipeline(pipeline_in(folder), runner=runner)
    return folder, [outcomes, _calls["first"]]


def test_every_asset_materialises_and_a_failed_step_is_retried_alone(first_run) -> None:  # type: ignore[no-untyped-def]
    folder, (outcomes, calls) = first_run
    assert statuses(outcomes) == {"clips": "computed", "shards": "computed",
                                  "model": "computed", "evaluation": "computed"}
    # preprocess failed once and ran again; the clips step before it ran once
    assert calls == ["assynch", "pipelines.preprocess", "pipelines.preprocess",
                     "pipelines.train", "pipelines.evaluate"]
    shards = {outcome.name: outcome for outcome in outcomes}["shards"]
    assert shards.metadata["samples/train"] + shards.metadata["samples/val"] + shards.metadata[
        "samples/test"
    ] > 0
    assert (folder / "shards" / "_manifest.json").is_file()
    model = {outcome.name: outcome for outcome in outcomes}["model"]
    assert model.data_version == f"as-synchformer/{model.metadata['version']}"
    evaluation = {outcome.name: outcome for outcome in outcomes}["evaluation"]
    assert 0.0 <= evaluation.metadata["streaming/acc1"] <= 1.0
    assert evaluation.metadata["promoted"] is True  # the first version becomes the champion


def test_a_second_run_recomputes_nothing(first_run) -> None:  # type: ignore[no-untyped-def]
    folder, (first, _) = first_run
    again = run_pipeline(pipeline_in(folder), runner=CountingRunner(label="second"))
    assert set(statuses(again).values()) == {"unchanged"}
    assert _calls.get("second", []) == []
    assert [o.data_version for o in again] == [o.data_version for o in first]


def test_a_changed_config_recomputes_only_what_depends_on_it(first_run) -> None:  # type: ignore[no-untyped-def]
    folder, (first, _) = first_run
    changed = run_pipeline(pipeline_in(folder, "eval.bootstrap_resamples=60"),
                           runner=CountingRunner(label="changed"))
    assert statuses(changed) == {"clips": "unchanged", "shards": "unchanged",
                                 "model": "unchanged", "evaluation": "computed"}
    assert _calls["changed"] == ["pipelines.evaluate"]
    before = {o.name: o.data_version for o in first}
    after = {o.name: o.data_version for o in changed}
    assert {k: after[k] for k in ("clips", "shards", "model")} == {
        k: before[k] for k in ("clips", "shards", "model")}
