"""Parameter counts and FLOPs per streaming step (one window), for docs/MODELS.md.

FLOPs are counted with `torch.utils.flop_counter.FlopCounterMode` on the meta device (nothing is
computed or allocated), batch 1, for `model.step` on one window: matrix multiplies,
convolutions and attention, as torch counts them (a multiply-add is 2 FLOPs); element-wise
operations, norms and softmax are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from assynch.config import AssynchConfig
from assynch.models.build import build_model
from assynch.models.streaming import Window


@dataclass(frozen=True)
class ModelCost:
    kind: str
    parameters: dict[str, int]  # per top-level part, plus "total"
    flops_per_window: int


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Parameters per part: visual_encoder, audio_encoder, projections (with the stage-1
    temperature and visual onset probe), sync, streaming (everything a streaming model adds),
    total."""
    counts = {"visual_encoder": 0, "audio_encoder": 0, "projections": 0, "sync": 0, "streaming": 0}
    for name, parameter in model.named_parameters():
        part = name.removeprefix("snapshot.").split(".")[0]
        if part in ("visual_encoder", "audio_encoder", "sync"):
            counts[part] += parameter.numel()
        elif part in ("visual_proj", "audio_proj", "segment_logit_scale", "visual_onset_head"):
            counts["projections"] += parameter.numel()
        else:
            counts["streaming"] += parameter.numel()
    counts["total"] = sum(counts.values())
    return counts


def model_cost(config: AssynchConfig) -> ModelCost:
    """Parameters and FLOPs of one `step` (batch 1) of the model `config` describes."""
    with torch.device("meta"):
        model = build_model(config, load_pretrained=False)
        time, crop, audio = config.time, config.video.crop, config.audio
        segments = time.segments_per_window
        window = Window(
            torch.zeros(1, segments, time.segment_frames, 3, crop, crop),
            torch.zeros(1, segments, audio.n_mels, audio.segment_mel_frames),
        )
        state = model.init_state(1)
    # Train mode keeps torch off its fused inference kernels, whose FLOPs it does not count.
    model.train()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.step(window, state)
    return ModelCost(config.model.kind, parameter_counts(model), counter.get_total_flops())
