"""Throughput of `iter_decode` against a bare PyAV decoding pass over the same file.

    .venv/bin/python benchmarks/decode_speed.py [--seconds 30] [--repeats 3] [--config FILE]

Writes a 640x480 30 fps H.264 + AAC clip (moving gradient + noise, 48 kHz stereo), then times
  bare:        demux + decode every video frame and audio packet, no conversion (threads AUTO)
  iter_decode: the pipeline's pass (25 fps, short side 256, 224 crop, 16 kHz mono by default)
and prints the best of `--repeats` runs of each and the ratio of throughputs (iter / bare).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from media_files import ClipSpec, write_clip  # noqa: E402

from assynch.config import load_config  # noqa: E402
from assynch.media.decode import iter_decode  # noqa: E402


def bare_pass(path: str) -> int:
    frames = 0
    with av.open(path) as container:
        container.streams.video[0].thread_type = "AUTO"
        for packet in container.demux():
            for _frame in packet.decode():
                frames += 1
    return frames


def pipeline_pass(path: str, config_path: str | None) -> int:
    config = load_config(config_path)
    frames = 0
    for chunk in iter_decode(path, time=config.time, video=config.video):
        frames += chunk.frames.shape[0]
    return frames


def timed(function: Callable[..., object], *args: object) -> float:
    started = time.perf_counter()
    function(*args)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--config", default=None, help="assynch config (default: built-in)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "bench.mp4")
        # GOP and B-frames as in typical camera footage: x264 'veryfast' defaults (high profile).
        spec = ClipSpec(
            duration_sec=args.seconds,
            fps=Fraction(30),
            width=640,
            height=480,
            sample_rate=48000,
            encoder_options={"preset": "veryfast"},
        )
        started = time.perf_counter()
        write_clip(path, spec)
        print(f"wrote {args.seconds:g} s 640x480 30 fps H.264+AAC in "
              f"{time.perf_counter() - started:.1f} s")
        bare, piped = [], []
        for _ in range(args.repeats):
            bare.append(timed(bare_pass, path))
            piped.append(timed(pipeline_pass, path, args.config))
        bare_best, piped_best = min(bare), min(piped)
        paired = sorted(b / p for b, p in zip(bare, piped, strict=True))
        print(f"bare PyAV decode   : {bare_best:.3f} s ({args.seconds / bare_best:.1f}x realtime)")
        print(f"iter_decode        : {piped_best:.3f} s "
              f"({args.seconds / piped_best:.1f}x realtime)")
        print(f"throughput ratio iter_decode / bare = {bare_best / piped_best:.2f} (best times); "
              f"median of {len(paired)} back-to-back pairs = {paired[len(paired) // 2]:.2f}")


if __name__ == "__main__":
    main()
