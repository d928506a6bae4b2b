"""Training on Ray Train: shards -> Ray Data -> DDP workers running assynch.train.loop.

    python -m pipelines.train --config configs/quickstart.yaml [--set a.b=c] [--resume [NAME]]
    ray job submit --working-dir . -- python -m pipelines.train --config ...
    assynch train --config ...                      (runs this module with the same arguments)

This module only wires Ray to library code: `assynch.train.preflight` checks the inputs before
Ray starts, Ray Data reads the shards (JPEG decode and float conversion in its own tasks) and
splits them between the workers so that every sample goes to exactly one rank per epoch, and
every worker runs `assynch.train.loop.train_worker` with a `WorkerEnv` made of Ray Train calls
(dataset shard, report, get_checkpoint). Exit codes: 0 done, 1 the run failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray
import ray.data
import ray.train
from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from assynch.config import AssynchConfig, load_config
from assynch.errors import UserError
from assynch.preprocess.worker import config_for_workers
from assynch.samples.plan import sample_frames
from assynch.shards.format import shard_layout
from assynch.shards.sets import ShardSets, shard_entries
from assynch.storage import arrow_filesystem, filesystem, join
from assynch.train.read import READ_COLUMNS, rows_to_columns
from pipelines.ray_runtime import cluster_cpus, connect

log = logging.getLogger("pipelines.train")


# ---------------------------------------------------------------------------------------------
# Data


def read_split(config: AssynchConfig, sets: ShardSets, split: str, frame_shape: list[int],
               seed: int) -> Any:
    """One split of every shard set as one Ray Dataset of numpy columns (assynch.train.read),
    file order shuffled per epoch (train) with the seed."""
    fs, _ = arrow_filesystem(sets.first.url, config.storage)  # the sets share one storage
    files = sets.files(split, config.storage)  # absolute, or bucket/key
    shuffle = (ray.data.FileShuffleConfig(seed=seed, reseed_after_execution=True)
               if split == config.train.train_split else None)
    dataset = ray.data.read_parquet(
        files, filesystem=fs, shuffle=shuffle, num_cpus=config.train.data_cpus,
    ).select_columns(list(READ_COLUMNS))  # projected into the Parquet read
    # Blocks of about one training batch: the streaming split hands out whole blocks, so small
    # blocks keep the ranks' shares even (Ray Data would otherwise pack a shard file's decoded
    # rows into one block of up to 128 MiB, and one rank would get all of them).
    dataset = dataset.map_batches(
        rows_to_columns, fn_kwargs={"frame_shape": frame_shape}, batch_format="pyarrow",
        batch_size=config.train.batch_size, num_cpus=config.train.data_cpus,
    )
    row_bytes = math.prod(frame_shape) * sample_frames(config.time) + 4 * math.prod(
        shard_layout(config).mel_shape)
    dataset.context.target_max_block_size = max(1, config.train.batch_size * row_bytes)
    return dataset


class ExactlyOnceDataConfig(DataConfig):
    """Ray Train's default split (`streaming_split(equal=True)`) may drop rows to give every rank
    the same count; here every row goes to exactly one rank and the loop evens out the steps."""

    def configure(self, datasets: dict[str, Any], world_size: int, worker_handles: Any,
                  worker_node_ids: Any, **kwargs: Any) -> list[dict[str, Any]]:
        output: list[dict[str, Any]] = [{} for _ in range(world_size)]
        for name, dataset in datasets.items():
            dataset = dataset.copy(dataset)
            dataset.context.execution_options = self._resolve_execution_options(name)
            for rank, split in enumerate(dataset.streaming_split(world_size, equal=False)):
                output[rank][name] = split
        return output


# ---------------------------------------------------------------------------------------------
# The worker


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """What every Ray Train worker runs: a WorkerEnv of Ray calls around the plain torch loop."""
    import torch

    from assynch.train.env import WorkerEnv
    from assynch.train.loop import train_worker

    logging.basicConfig(level=logging.INFO, datefmt="%H:%M:%S",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = AssynchConfig.model_validate(loop_config["config"])
    train = config.train
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device() if train.use_gpu else torch.device("cpu")

    def batches(name: str, shuffle: bool) -> Any:
        shard = ray.train.get_dataset_shard(name)

        def for_epoch(epoch: int) -> Any:
            buffer = max(train.shuffle_buffer, train.batch_size) if shuffle else None
            return shard.iter_batches(
                batch_size=train.batch_size, batch_format="numpy", prefetch_batches=2,
                local_shuffle_buffer_size=buffer if train.shuffle_buffer else None,
                local_shuffle_seed=(train.seed * 1_000_003 + epoch * 101 + rank)
                if shuffle and train.shuffle_buffer else None,
            )

        return for_epoch

    def report(metrics: dict[str, Any], checkpoint_folder: str | None) -> None:
        checkpoint = (ray.train.Checkpoint.from_directory(checkpoint_folder)
                      if checkpoint_folder else None)
        ray.train.report(metrics, checkpoint=checkpoint)

    @contextlib.contextmanager
    def latest_checkpoint() -> Iterator[str | None]:
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as folder:
            yield folder

    audit = loop_config.get("audit_dir")

    def sample_log(record: dict[str, Any]) -> None:
        assert audit is not None
        with open(Path(audit) / f"rank{record['rank']}.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")

    env = WorkerEnv(
        rank=rank, world_size=world_size, device=device,
        train_batches=batches("train", shuffle=True),
        val_batches=batches("val", shuffle=False) if train.val_split else None,
        report=report, latest_checkpoint=latest_checkpoint,
        train_samples=int(loop_config["train_samples"]),
        sample_log=sample_log if audit else None,
    )
    train_worker(config, env)


# ---------------------------------------------------------------------------------------------
# The driver


def check_cpu_budget(config: AssynchConfig) -> None:
    """Workers x CPUs + one data task must fit the cluster, else the run waits forever."""
    train = config.train
    needed = max(train.num_workers, 1) * train.cpus_per_worker + train.data_cpus
    available = cluster_cpus()
    if needed > available + 1e-9:
        raise UserError(
            f"the run needs {needed:g} CPUs (train.num_workers={train.num_workers} x "
            f"train.cpus_per_worker={train.cpus_per_worker:g} + train.data_cpus="
            f"{train.data_cpus:g}) but the Ray cluster has {available:g}; lower them (fractions "
            "work) or add CPUs, else the run would wait forever"
        )
    left = available - max(train.num_workers, 1) * train.cpus_per_worker
    if left < 1.0:
        log.warning(
            "the workers leave Ray Data %.2g CPU of %.2g; below 1 CPU it may never start "
            "reading (seen with 1 worker x 1.5 CPUs on 2): lower train.cpus_per_worker", left,
            available,
        )


def run_name_for(config: AssynchConfig, resume: str | None) -> str:
    if resume:
        return resume
    return config.train.run_name or f"{config.tracking.experiment}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_run_folder(config: AssynchConfig, name: str, resume: bool) -> None:
    fs, path = filesystem(config.train.storage_path, config.storage)
    folder = join(path, name)
    exists = fs.exists(folder) and bool(fs.ls(folder))
    where = join(config.train.storage_path, name)
    if resume and not exists:
        raise UserError(f"--resume: no run {name!r} at {where}; check the name and "
                        "train.storage_path")
    if not resume and exists:
        raise UserError(f"a run named {name!r} already exists at {where}; pass --resume to "
                        "continue it or choose another train.run_name")


def absolute_local(url: str) -> str:
    """`url` unchanged when it has a scheme (s3://...), else as an absolute local path."""
    return url if "://" in url else str(Path(url).resolve())


def run(
    config: AssynchConfig,
    *,
    resume: str | None = None,
    num_cpus: int | None = None,
    audit_dir: str | None = None,
) -> Any:
    """Check the inputs, then train on Ray (the current cluster, RAY_ADDRESS, or a new local
    one). Returns Ray Train's Result."""
    from assynch.train.preflight import check_training_inputs
    from assynch.train.tracking import check_tracking

    train = config.train
    name = run_name_for(config, resume)
    # Ray Train workers run in their own working folders: local paths must be absolute there.
    shards = [absolute_local(entry) for entry in shard_entries(train.shards)]
    config = config.model_copy(update={"train": train.model_copy(update={
        "run_name": name, "shards": shards[0] if len(shards) == 1 else tuple(shards),
        "storage_path": absolute_local(train.storage_path),
    })})
    sets = check_training_inputs(config)
    # The workers read (and log to MLflow) exactly these sets, even if a `ROOT/*` entry gains
    # a finished set while the run starts.
    config = config.model_copy(update={"train": config.train.model_copy(update={
        "shards": sets.as_value()})})
    train = config.train
    check_run_folder(config, name, resume=resume is not None)
    tracking_uri = check_tracking(config)
    connect(num_cpus, progress_bars=False)
    check_cpu_budget(config)

    layout = sets.layout
    if layout is None:
        raise UserError(f"{sets.first.url}/_manifest.json has no layout; preprocess again")
    frame_shape = layout["frames_shape"][1:]
    datasets = {"train": read_split(config, sets, train.train_split, frame_shape, train.seed)}
    if train.val_split:
        datasets["val"] = read_split(config, sets, train.val_split, frame_shape, train.seed)
    storage_fs, storage_root = arrow_filesystem(train.storage_path, config.storage)
    resources = {"CPU": train.cpus_per_worker, **({"GPU": 1.0} if train.use_gpu else {})}
    worker_config = config_for_workers(config)
    if tracking_uri:  # every process agrees on one absolute URI
        worker_config["tracking"] = {**worker_config["tracking"], "tracking_uri": tracking_uri}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "config": worker_config,
            "train_samples": sets.samples(train.train_split),
            "audit_dir": audit_dir,
        },
        scaling_config=ScalingConfig(num_workers=train.num_workers, use_gpu=train.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=name, storage_path=storage_root, storage_filesystem=storage_fs,
            failure_config=FailureConfig(max_failures=train.max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=train.keep_checkpoints, checkpoint_score_attribute="score",
                checkpoint_score_order="max",
            ),
        ),
        datasets=datasets,
        dataset_config=ExactlyOnceDataConfig(),
    )
    log.info("run %s: %d workers x %g CPU%s, checkpoints in %s", name, train.num_workers,
             train.cpus_per_worker, " + 1 GPU" if train.use_gpu else "",
             join(train.storage_path, name))
    return trainer.fit()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.train",
        description="Fine-tune AS-Synchformer on preprocessed shards with Ray Train (DDP).",
    )
    parser.add_argument("--config", "-c", help="YAML config (configs/...)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.FIELD=VALUE", help="override one config field")
    parser.add_argument("--shards", nargs="+", metavar="URL",
                        help="overrides train.shards: one or more finished shard sets, or ROOT/* "
                        "for every finished set under ROOT")
    parser.add_argument("--resume", nargs="?", const="", default=None, metavar="NAME",
                        help="continue the run NAME (default: train.run_name) from its latest "
                        "checkpoint")
    parser.add_argument("--num-cpus", type=int, default=None,
                        help="CPUs of a new local Ray (ignored when joining a cluster)")
    parser.add_argument("--audit-dir", default=None,
                        help="write each rank's sample ids and parameter digest per epoch here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, datefmt="%H:%M:%S",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = list(args.overrides)
    if args.shards:
        shards = args.shards[0] if len(args.shards) == 1 else args.shards
        overrides.append(f"train.shards={json.dumps(shards)}")
    try:
        config = load_config(args.config, overrides)
        resume = args.resume
        if resume == "":
            if not config.train.run_name:
                raise UserError("--resume needs the run's name: --resume NAME or "
                                "--set train.run_name=NAME")
            resume = config.train.run_name
        result = run(config, resume=resume, num_cpus=args.num_cpus, audit_dir=args.audit_dir)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ray.train.TrainingFailedError as exc:
        print(f"error: training failed: {exc}", file=sys.stderr)
        return 1
    print(summary(result))
    return 0


def summary(result: Any) -> str:
    """The run in a few lines: epochs, the best epoch (the loop's choice, from the latest
    checkpoint's train_state.pt: Ray's best_checkpoints breaks score ties by recency) and where
    its model is."""
    import torch

    from assynch.train.checkpoint import STATE_FILE

    metrics = result.metrics or {}
    lines = [f"run {Path(result.path).name}: {int(metrics.get('epoch', 0))} epochs, "
             f"{int(metrics.get('step', 0))} steps"]
    if result.checkpoint is None:
        return "\n".join(lines)
    with result.checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)
    progress = state["progress"]
    if progress["best_epoch"]:
        best = progress["history"][progress["best_epoch"] - 1]
        shown = {k: round(v, 4) for k, v in best.items()
                 if k.startswith("val/") and "_w" not in k}
        lines.append(f"best epoch {progress['best_epoch']}: {shown}")
    lines.append(f"latest checkpoint: {result.checkpoint.path} (best model: "
                 f"{state['best_model_file']} inside)")
    if progress.get("tracking_run_id"):
        lines.append(f"MLflow run: {progress['tracking_run_id']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
