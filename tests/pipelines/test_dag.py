"""The Dagster graph on the embedded default: every asset materialises by running its job
module, a second run recomputes nothing, a step that fails once is retried alone, a changed
config recomputes only what depends on it, a new batch partition retrains the model on every
finished set, and the optional stage 1 (`encoders`) initialises the model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import dagster as dg
import pytest
from preprocess_support import good_clip

from pipelines.dag import VIDEO_BATCHES, JobRunner, PipelineConfig, run_pipeline

REPO = Path(__file__).resolve().parents[2]


class CountingRunner(JobRunner):
    """The real runner, logging the job modules it starts (under `label`: Dagster copies
    resources) and failing the modules in `fail_once` on their first start."""

    label: str
    fail_once: list[str] = []

    def run(self, context: dg.AssetExecutionContext, module: str, args: Sequence[str]) -> None:
        calls = _calls.setdefault(self.label, [])
        calls.append(module)
        _args.setdefault(self.label, []).append(list(args))
        if module in self.fail_once and calls.count(module) == 1:
            raise dg.Failure(f"{module}: injected failure (first attempt)")
        super().run(context, module, args)


_calls: dict[str, list[str]] = {}
_args: dict[str, list[list[str]]] = {}


def pipeline_in(folder: Path, *extra: str) -> PipelineConfig:
    """The quickstart graph at its smallest: 4 clips of 20 s (with these split fractions:
    2 train, 1 val, 1 test video), one short epoch, everything under `folder`; batches of new
    videos go to `folder/incoming/<batch>`."""
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
        f"dag.incoming={folder / 'incoming'}",
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


def _mlflow(folder: Path):  # type: ignore[no-untyped-def]
    import mlflow

    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")


def test_a_new_batch_partition_retrains_the_model_on_every_finished_set(first_run) -> None:  # type: ignore[no-untyped-def]
    folder, _ = first_run
    (folder / "incoming" / "b1").mkdir(parents=True)
    good_clip(folder / "incoming" / "b1" / "b1-clip2.mp4", seed=3, duration_sec=20.0)  # train
    with dg.DagsterInstance.from_config(str(folder / "dagster")) as instance:
        instance.add_dynamic_partitions(VIDEO_BATCHES.name, ["b1"])  # what the sensor adds
    run_pipeline(pipeline_in(folder), selection=["batch_shards"], partition_key="b1",
                 runner=CountingRunner(label="batch"))
    assert (folder / "shards" / "batches" / "b1" / "_manifest.json").is_file()

    retrained = run_pipeline(pipeline_in(folder), selection=["clips", "shards", "model"],
                             runner=CountingRunner(label="retrain"))
    assert statuses(retrained) == {"clips": "unchanged", "shards": "unchanged",
                                   "model": "computed"}
    (args,) = _args["retrain"]
    shards = args[args.index("--shards") + 1:][:2]
    assert shards == [str(folder / "shards"), str(folder / "shards" / "batches" / "b1")]
    model = {o.name: o for o in retrained}["model"]
    assert model.metadata["batches"] == 1
    inputs = _mlflow(folder).get_run(model.metadata["run_id"]).inputs.dataset_inputs
    read = {tag.value for i in inputs for tag in i.tags if tag.key == "shards_url"}
    assert str(folder / "shards" / "batches" / "b1") in read  # the job trained on the batch too


def test_stage1_encoders_initialise_the_model(first_run) -> None:  # type: ignore[no-untyped-def]
    folder, _ = first_run
    pipeline = pipeline_in(folder, "dag.stage1.enabled=true", "dag.stage1.epochs=1",
                           "dag.stage1.max_steps_per_epoch=2")
    outcomes = run_pipeline(pipeline, selection=["clips", "shards", "encoders", "model"],
                            runner=CountingRunner(label="stage1"))
    assert statuses(outcomes) == {"clips": "unchanged", "shards": "unchanged",
                                  "encoders": "computed", "model": "computed"}
    assert _calls["stage1"] == ["pipelines.train", "pipelines.train"]
    by_name = {o.name: o for o in outcomes}
    encoders, model = by_name["encoders"], by_name["model"]
    assert encoders.data_version == "as-synchformer-encoders/1"
    client = _mlflow(folder)
    stage1_params = client.get_run(encoders.metadata["run_id"]).data.params
    assert stage1_params["train.objective"] == "segment_contrastive"
    assert stage1_params["train.max_steps_per_epoch"] == "2"
    model_params = client.get_run(model.metadata["run_id"]).data.params
    assert model_params["model.init_from"] == "models:/as-synchformer-encoders/1"
    assert model_params["train.objective"] == "offsets"


def test_stage1_runs_the_configured_objective() -> None:
    from assynch.config import load_config
    from pipelines.dag import stage1_args

    quickstart = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"
    config = load_config(quickstart, ["dag.stage1.objective=visual_onset", "dag.stage1.epochs=3"])
    args = stage1_args(config)
    overrides = [value for flag, value in zip(args[::2], args[1::2], strict=True)
                 if flag == "--set"]
    assert "train.objective=visual_onset" in overrides and "train.epochs=3" in overrides
    assert "train.select_metric=onset_auc" in overrides  # its best checkpoint: the best AUC
    # the overrides make a valid training config (select_metric=onset_auc needs the objective)
    load_config(quickstart, overrides)
    contrastive = stage1_args(load_config(quickstart))
    assert "train.select_metric=onset_auc" not in contrastive
