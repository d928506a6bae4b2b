"""Incremental ingestion: a batch folder of new videos under an s3:// prefix (moto) becomes one
new partition of `batch_shards`, and only that partition is preprocessed; `model` depends on
every partition, and what it trains on (and its fingerprint) grows with each finished one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from preprocess_support import good_clip

from assynch.shards.reader import read_manifest
from pipelines.dag import (
    VIDEO_BATCHES,
    PipelineConfig,
    build_definitions,
    run_pipeline,
    training_data,
)

REPO = Path(__file__).resolve().parents[2]


def tick(pipeline: PipelineConfig, instance: dg.DagsterInstance) -> Any:
    definitions = build_definitions(pipeline)
    sensor = definitions.get_sensor_def("new_video_batches")
    return sensor(dg.build_sensor_context(instance=instance, definitions=definitions))


def upload_batch(moto_s3: Any, bucket: str, batch: str, folder: Path, seeds: list[int]) -> None:
    (folder / batch).mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        path = good_clip(folder / batch / f"{batch}-clip{seed}.mp4", seed=seed)
        moto_s3.client().upload_file(str(path), bucket, f"incoming/{batch}/{path.name}")


def test_a_new_batch_becomes_one_partition_and_only_it_is_preprocessed(
    moto_s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The job subprocesses reach moto with the usual AWS variables (never secrets in configs).
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    bucket = moto_s3.bucket("ingest")
    pipeline = PipelineConfig(str(REPO / "configs" / "quickstart.yaml"), (
        "time.windows_per_sample=2",
        "preprocess.samples_per_video=1",
        f"preprocess.output=s3://{bucket}/shards",
        f"storage.endpoint_url={moto_s3.endpoint_url}",
        "storage.region=us-east-1",
        f"dag.incoming=s3://{bucket}/incoming",
        f"dag.dagster_home={tmp_path / 'dagster'}",
        "dag.synthetic_clips=null",
        "dag.retry_delay_sec=0",
    ))
    home = tmp_path / "dagster"
    home.mkdir()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(tick(pipeline, instance), dg.SkipReason)  # nothing uploaded yet

        upload_batch(moto_s3, bucket, "2026-11-25", tmp_path / "videos", [0, 1])
        result = tick(pipeline, instance)
        assert [r.partition_key for r in result.run_requests] == ["2026-11-25"]
        (add,) = result.dynamic_partitions_requests
        assert list(add.partition_keys) == ["2026-11-25"]
        instance.add_dynamic_partitions(VIDEO_BATCHES.name, list(add.partition_keys))

    run_pipeline(pipeline, selection=["batch_shards"], partition_key="2026-11-25")
    first = read_manifest(f"s3://{bucket}/shards/batches/2026-11-25", _storage(moto_s3))
    assert first["videos"] == 2
    config = pipeline.load()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        one = training_data(instance, config)
    assert one.shards == (config.train.shards, f"s3://{bucket}/shards/batches/2026-11-25")
    assert one.job_args() == ["--shards", *one.shards]

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(tick(pipeline, instance), dg.SkipReason)  # the batch is known now
        upload_batch(moto_s3, bucket, "2026-11-26", tmp_path / "videos", [2])
        result = tick(pipeline, instance)
        assert [r.partition_key for r in result.run_requests] == ["2026-11-26"]
        instance.add_dynamic_partitions(VIDEO_BATCHES.name, ["2026-11-26"])

    outcomes = run_pipeline(pipeline, selection=["batch_shards"], partition_key="2026-11-26")
    second = read_manifest(f"s3://{bucket}/shards/batches/2026-11-26", _storage(moto_s3))
    assert second["videos"] == 1  # only the new batch's video was preprocessed
    assert read_manifest(f"s3://{bucket}/shards/batches/2026-11-25", _storage(moto_s3)) == first
    assert [o.name for o in outcomes] == ["batch_shards"]

    # The model (and stage 1) depend on every partition and train on every finished one: a new
    # partition changes their fingerprint, an unchanged set of partitions does not.
    definitions = build_definitions(PipelineConfig(pipeline.path, (
        *pipeline.overrides, "dag.stage1.enabled=true")))
    graph = {a.key.to_user_string(): a for a in definitions.assets}  # type: ignore[union-attr]
    for name in ("encoders", "model"):
        assert dg.AssetKey("batch_shards") in graph[name].dependency_keys, name
    with dg.DagsterInstance.from_config(str(home)) as instance:
        two = training_data(instance, config)
        again = training_data(instance, config)
    assert two.shards == (*one.shards, f"s3://{bucket}/shards/batches/2026-11-26")
    assert two.fingerprint() != one.fingerprint()
    assert again.fingerprint() == two.fingerprint()


def _storage(moto_s3: Any) -> Any:
    return moto_s3.storage
