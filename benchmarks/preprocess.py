"""Preprocessing performance, each number against a baseline measured in the same run.

    .venv/bin/python benchmarks/preprocess.py [--clips 8] [--seconds 480] [--camera-clips 8]
        [--camera-seconds 120] [--workers 2] [--read-samples 24] [--memory-minutes 2 10]
        [--skip-memory] [--work DIR] [--frame-storage-only]

Two clip sets, both 640x480 30 fps: synthetic egocentric clips (assynch.synth.clips, 8-minute
like Ego4D's), whose simple scenes decode at several thousand frames/s per core, and
"camera-like" clips (noise + pan, x264 crf 18, ~4.4 Mbit/s) that decode at ~600 frames/s, about
what camera footage costs. On each set:

(a)/(b)  the Ray Data job's throughput (seconds of input video per wall second) against one
         bare PyAV pass over the same files that only decodes every video frame and audio
         packet, on the same cores: `--workers` processes, one file each at a time, one decoder
         thread each (one process with FFmpeg's automatic threads is reported too; it was
         slower in every run). The machine is shared and its load drifts, so b is measured
         right before and right after each job and a/b uses their mean. Jobs use
         configs/full.yaml (25 fps, 224x224 crop, 8 windows of 4.64 s): `sparse_*` as it is
         (4 samples per video), which decodes only the spans its samples need; `dense_*`
         packs samples as tightly as the plan allows, so the whole video is decoded
         (synthetic set: sparse JPEG and raw frames; camera-like set: dense JPEG, as 2-minute
         clips are covered by their 4 samples anyway). Job time excludes `ray.init` (reported
         beside it) and includes both stages (decode, compaction).
(c)/(d)  samples per second a training worker receives from the shards (Parquet -> torch
         batches with ShardDataset, one process), against Synchformer's way: decode each
         sample's span from its video at training time (seek, decode, resize, log-mel).
frames   (`--frame-storage-only`) Parquet write and read time of 2 samples of 540x224x224x3
         frames, `raw` (one binary per frame) against `tensor` (arrow.fixed_shape_tensor).
memory   peak RSS (VmHWM) of the per-video decoding process for a 10-minute and a 2-minute
         1280x720 30 fps video (a plain PyAV writer makes them), each in a fresh process,
         full.yaml with dense samples (23 and 4 samples: the whole video is decoded).
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
import pyarrow as pa
import pyarrow.parquet as pq

from assynch.config import AssynchConfig, load_config
from assynch.media.decode import iter_decode, probe
from assynch.media.features import normalised_log_mel
from assynch.preprocess.plan import VideoTask
from assynch.preprocess.video import usable_duration_sec
from assynch.preprocess.worker import VideoWorker
from assynch.samples.plan import (
    SamplePlan,
    sample_audio_range,
    sample_frame_range,
)
from assynch.shards.dataset import ShardDataset
from assynch.synth.clips import SynthSpec, generate_clips

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


def write_camera_like(path: Path, seconds: float, seed: int) -> Path:
    """640x480 30 fps H.264 (x264 veryfast, crf 18) with sensor-like noise and a panning
    gradient, 48 kHz stereo AAC noise: ~4.4 Mbit/s, decoding at roughly camera-footage cost
    (~600 frames/s per core here, where the synthetic scenes decode at several thousand)."""
    width, height, fps, rate = 640, 480, 30, 48000
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    base = ((xs * 0.3 + ys * 0.2) % 256).astype(np.float32)
    noise = rng.normal(0, 12, (64, height, width)).astype(np.float32)
    temporary = path.with_name(f".{path.name}.tmp")
    with av.open(str(temporary), "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=fps,
                                     options={"preset": "veryfast", "crf": "18"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = container.add_stream("aac", rate=rate, layout="stereo")
        samples_per_frame = rate // fps
        for index in range(int(seconds * fps)):
            picture = np.clip(np.roll(base, 3 * index, axis=1) + noise[(index * 7) % 64], 0, 255)
            picture = picture.astype(np.uint8)
            rgb = np.dstack([picture, np.full_like(picture, 64), 255 - picture])
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            for packet in video.encode(frame):
                container.mux(packet)
            sound = (0.05 * rng.standard_normal((2, samples_per_frame))).astype(np.float32)
            audio_frame = av.AudioFrame.from_ndarray(sound, format="fltp", layout="stereo")
            audio_frame.sample_rate = rate
            audio_frame.pts, audio_frame.time_base = index * samples_per_frame, Fraction(1, rate)
            for packet in audio.encode(audio_frame):
                container.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode(None):
                container.mux(packet)
    temporary.rename(path)
    return path


def _write_camera_job(job: tuple[Path, float, int]) -> Path:
    path, seconds, seed = job
    return path if path.exists() else write_camera_like(path, seconds, seed)


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


def frame_storage_pass(work: Path) -> dict[str, dict[str, float]]:
    """Parquet write/read time of 2 samples of 540x224x224x3 frames per frame format."""
    from assynch.shards.format import ShardLayout, frames_array
    from assynch.shards.reader import frames_to_numpy

    rng = np.random.default_rng(0)
    ramp = np.add.outer(np.arange(224), np.arange(224)).astype(np.uint8)
    frames = np.stack([np.dstack([np.roll(ramp, i, axis=1)] * 3) for i in range(540)])
    samples = [frames, np.clip(frames + rng.integers(0, 4, frames.shape), 0, 255)
               .astype(np.uint8)]
    results = {}
    for frame_format in ("raw", "tensor"):
        layout = ShardLayout((540, 224, 224, 3), (1, 1), 1, frame_format=frame_format)
        table = pa.table({"frames": frames_array(samples, layout)})
        path = work / f"frames_{frame_format}.parquet"
        started = time.perf_counter()
        pq.write_table(table, path, compression="lz4", use_dictionary=False,
                       write_statistics=False)
        written = time.perf_counter() - started
        started = time.perf_counter()
        back = frames_to_numpy(pq.read_table(path).column("frames"), (224, 224, 3))
        read = time.perf_counter() - started
        assert np.array_equal(back[1], samples[1])
        results[frame_format] = {"write_sec": round(written, 3), "read_sec": round(read, 3),
                                 "file_mb": round(path.stat().st_size / 1e6, 1)}
    return results


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


def clip_set(name: str, paths: list[Path], folder: Path, workers: int,
             jobs: list[tuple[str, str, bool]], work: Path, read_samples: int,
             reader_job: str) -> dict[str, Any]:
    """b, the listed jobs (a), and c/d on one set of clips.

    The machine is shared, so its load drifts: each job is bracketed by a bare pass before and
    after it, and a/b uses their mean; c is measured before and after d, and averaged.
    """
    video_sec = sum(usable_duration_sec(probe(str(p))) or 0.0 for p in paths)
    files = [str(p) for p in paths]
    bare = bare_pass(files, workers)
    log.info("%s bare decode: %s", name, bare)
    result: dict[str, Any] = {
        "video_sec": round(video_sec, 1),
        "b_bare_decode_first": {k: round(v, 2) for k, v in bare.items()},
        "jobs": {},
    }
    before = bare["processes_sec"]
    window = 21.6  # seconds of video in one full.yaml stream sample
    for job_name, frame_format, dense in jobs:
        output = work / f"shards_{name}_{job_name}"
        config = bench_config(folder, output, workers, frame_format, dense)
        job = job_pass(config, workers)
        manifest = job.pop("manifest")
        after = timed_bare(files, workers)
        limit = (before + after) / 2
        result["jobs"][job_name] = {
            **{k: round(v, 2) for k, v in job.items()},
            "b_sec_before_after": [round(before, 2), round(after, 2)],
            "samples": manifest["samples"],
            "sampled_fraction_of_video": round(manifest["samples"] * window / video_sec, 2),
            "a_video_sec_per_sec": round(video_sec / job["job_sec"], 2),
            "b_video_sec_per_sec": round(video_sec / limit, 2),
            "a_over_b": round(limit / job["job_sec"], 3),
        }
        log.info("%s %s: %s", name, job_name, result["jobs"][job_name])
        before = after
    shards = work / f"shards_{name}_{reader_job}"
    frame_format, dense = next((f, d) for n, f, d in jobs if n == reader_job)
    config = bench_config(folder, shards, workers, frame_format, dense)
    first = shard_reader_pass(shards, read_samples)
    decoder = video_decode_pass(shards, folder, config, min(read_samples, 12))
    second = shard_reader_pass(shards, read_samples)
    reader = {
        "samples": first["samples"] + second["samples"],
        "sec": first["sec"] + second["sec"],
        "samples_per_sec": (first["samples"] + second["samples"]) / (first["sec"] + second["sec"]),
    }
    result[f"c_shard_reader_{reader_job}"] = {k: round(v, 3) for k, v in reader.items()}
    result["d_decode_per_sample"] = {k: round(v, 3) for k, v in decoder.items()}
    result["c_over_d"] = round(reader["samples_per_sec"] / decoder["samples_per_sec"], 2)
    return result


def timed_bare(files: list[str], workers: int) -> float:
    started = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(bare_decode, files, [1] * len(files)))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=480.0, help="clip length (Ego4D: ~8 min)")
    parser.add_argument("--camera-clips", type=int, default=8)
    parser.add_argument("--camera-seconds", type=float, default=120.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--read-samples", type=int, default=24)
    parser.add_argument("--memory-minutes", type=float, nargs=2, default=[2.0, 10.0])
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--work", type=Path, default=Path("/tmp/assynch-bench-preprocess"))
    parser.add_argument("--frame-storage-only", action="store_true",
                        help="only time Parquet frame storage: raw vs tensor")
    args = parser.parse_args()
    if args.frame_storage_only:
        args.work.mkdir(parents=True, exist_ok=True)
        print(json.dumps({"machine": machine(), **frame_storage_pass(args.work)}, indent=2))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("ray", "ray.data", "assynch.media.decode"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    started = time.perf_counter()
    synth = args.work / f"clips_{args.clips}x{args.seconds:g}s"
    synth_paths = generate_clips(synth, count=args.clips, duration_sec=args.seconds, seed=0,
                                 spec=SynthSpec(width=640, height=480, fps=30.0),
                                 workers=args.workers)
    camera = args.work / f"camera_{args.camera_clips}x{args.camera_seconds:g}s"
    camera.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(args.workers) as pool:
        camera_paths = list(pool.map(_write_camera_job, [
            (camera / f"camera_{i:02d}.mp4", args.camera_seconds, i)
            for i in range(args.camera_clips)
        ]))
    log.info("clips ready in %.0f s", time.perf_counter() - started)

    results: dict[str, Any] = {
        "machine": machine(),
        "workers": args.workers,
        "synth": {
            "clips": f"{args.clips} x {args.seconds:g} s, 640x480 30 fps H.264 + AAC "
                     "(assynch.synth.clips)",
            **clip_set("synth", synth_paths, synth, args.workers,
                       [("sparse_jpeg", "jpeg", False), ("sparse_raw", "raw", False)],
                       args.work, args.read_samples, "sparse_raw"),
        },
        "camera_like": {
            "clips": f"{args.camera_clips} x {args.camera_seconds:g} s, 640x480 30 fps "
                     "H.264 crf 18 + AAC, sensor-like noise",
            **clip_set("camera", camera_paths, camera, args.workers,
                       [("dense_jpeg", "jpeg", True)],
                       args.work, args.read_samples, "dense_jpeg"),
        },
    }
    if not args.skip_memory:
        memory = memory_pass(args.work, sorted(args.memory_minutes), "jpeg")
        results["memory"] = memory
        results["memory_ratio_long_over_short"] = round(
            memory[-1]["peak_rss_mb"] / memory[0]["peak_rss_mb"], 3
        )
    results["machine_after"] = machine()
    print(json.dumps(results, indent=2))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
