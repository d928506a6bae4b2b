"""Peak memory and real-time factor of `assynch detect` on long generated videos.

Writes a synthetic flash/beep video of each length (128x96 H.264 at 25 fps + 16 kHz mono AAC,
streamed to disk with PyAV), then runs `detect_video` on it in a fresh child process per length
with the tiny model (random weights: memory and speed do not depend on them) and reports the
child's peak RSS (VmHWM) and the real-time factor (video seconds / wall seconds).

    .venv/bin/python benchmarks/detect_memory.py --minutes 5 120 --out data/bench_detect
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_long_video(path: Path, seconds: float, seed: int = 0) -> Path:
    """Frame by frame to disk (memory stays flat): a moving gradient, a flash and a beep
    every 1.7 s."""
    import av
    import numpy as np

    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    fps, rate, width, height = 25, 16000, 128, 96
    temporary = path.with_suffix(".tmp.mp4")
    with av.open(str(temporary), "w") as container:
        video = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = container.add_stream("aac", rate=rate, layout="mono")
        xs = np.arange(width)[None, :]
        ys = np.arange(height)[:, None]
        samples_per_frame = rate // fps
        tone = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(1920) / rate)).astype(np.float32)
        pending = np.zeros(0, np.float32)
        sent = 0
        for index in range(int(seconds * fps)):
            flash = (index % 42) == 5
            if flash:
                picture = np.full((height, width, 3), 255, np.uint8)
            else:
                base = ((xs + 3 * index) % width) * 48 // width + ys * 48 // height
                picture = np.repeat(base[:, :, None], 3, axis=2).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = index
            for packet in video.encode(frame):
                container.mux(packet)
            chunk = rng.normal(0, 0.01, samples_per_frame).astype(np.float32)
            if flash:
                chunk = chunk.copy()
                pending = tone.copy()
            if pending.size:
                take = min(pending.size, samples_per_frame)
                chunk[:take] += pending[:take]
                pending = pending[take:]
            audio_frame = av.AudioFrame.from_ndarray(chunk[None, :], format="flt",
                                                     layout="mono")
            audio_frame.sample_rate = rate
            audio_frame.pts = sent
            sent += samples_per_frame
            for packet in audio.encode(audio_frame):
                container.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode(None):
                container.mux(packet)
    os.replace(temporary, path)
    return path


def child(video: str, checkpoint: str) -> None:
    """Run detection in this process and print what it cost as one JSON line."""
    import torch

    from assynch.detect.loading import LoadedModel
    from assynch.detect.run import detect_video
    from assynch.models import load_model_checkpoint

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    model, config = load_model_checkpoint(checkpoint)
    loaded = LoadedModel(model, config, checkpoint)
    started = time.perf_counter()
    report = detect_video(video, loaded)
    wall = time.perf_counter() - started
    status = Path("/proc/self/status").read_text()
    peak_kib = int(next(line for line in status.splitlines() if line.startswith("VmHWM"))
                   .split()[1])
    print(json.dumps({
        "video": video, "duration_sec": report.duration_sec, "windows": report.results.count,
        "wall_sec": round(wall, 1), "realtime_factor": round(report.duration_sec / wall, 2),
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "peak_window_buffer_mib": round(report.results.summary.peak_buffer_bytes / 2**20, 2),
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, nargs="+", default=[5.0, 120.0])
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "bench_detect")
    parser.add_argument("--child", nargs=2, metavar=("VIDEO", "CHECKPOINT"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    import torch

    from assynch.config import load_config
    from assynch.models import build_model, save_model_checkpoint

    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint = args.out / "tiny_random.pt"
    torch.manual_seed(0)
    config = load_config(ROOT / "configs" / "tiny.yaml")
    save_model_checkpoint(build_model(config), config, checkpoint)
    results = []
    for minutes in args.minutes:
        started = time.perf_counter()
        video = write_long_video(args.out / f"long_{minutes:g}min.mp4", minutes * 60)
        print(f"# wrote {video} in {time.perf_counter() - started:.0f} s", flush=True)
        load_before = os.getloadavg()[0]
        output = subprocess.run(
            [sys.executable, __file__, "--child", str(video), str(checkpoint)],
            check=True, capture_output=True, text=True, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        ).stdout.strip().splitlines()[-1]
        result = json.loads(output)
        result["load_average_before_after"] = [round(load_before, 1),
                                               round(os.getloadavg()[0], 1)]
        results.append(result)
        print(json.dumps(result), flush=True)
    if len(results) >= 2:
        ratio = results[-1]["peak_rss_mib"] / results[0]["peak_rss_mib"]
        print(f"peak RSS {results[-1]['video']} / {results[0]['video']} = {ratio:.3f}")


if __name__ == "__main__":
    main()
