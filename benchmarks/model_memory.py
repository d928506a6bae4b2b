"""Training memory of AS-Synchformer per encoder regime, with and without activation
checkpointing, in fp32 and under bf16 autocast; and the largest batch of streams that fits a GPU.

Measured, not estimated from formulas: the model runs a training forward pass (train mode)
under torch's FakeTensorMode (real shapes and dtypes, no data, no compute, so the full-size model
runs on a CPU), and every tensor autograd keeps for the backward pass is counted once per storage
(`saved_tensors_hooks`), parameters excluded. With checkpointing the inputs a checkpointed block
keeps for its recomputation are counted too (they are held by the checkpoint, not by autograd's
saved tensors). bf16 uses CPU autocast, whose cast lists are close to (not identical with)
CUDA's.

The largest batch: B streams fit when
    static + transient + B * saved_per_stream <= budget
with static = 4 bytes per parameter (fp32 weights) + 12 bytes per trainable parameter (fp32
gradient, AdamW's two moments), transient = the recomputation of one checkpointed block over one
chunk of windows (its saved activations, twice: activations and their gradients; 0 without
checkpointing), budget = --gpu-gb GB (decimal) minus --reserve-gib GiB (CUDA context, allocator
fragmentation).

    python benchmarks/model_memory.py                      # full preset, 8-window streams
    python benchmarks/model_memory.py --config configs/tiny.yaml --gpu-gb 80
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.autograd.graph import saved_tensors_hooks

from assynch.config import AssynchConfig, load_config
from assynch.models import apply_encoder_regime, build_model, layers
from assynch.models.as_synchformer import ASSynchformer

GIB = 1024**3


@dataclass
class Row:
    regime: str
    checkpointing: bool
    precision: str
    encoder_saved_per_segment_mib: float
    saved_per_stream_gib: float
    static_gib: float
    transient_gib: float
    parameters_m: float
    trainable_m: float
    streams_that_fit: int


@contextmanager
def counting_saved(mode: FakeTensorMode, model: torch.nn.Module) -> Iterator[dict[int, int]]:
    """Storage id -> bytes of everything kept for the backward pass inside the block."""
    parameters = {mode.from_tensor(p).untyped_storage()._cdata for p in model.parameters()}
    seen: dict[int, int] = {}

    def record(tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        if storage._cdata not in parameters:
            seen[storage._cdata] = storage.nbytes()

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        record(tensor)
        return tensor

    real_checkpoint = layers.checkpoint

    def checkpoint(function: Callable, *args: object, **kwargs: object) -> object:
        for arg in args:
            if isinstance(arg, torch.Tensor):
                record(arg)  # the block input the checkpoint keeps for its recomputation
        return real_checkpoint(function, *args, **kwargs)

    layers.checkpoint = checkpoint  # type: ignore[assignment]
    try:
        with saved_tensors_hooks(pack, lambda tensor: tensor):
            yield seen
    finally:
        layers.checkpoint = real_checkpoint  # type: ignore[assignment]


def configure(
    model: ASSynchformer, config: AssynchConfig, regime: str, checkpointing: bool, chunk: int
) -> None:
    """Set what `model.encoder_regime`, `model.activation_checkpointing` and
    `model.encode_chunk_windows` would set at build time (one model serves every row)."""
    apply_encoder_regime(model, regime, config.model.trainable_encoder_blocks)
    model.autocast_bf16 = False  # each row sets its precision itself (the autocast below)
    model.snapshot.visual_encoder.checkpointing = checkpointing
    model.snapshot.audio_encoder.checkpointing = checkpointing
    model.snapshot.encode_chunk_windows = chunk if checkpointing else 0


def measure(
    model: ASSynchformer, config: AssynchConfig, regime: str, checkpointing: bool, bf16: bool,
    windows: int, candidates: int, chunk: int, budget_bytes: float,
) -> Row:
    configure(model, config, regime, checkpointing, chunk)
    model.train()
    time_base, crop, audio = config.time, config.video.crop, config.audio
    segments = time_base.segments_per_window
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    precision = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    with mode:
        video = torch.zeros(1, windows, segments, time_base.segment_frames, 3, crop, crop)
        sound = torch.zeros(1, windows, segments, audio.n_mels, audio.segment_mel_frames)
        extra = torch.zeros(1, windows, candidates, segments, audio.n_mels,
                            audio.segment_mel_frames)
        hypotheses = torch.arange(candidates).view(1, candidates)

        one_video, one_sound = torch.zeros_like(video[:, 0]), torch.zeros_like(sound[:, 0])
        with counting_saved(mode, model) as encoder_saved, precision:
            model.snapshot.dense_tokens(one_video, one_sound)
        with counting_saved(mode, model) as stream_saved, precision:
            # The losses add a few (B*W)^2-sized similarity matrices: negligible, and their
            # label checks need data, so they are left out here.
            model(video, sound, extra if candidates else None,
                  hypotheses if candidates else None)

        transient = 0
        visual = model.snapshot.visual_encoder
        if checkpointing and any(p.requires_grad for p in visual.blocks[-1].parameters()):
            tokens = 1 + visual.steps * visual.patches
            x = torch.zeros(chunk * segments, tokens, visual.norm.normalized_shape[0])
            with counting_saved(mode, model) as block_saved, precision:
                visual.blocks[-1](x, frames=visual.steps)
            transient = 2 * sum(block_saved.values())

    parameters = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    static = 4 * parameters + 12 * trainable
    per_stream = sum(stream_saved.values())
    fits = max(0, math.floor((budget_bytes - static - transient) / per_stream))
    return Row(
        regime=regime,
        checkpointing=checkpointing,
        precision="bf16 autocast" if bf16 else "fp32",
        encoder_saved_per_segment_mib=sum(encoder_saved.values()) / segments / 2**20,
        saved_per_stream_gib=per_stream / GIB,
        static_gib=static / GIB,
        transient_gib=transient / GIB,
        parameters_m=parameters / 1e6,
        trainable_m=trainable / 1e6,
        streams_that_fit=fits,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/full.yaml")
    parser.add_argument("--windows", type=int, default=8, help="windows per stream")
    parser.add_argument("--candidates", type=int, default=4,
                        help="contrastive audio candidates per window (training)")
    parser.add_argument("--chunk", type=int, default=1,
                        help="windows per encoder call with checkpointing")
    parser.add_argument("--gpu-gb", type=float, default=80.0)
    parser.add_argument("--reserve-gib", type=float, default=2.0)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    base = load_config(Path(args.config))
    config = base.model_copy(
        update={"model": base.model.model_copy(update={"kind": "as_synchformer"})}
    )
    torch.manual_seed(0)
    model = build_model(config, load_pretrained=False)
    assert isinstance(model, ASSynchformer)
    budget = args.gpu_gb * 1e9 - args.reserve_gib * GIB
    rows = []
    started = time.monotonic()
    for regime in ("full", "partial", "frozen"):
        for checkpointing in (False, True):
            if regime == "frozen" and checkpointing:
                continue  # nothing of a frozen encoder is saved: checkpointing changes nothing
            for bf16 in (False, True):
                rows.append(measure(model, config, regime, checkpointing, bf16, args.windows,
                                    args.candidates, args.chunk, budget))
    print(f"{args.config}: {args.windows}-window streams, {args.candidates} contrastive audio "
          f"candidates per window, chunk {args.chunk} window(s), budget {args.gpu_gb:g} GB - "
          f"{args.reserve_gib:g} GiB; {time.monotonic() - started:.0f} s\n")
    print("| regime | checkpointing | precision | encoders: saved / segment | saved / stream | "
          "static (weights, grads, AdamW) | recompute peak | streams that fit |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row.regime} | {'yes' if row.checkpointing else 'no'} | {row.precision} | "
              f"{row.encoder_saved_per_segment_mib:,.1f} MiB | {row.saved_per_stream_gib:,.2f} GiB "
              f"| {row.static_gib:.2f} GiB ({row.trainable_m:.0f} M of {row.parameters_m:.0f} M "
              f"train) | {row.transient_gib:.2f} GiB | {row.streams_that_fit} |")
    if args.json:
        args.json.write_text(json.dumps([asdict(row) for row in rows], indent=2))


if __name__ == "__main__":
    main()
