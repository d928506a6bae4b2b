"""Preprocessing performance, each number against a baseline measured in the same run.

    .venv/bin/python benchmarks/preprocess.py [--clips 8] [--seconds 480] [--workers 2]
        [--read-samples 24] [--memory-minutes 2 10] [--skip-memory] [--work DIR]

(a)/(b)  the Ray Data job's throughput (seconds of input video per wall second) on synthetic
         640x480 30 fps clips (assynch.data.synth), against one bare PyAV pass over the same
         files that only decodes every video frame and audio packet, on the same cores
         (`--workers` processes, one file each at a time, one decoder thread each; and one
         process with FFmpeg's automatic threads: the faster of the two is the limit).
         Three jobs, all with configs/full.yaml's time base and frame size (25 fps, 224x224
         crop, 8 windows of 4.64 s): `sparse_jpeg` is full.yaml as it is (4 samples per video,
         JPEG frames), which decodes only the spans its samples need; `dense_jpeg` packs
         samples as tightly as the plan allows, so the whole video is decoded; `sparse_raw` is
         `sparse_jpeg` with raw frames.
         Job time excludes `ray.init` (reported beside it) and includes the compaction.
(c)/(d)  samples per second a training worker receives from the shards (Parquet -> torch
         batches with ShardDataset, one process), against Synchformer's way: decode each
         sample's span from its video at training time (seek, decode, resize, log-mel).
memory   peak RSS (VmHWM) of the per-video decoding process for a 10-minute and a 2-minute
         1280x720 30 fps video (a plain PyAV writer makes them), each in a fresh process,
         full.yaml with dense samples (23 and 5 samples: the whole video is decoded).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from assynch.config import AssynchConfig, load_config
from assynch.data.decode import iter_decode, probe
from assynch.data.features import normalised_log_mel
from assynch.data.preprocess_plan import VideoTask
from assynch.data.preprocess_video import usable_duration_sec
from assynch.data.shards import ShardDataset
from assynch.data.synth import SynthSpec, generate_clips
from assynch.data.video_worker import VideoWorker
from assynch.data.windows import (
    SamplePlan,
    sample_audio_range,
    sample_frame_range,
)

log = logging.getLogger("benchmarks.preprocess")
ROOT = Path(__file__).resolve().parents[1]


def bench_config(clips: Path, output: Path, workers: int, frame_format: str,
                 dense: bool) -> AssynchConfig:
    """configs/full.yaml (25 fps, 224x224 crop, 8 windows of 4.64 s); `dense` packs samples as
    tightly as the plan allows, so the whole video is decoded, else full.yaml's sampling."""
    overrides = [
        f"preprocess.input={clips}",
        f"preprocess.output={output}",
        f"preprocess.frame_format={frame_format}",
        f"preprocess.num_workers={workers}",
        "preprocess.cpus_per_worker=1",
        "preprocess.rows_per_row_group=2",
        "preprocess.rows_per_shard=16",
    ]
    if dense:
        overrides.append("preprocess.samples_per_video=1000")
    return load_config(ROOT / "configs" / "full.yaml", overrides)


# ---------------------------------------------------------------------------------------------
# (b) the limit: decode every frame and audio packet, nothing else


def bare_decode(path: str, threads: int) -> int:
    decoded = 0
    with av.open(path) as container:
        video = container.streams.video[0]
        video.thread_type = "AUTO"
        video.codec_context.thread_count = threads
        for packet in container.demux():
            for _frame in packet.decode():
                decoded += 1
    return decoded


def bare_pass(paths: list[str], workers: int) -> dict[str, float]:
    started = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(bare_decode, paths, [1] * len(paths)))
    parallel = time.perf_counter() - started
    started = time.perf_counter()
    for path in paths:
        bare_decode(path, 0)
    threaded = time.perf_counter() - started
    return {"processes_sec": parallel, "auto_threads_sec": threaded,
            "best_sec": min(parallel, threaded)}


# ---------------------------------------------------------------------------------------------
# (a) the job


def job_pass(config: AssynchConfig, workers: int) -> dict[str, Any]:
    import ray

    from pipelines.preprocess import run

    started = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
             object_store_memory=500 * 1024**2)
    ray_init = time.perf_counter() - started
    started = time.perf_counter()
    report = run(config, overwrite=True)
    wall = time.perf_counter() - started
    ray.shutdown()
    return {"ray_init_sec": ray_init, "job_sec": wall, "manifest": report.manifest}


# ---------------------------------------------------------------------------------------------
# (c) training reads from shards, (d) training decodes from the videos


def shard_reader_pass(output: Path, limit: int) -> dict[str, float]:
    samples = 0
    started = time.perf_counter()
    for split in ("train", "val", "test"):
        try:
            dataset = ShardDataset(str(output), split, batch_size=4)
        except ValueError:
            continue
        for batch in dataset:
            samples += int(batch["frames"].shape[0])
            if samples >= limit:
                break
        if samples >= limit:
            break
    elapsed = time.perf_counter() - started
    return {"samples": samples, "sec": elapsed, "samples_per_sec": samples / elapsed}


def decode_one_sample(path: str, plan: SamplePlan, config: AssynchConfig) -> tuple[Any, Any]:
    """What a Synchformer-style dataset does per sample: seek, decode the span, cut, mel."""
    time_base, margin = config.time, config.preprocess.audio_margin_sec
    first_frame, stop_frame = sample_frame_range(plan, time_base)
    first_sample, stop_sample = sample_audio_range(plan, time_base, margin)
    start = min(first_frame / time_base.fps, first_sample / time_base.sample_rate)
    end = max(stop_frame / time_base.fps, stop_sample / time_base.sample_rate) + 0.1
    frames, audio = [], []
    frame_at = sample_at = None
    for chunk in iter_decode(path, time=time_base, video=config.video, start_sec=start,
                             end_sec=end):
        frame_at = chunk.first_frame if frame_at is None else frame_at
        sample_at = chunk.first_sample if sample_at is None else sample_at
        frames.append(chunk.frames)
        audio.append(chunk.audio)
    all_frames = np.concatenate(frames)[first_frame - frame_at: stop_frame - frame_at]
    all_audio = np.concatenate(audio)[first_sample - sample_at: stop_sample - sample_at]
    mel = normalised_log_mel(all_audio, config.audio, time_base.sample_rate)
    return all_frames, mel


def video_decode_pass(output: Path, clips: Path, config: AssynchConfig,
                      limit: int) -> dict[str, float]:
    rows = []
    for split in ("train", "val", "test"):
        try:
            dataset = ShardDataset(str(output), split, batch_size=1,
                                   columns=["video_uid", "sample_id", "start_sec",
                                            "offset_class", "offset_sec"])
        except ValueError:
            continue
        for table in dataset.iter_tables():
            rows.extend(table.to_pylist())
    rows = rows[:limit]
    started = time.perf_counter()
    for row in rows:
        plan = SamplePlan(row["sample_id"], row["start_sec"], row["offset_class"],
                          round(row["offset_sec"], 6))
        decode_one_sample(str(clips / f"{row['video_uid']}.mp4"), plan, config)
    elapsed = time.perf_counter() - started
    return {"samples": len(rows), "sec": elapsed, "samples_per_sec": len(rows) / elapsed}


# ---------------------------------------------------------------------------------------------
# memory: one long and one short 720p video, each in a fresh decoding process


def write_720p(path: Path, seconds: float) -> Path:
    """A plain moving-gradient 1280x720 30 fps H.264 video with 48 kHz AAC noise."""
    width, height, fps, rate = 1280, 720, 30, 48000
    base = (np.add.outer(np.arange(height) // 3, np.arange(width) // 5) % 256).astype(np.uint8)
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = container.add_stream("aac", rate=rate, layout="mono")
        samples_per_frame = rate // fps
        for index in range(int(seconds * fps)):
            picture = np.roll(base, 4 * index, axis=1)
            frame = av.VideoFrame.from_ndarray(np.dstack([picture] * 3), format="rgb24")
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            for packet in video.encode(frame):
                container.mux(packet)
            noise = (0.05 * rng.standard_normal((1, samples_per_frame))).astype(np.float32)
            sound = av.AudioFrame.from_ndarray(noise, format="flt", layout="mono")
            sound.sample_rate = rate
            sound.pts = index * samples_per_frame
            sound.time_base = Fraction(1, rate)
            for packet in audio.encode(sound):
                container.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode(None):
                container.mux(packet)
    return path


def memory_pass(work: Path, minutes: list[float], frame_format: str) -> list[dict[str, Any]]:
    results = []
    for length in minutes:
        path = work / f"720p_{length:g}min.mp4"
        if not path.exists():
            started = time.perf_counter()
            write_720p(path, length * 60)
            log.info("wrote %s in %.0f s", path, time.perf_counter() - started)
        output = work / f"memory_out_{length:g}"
        shutil.rmtree(output, ignore_errors=True)
        config = load_config(ROOT / "configs" / "full.yaml", [
            f"preprocess.input={path}", f"preprocess.output={output}",
            f"preprocess.frame_format={frame_format}", "preprocess.video_timeout_sec=3000",
            "preprocess.samples_per_video=1000",  # dense: every part of the video is decoded
        ])
        task = VideoTask(path.stem, str(path), "train", str(output / "_parts" / "v.parquet"),
                         str(output / "_parts" / "v.error.json"))
        worker = VideoWorker(config, threads=1)
        try:
            result = worker(task)
        finally:
            worker.close()
        if not result.ok:
            raise RuntimeError(f"memory run failed: {result.reason}")
        duration = usable_duration_sec(probe(str(path)))
        results.append({"minutes": length, "duration_sec": duration,
                        "samples": result.samples, "peak_rss_mb": result.peak_rss_mb,
                        "wall_sec": result.wall_sec})
    return results


# ---------------------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu}, {os.cpu_count()} CPUs, load average {load:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=480.0, help="clip length (Ego4D: ~8 min)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--read-samples", type=int, default=24)
    parser.add_argument("--memory-minutes", type=float, nargs=2, default=[2.0, 10.0])
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--work", type=Path, default=Path("/tmp/assynch-bench-preprocess"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("ray", "ray.data", "assynch.data.decode"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    clips = args.work / f"clips_{args.clips}x{args.seconds:g}s"
    started = time.perf_counter()
    paths = generate_clips(clips, count=args.clips, duration_sec=args.seconds, seed=0,
                           spec=SynthSpec(width=640, height=480, fps=30.0),
                           workers=args.workers)
    log.info("clips ready in %.0f s", time.perf_counter() - started)
    video_sec = sum(usable_duration_sec(probe(str(p))) or 0.0 for p in paths)

    bare = bare_pass([str(p) for p in paths], args.workers)
    log.info("bare decode: %s", bare)
    results: dict[str, Any] = {
        "machine": machine(),
        "clips": f"{args.clips} x {args.seconds:g} s, 640x480 30 fps H.264 + AAC (synth)",
        "video_sec": round(video_sec, 1),
        "workers": args.workers,
        "b_bare_decode": {k: round(v, 2) for k, v in bare.items()},
        "b_video_sec_per_sec": round(video_sec / bare["best_sec"], 2),
        "jobs": {},
    }
    window = 21.6  # seconds of video in one full.yaml stream sample
    for name, frame_format, dense in (("sparse_jpeg", "jpeg", False),
                                      ("dense_jpeg", "jpeg", True),
                                      ("sparse_raw", "raw", False)):
        output = args.work / f"shards_{name}"
        config = bench_config(clips, output, args.workers, frame_format, dense)
        job = job_pass(config, args.workers)
        manifest = job.pop("manifest")
        results["jobs"][name] = {
            **{k: round(v, 2) for k, v in job.items()},
            "samples": manifest["samples"],
            "sampled_fraction_of_video": round(manifest["samples"] * window / video_sec, 2),
            "a_video_sec_per_sec": round(video_sec / job["job_sec"], 2),
            "a_over_b": round(bare["best_sec"] / job["job_sec"], 3),
        }
        log.info("%s: %s", name, results["jobs"][name])

    sparse_raw = args.work / "shards_sparse_raw"
    raw_config = bench_config(clips, sparse_raw, args.workers, "raw", False)
    decoder = video_decode_pass(sparse_raw, clips, raw_config, min(args.read_samples, 12))
    results["d_decode_per_sample"] = {k: round(v, 3) for k, v in decoder.items()}
    for name in ("sparse_raw", "dense_jpeg"):
        reader = shard_reader_pass(args.work / f"shards_{name}", args.read_samples)
        results[f"c_shard_reader_{name}"] = {k: round(v, 3) for k, v in reader.items()}
        results[f"c_over_d_{name}"] = round(
            reader["samples_per_sec"] / decoder["samples_per_sec"], 2
        )
    if not args.skip_memory:
        memory = memory_pass(args.work, sorted(args.memory_minutes), "jpeg")
        results["memory"] = memory
        results["memory_ratio_long_over_short"] = round(
            memory[-1]["peak_rss_mb"] / memory[0]["peak_rss_mb"], 3
        )
    print(json.dumps(results, indent=2))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
