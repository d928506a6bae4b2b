"""Per-window streaming latency after 1, 100 and 1000 windows, and the real-time factor.

    .venv/bin/python benchmarks/streaming_latency.py --config configs/tiny.yaml

For each model kind, one stream is stepped window by window (batch 1) and the state is kept as it
was before window 1, 100 and 1000. Then `step` is timed from each of those states of every kind
in turn, round-robin, `--repeats` times, so that load from other processes hits all positions
and kinds alike; the median is reported. The ratio 1000/1 shows whether a step gets dearer as
the stream grows (the state is bounded, so it must stay near 1). The real-time factor is the
stream hop (2.4 s of new video per window) divided by the median step time: how many seconds of
stream one second of compute handles. Results go to stdout as a Markdown table
(docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import time
from collections.abc import Callable

import torch

from assynch.config import AssynchConfig, load_config
from assynch.models import MODEL_KINDS, StreamingModel, StreamState, Window, build_model

log = logging.getLogger("streaming_latency")


def random_window(config: AssynchConfig, device: torch.device, dtype: torch.dtype) -> Window:
    time_base, crop, audio = config.time, config.video.crop, config.audio
    segments = time_base.segments_per_window
    generator = torch.Generator().manual_seed(0)
    video = torch.randn(1, segments, time_base.segment_frames, 3, crop, crop, generator=generator)
    mel = torch.randn(1, segments, audio.n_mels, audio.segment_mel_frames, generator=generator)
    return Window(video.to(device, dtype), mel.to(device, dtype))


def states_before(
    model: StreamingModel, window: Window, positions: list[int]
) -> dict[int, StreamState]:
    """The state before window p (p - 1 windows seen) for each p, from one stepped stream."""
    states = {}
    state = model.init_state(1)
    for seen in range(max(positions)):
        if seen + 1 in positions:
            states[seen + 1] = state
        _, state = model.step(window, state)
    return states


def time_steps(
    runs: dict[str, tuple[StreamingModel, dict[int, StreamState]]],
    window: Window,
    repeats: int,
    synchronize: Callable[[], None],
) -> dict[str, dict[int, list[float]]]:
    """Round-robin over every (kind, position), so that outside load hits all of them alike."""
    seconds: dict[str, dict[int, list[float]]] = {
        kind: {position: [] for position in states} for kind, (_, states) in runs.items()
    }
    for round_index in range(repeats + 2):
        for kind, (model, states) in runs.items():
            for position, state in states.items():
                synchronize()
                started = time.perf_counter()
                model.step(window, state)
                synchronize()
                if round_index >= 2:  # two warm-up rounds
                    seconds[kind][position].append(time.perf_counter() - started)
    return seconds


def benchmark(
    config: AssynchConfig,
    kinds: list[str],
    positions: list[int],
    repeats: int,
    device: torch.device,
    dtype: torch.dtype,
) -> list[dict[str, float | str]]:
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    window = random_window(config, device, dtype)
    runs = {}
    with torch.inference_mode():
        for kind in kinds:
            torch.manual_seed(0)
            model = build_model(config.model_copy(
                update={"model": config.model.model_copy(update={"kind": kind})}
            ), load_pretrained=False).to(device, dtype).eval()
            started = time.perf_counter()
            runs[kind] = (model, states_before(model, window, positions))
            log.info("%s: stepped %d windows in %.1f s", kind, max(positions) - 1,
                     time.perf_counter() - started)
        seconds = time_steps(runs, window, repeats, synchronize)
    rows = []
    for kind in kinds:
        medians = {p: statistics.median(values) for p, values in seconds[kind].items()}
        first, last = medians[min(positions)], medians[max(positions)]
        row: dict[str, float | str] = {"kind": kind}
        row.update({f"ms@{p}": 1000 * medians[p] for p in positions})
        row["ratio"] = last / first
        row["rtf"] = config.time.stream_hop_sec / last
        rows.append(row)
        log.info("%s: %s", kind, row)
    return rows


def markdown(rows: list[dict[str, float | str]], positions: list[int]) -> str:
    header = ["model", *(f"step for window {p} (ms)" for p in positions),
              f"ratio {max(positions)}/{min(positions)}", "real-time factor"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in rows:
        cells = [str(row["kind"]), *(f"{row[f'ms@{p}']:.1f}" for p in positions),
                 f"{row['ratio']:.3f}", f"{row['rtf']:.1f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--set", action="append", default=[], help="config override a.b=c")
    parser.add_argument("--kinds", nargs="+", default=list(MODEL_KINDS), choices=list(MODEL_KINDS))
    parser.add_argument("--positions", nargs="+", type=int, default=[1, 100, 1000])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    config = load_config(args.config, args.set)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    positions = sorted(set(args.positions))
    rows = benchmark(config, args.kinds, positions, args.repeats, device, dtype)
    machine = platform.processor() or platform.machine()
    print(f"config {args.config} {' '.join(args.set)}; device {device} ({machine}, "
          f"{torch.get_num_threads()} threads); {args.dtype}; batch 1; median of {args.repeats}")
    print(markdown(rows, positions))


if __name__ == "__main__":
    main()
