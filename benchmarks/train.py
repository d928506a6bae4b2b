"""Training throughput (issue 9): the tiny model on this CPU with 1 and 2 Ray Train workers
(samples/s, share of step time waiting for data), and the read path from JPEG shards at full size
against the full model's step time estimated from FLOPs.

    PYTHONPATH=. python benchmarks/train.py [--workdir /tmp/assynch-bench-train] [--epochs 3]

Results go to docs/BENCHMARKS.md by hand, with the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from assynch.config import AssynchConfig, load_config
from assynch.models.flops import model_cost

REPO = Path(__file__).resolve().parents[1]
# Dense bf16 peaks (NVIDIA datasheets, SXM, without sparsity), TFLOP/s.
GPU_BF16_PEAK_TFLOPS = {"H100": 989.0, "A100": 312.0}
TARGET_MFU = 0.40


def make_clips(folder: Path, count: int, seconds: float) -> None:
    from assynch.synth.clips import SynthSpec, generate_clips

    generate_clips(folder, count=count, duration_sec=seconds, seed=0, spec=SynthSpec(),
                   workers=1)


def preprocess(config: AssynchConfig) -> dict[str, Any]:
    from pipelines.preprocess import run

    report = run(config)
    return report.manifest


def tiny_config(workdir: Path, workers: int, epochs: int) -> AssynchConfig:
    # Two cores: the workers share 1 CPU of Ray's budget, Ray Data's tasks the other (one worker
    # at 1.5 CPUs left Ray Data 0.5 and the run never started reading).
    cpus = 1.0 / workers
    return load_config(REPO / "configs" / "quickstart.yaml", [
        f"preprocess.input={workdir / 'clips'}", f"preprocess.output={workdir / 'tiny_shards'}",
        f"train.shards={workdir / 'tiny_shards'}", f"train.storage_path={workdir / 'runs'}",
        f"train.run_name=bench-{workers}w-{int(time.time())}", f"train.epochs={epochs}",
        f"train.num_workers={workers}", f"train.cpus_per_worker={cpus}", "train.data_cpus=0.25",
        "train.tracking=false", "train.val_split=null", "train.log_every_steps=1000",
    ])


def run_tiny(workdir: Path, workers: int, epochs: int) -> dict[str, float]:
    from pipelines.train import run

    config = tiny_config(workdir, workers, epochs)
    preprocess(config)
    result = run(config)
    metrics = result.metrics  # the last epoch: imports, compilation and first reads are behind
    return {
        "workers": workers,
        "samples_per_epoch": metrics["train/samples"],
        "samples_per_sec": metrics["train/samples_per_sec"],
        "data_wait_share": metrics["train/data_wait_share"],
        "epoch_sec": metrics["train/epoch_sec"],
    }


def full_jpeg_config(workdir: Path) -> AssynchConfig:
    return load_config(REPO / "configs" / "full.yaml", [
        f"preprocess.input={workdir / 'full_clips'}",
        f"preprocess.output={workdir / 'full_shards'}",
        "preprocess.samples_per_video=1", "preprocess.num_workers=2",
        "preprocess.rows_per_shard=2", "preprocess.rows_per_row_group=1",
    ])


def read_path(workdir: Path, config: AssynchConfig) -> dict[str, float]:
    """Samples/s that Ray Data delivers to one consumer (read + JPEG decode in Ray Data tasks),
    and the same decode in one plain process (one core's rate)."""
    import pyarrow.parquet as pq
    import ray
    import ray.data

    from assynch.shards.reader import list_shards
    from assynch.train.read import READ_COLUMNS, rows_to_columns

    manifest = preprocess(config)
    frame_shape = manifest["layout"]["frames_shape"][1:]
    files = list_shards(config.preprocess.output, "train") + list_shards(
        config.preprocess.output, "val") + list_shards(config.preprocess.output, "test")

    started = time.perf_counter()
    rows = 0
    for path in files:
        table = pq.read_table(path, columns=list(READ_COLUMNS))
        rows += len(rows_to_columns(table, frame_shape)["sample_id"])
    one_core = rows / (time.perf_counter() - started)

    dataset = ray.data.read_parquet(files, num_cpus=0.5).select_columns(list(READ_COLUMNS))
    dataset = dataset.map_batches(rows_to_columns, fn_kwargs={"frame_shape": frame_shape},
                                  batch_format="pyarrow", batch_size=None, num_cpus=0.5)
    started = time.perf_counter()
    delivered = sum(len(batch["sample_id"]) for batch in dataset.iter_batches(
        batch_size=1, batch_format="numpy"))
    ray_rate = delivered / (time.perf_counter() - started)
    return {"samples": rows, "frames_per_sample": manifest["layout"]["frames_shape"][0],
            "one_process_samples_per_sec": one_core, "ray_data_samples_per_sec": ray_rate}


def full_step_estimate(config: AssynchConfig) -> dict[str, float]:
    """Training FLOPs per stream sample of the full model: forward per window (model_cost) x
    windows x 3 (backward ~ 2 x forward with full fine-tuning; an upper bound for partial)."""
    cost = model_cost(config)
    forward = cost.flops_per_window / 1e9 * config.time.windows_per_sample
    train_gflop = 3 * forward
    out: dict[str, float] = {"train_gflop_per_sample": train_gflop}
    for gpu, peak in GPU_BF16_PEAK_TFLOPS.items():
        out[f"{gpu}_samples_per_sec_at_40pct_mfu"] = peak * 1e3 * TARGET_MFU / train_gflop
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/assynch-bench-train"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--clips", type=int, default=10)
    parser.add_argument("--parts", default="tiny,read",
                        help="tiny: 1 and 2 workers; read: full-size JPEG read path")
    parser.add_argument("--full-clips", type=int, default=4,
                        help="30 s clips for the full-size JPEG read path (1 sample each)")
    args = parser.parse_args()
    import ray

    args.workdir.mkdir(parents=True, exist_ok=True)
    make_clips(args.workdir / "clips", args.clips, 40.0)
    ray.init(address="local", num_cpus=2, object_store_memory=400 * 1024**2,
             include_dashboard=False, log_to_driver=False)
    results: dict[str, Any] = {"load_average_start": os.getloadavg()}
    parts = set(args.parts.split(","))
    if "tiny" in parts:
        results["tiny"] = [run_tiny(args.workdir, workers, args.epochs) for workers in (1, 2)]
    if "read" in parts:
        make_clips(args.workdir / "full_clips", args.full_clips, 30.0)
        full = full_jpeg_config(args.workdir)
        results["read_path_full_jpeg"] = read_path(args.workdir, full)
        results["full_step_estimate"] = full_step_estimate(full)
        per_core = results["read_path_full_jpeg"]["one_process_samples_per_sec"]
        results["cores_per_gpu"] = {
            gpu: results["full_step_estimate"][f"{gpu}_samples_per_sec_at_40pct_mfu"] / per_core
            for gpu in GPU_BF16_PEAK_TFLOPS
        }
    results["load_average_end"] = os.getloadavg()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
