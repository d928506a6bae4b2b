"""Step-time cost of AS-Synchformer's re-cut contrastive audio (`train.contrastive_cuts`).

One training step exactly as `assynch.train.loop.train_epoch` runs it (fresh offsets, the cuts'
draw, `to_model_inputs` on the CPU, forward through `TrainingObjective`, backward, AdamW), on
synthetic rows of the config's shard layout (no Ray, no data loading), for each number of cuts.
The variants are interleaved round by round so that the machine's load hits them alike; the
result is each variant's median step time (wall clock, and the process's CPU time, which a
loaded machine inflates less), its ratio to 0 cuts, and the FLOPs of one step's forward and
backward pass counted by `torch.utils.flop_counter.FlopCounterMode` (independent of the load).

    PYTHONPATH=. python benchmarks/contrastive_cuts.py [--config configs/quickstart.yaml]
        [--cuts 0 2 4] [--rounds 5] [--steps 2] [--set section.field=value ...]
    PYTHONPATH=. python benchmarks/contrastive_cuts.py --meta --config configs/full.yaml

`--meta` only counts FLOPs, on the meta device (nothing computed or allocated, so the full preset
counts in seconds on a CPU): one stream of `time.windows_per_sample` windows (2 unless `--set`),
the model's forward with N candidates and a backward pass from its outputs (the loss's own few
FLOPs left out), in the config's regime, checkpointing included.

Results go to docs/TRAINING.md and docs/BENCHMARKS.md by hand, with the machine and its load.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from assynch.config import AssynchConfig, load_config
from assynch.models import build_model
from assynch.shards.format import shard_layout
from assynch.train.inputs import (
    StreamBatch,
    draw_contrastive_classes,
    draw_offset_classes,
    to_model_inputs,
)
from assynch.train.loop import build_training_model
from assynch.train.objective import TrainingObjective
from assynch.train.optim import build_optimizer

REPO = Path(__file__).resolve().parents[1]


def synthetic_batch(config: AssynchConfig, seed: int) -> StreamBatch:
    layout = shard_layout(config)
    size = config.train.batch_size
    generator = torch.Generator().manual_seed(seed)
    stored = torch.randint(0, config.time.num_offset_classes, (size,), generator=generator)
    centre = config.time.num_offset_classes // 2
    return StreamBatch(
        sample_id=[f"bench{seed}-{i:03d}" for i in range(size)],
        frames=torch.randint(0, 256, (size, *layout.frames_shape), dtype=torch.uint8,
                             generator=generator),
        mel=torch.randn((size, *layout.mel_shape), generator=generator),
        offset_sec=((stored - centre) * config.time.offset_step_sec).to(torch.float64),
        offset_class=stored,
        audio_margin_sec=torch.full((size,), config.preprocess.audio_margin_sec,
                                    dtype=torch.float64),
    )


class Variant:
    def __init__(self, config: AssynchConfig, cuts: int) -> None:
        self.config, self.cuts = config, cuts
        self.model = build_training_model(config)  # same seed: same weights for every variant
        self.objective = TrainingObjective(self.model, config)
        self.optimizer = build_optimizer(self.model, config.train)
        self.times: list[float] = []
        self.cpu_times: list[float] = []
        self.input_times: list[float] = []
        self.flops = 0

    def step(self, batch: StreamBatch, epoch: int, count_flops: bool = False) -> None:
        config = self.config
        started, cpu_started = time.perf_counter(), time.process_time()
        labels = draw_offset_classes(batch, config, epoch=epoch, seed=0)
        recuts = (draw_contrastive_classes(batch, labels, self.cuts, config, epoch=epoch, seed=0)
                  if self.cuts else None)
        inputs = to_model_inputs(batch, config, offset_class=labels, contrastive_classes=recuts)
        prepared = time.perf_counter()
        counter = FlopCounterMode(display=False)
        with counter if count_flops else contextlib.nullcontext():
            losses = self.objective(inputs.video, inputs.audio, inputs.offset_class,
                                    inputs.contrastive_audio, inputs.contrastive_hypotheses)
            losses["total"].backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if count_flops:
            self.flops = counter.get_total_flops()
            return
        self.times.append(time.perf_counter() - started)
        self.cpu_times.append(time.process_time() - cpu_started)
        self.input_times.append(prepared - started)


def meta_flops(config: AssynchConfig, cuts: int) -> int:
    """Forward + backward FLOPs of one stream with `cuts` candidates, counted on the meta device."""
    time_base, crop, audio = config.time, config.video.crop, config.audio
    windows, segments = time_base.windows_per_sample, time_base.segments_per_window
    centre = time_base.num_offset_classes // 2
    with torch.device("meta"):
        model = build_model(config, load_pretrained=False)
        video = torch.zeros(1, windows, segments, time_base.segment_frames, 3, crop, crop)
        mel = (audio.n_mels, audio.segment_mel_frames)
        candidates = torch.zeros(1, windows, cuts, segments, *mel) if cuts else None
    hypotheses = torch.arange(centre + 1, centre + 1 + cuts)[None] if cuts else None
    model.train()
    with FlopCounterMode(display=False) as counter:
        output = model(video, torch.zeros(1, windows, segments, *mel, device="meta"),
                       candidates, hypotheses)
        parts = [output.logits, output.visual_embedding, output.audio_embedding]
        sum(part.float().sum() for part in parts if part is not None).backward()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "quickstart.yaml"))
    parser.add_argument("--cuts", type=int, nargs="+", default=[0, 2, 4])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per variant and round")
    parser.add_argument("--set", action="append", default=[], help="config override")
    parser.add_argument("--meta", action="store_true", help="only count FLOPs (meta device)")
    args = parser.parse_args()
    if args.meta:
        config = load_config(args.config, ["time.windows_per_sample=2", *args.set])
        counts = {n: meta_flops(config, n) for n in args.cuts}
        print(f"config {args.config} {args.set}: {config.model.kind}, 1 stream of "
              f"{config.time.windows_per_sample} windows, encoders {config.model.encoder_regime}, "
              f"checkpointing {config.model.activation_checkpointing}")
        print("| contrastive cuts | GFLOP per window (fwd + bwd) | x 0 cuts |")
        print("| --- | --- | --- |")
        for n, flops in counts.items():
            print(f"| {n} | {flops / 1e9 / config.time.windows_per_sample:,.1f} "
                  f"| {flops / counts[args.cuts[0]]:.3f} |")
        return
    config = load_config(args.config, ["train.tracking=false", *args.set])
    variants = [Variant(config, n) for n in args.cuts]
    batches = [synthetic_batch(config, seed) for seed in range(4)]
    for variant in variants:  # warm-up (allocator, first-call paths) with the FLOP count
        variant.step(batches[0], epoch=0, count_flops=True)
    for round_index in range(args.rounds):
        order = variants[round_index % len(variants):] + variants[:round_index % len(variants)]
        for variant in order:
            for step in range(args.steps):
                variant.step(batches[(round_index + step) % len(batches)], epoch=round_index)
    load = os.getloadavg()
    base = statistics.median(variants[0].times)
    cpu_base = statistics.median(variants[0].cpu_times)
    print(f"config {args.config}: {config.model.kind}, batch {config.train.batch_size}, "
          f"{config.time.windows_per_sample} windows x {config.time.segments_per_window} "
          f"segments, {config.video.crop} px, encoders {config.model.encoder_regime}; "
          f"torch threads {torch.get_num_threads()}; load average now {load[0]:.1f}")
    print("| contrastive cuts | step GFLOP (fwd + bwd) | x 0 cuts | median step s (wall) "
          "| x 0 cuts | of which inputs s | median step CPU s | x 0 cuts | steps timed |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for variant in variants:
        wall, cpu = statistics.median(variant.times), statistics.median(variant.cpu_times)
        flops = variant.flops / variants[0].flops
        inputs = statistics.median(variant.input_times)
        print(f"| {variant.cuts} | {variant.flops / 1e9:.1f} | {flops:.2f} | {wall:.3f} "
              f"| {wall / base:.2f} | {inputs:.3f} "
              f"| {cpu:.3f} | {cpu / cpu_base:.2f} | {len(variant.times)} |")


if __name__ == "__main__":
    main()
