"""AdamW with parameter groups, and the warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from assynch.config import TrainConfig
from assynch.train.objective import is_encoder_parameter


def _no_weight_decay(name: str, parameter: nn.Parameter) -> bool:
    """Norms, biases, learned tokens and position tables are not decayed."""
    leaf = name.rsplit(".", 1)[-1]
    return parameter.ndim < 2 or "token" in leaf or leaf.endswith(("pos_embed", "temp_embed"))


def parameter_groups(model: nn.Module, train: TrainConfig) -> list[dict]:
    """Four groups: {encoders, the rest} x {decayed, not decayed}; frozen parameters left out."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        key = (is_encoder_parameter(name), _no_weight_decay(name, parameter))
        groups.setdefault(key, []).append(parameter)
    result = []
    for (encoder, no_decay), parameters in sorted(groups.items()):
        result.append({
            "params": parameters,
            "name": f"{'encoders' if encoder else 'heads'}{'_no_decay' if no_decay else ''}",
            "lr": train.learning_rate * (train.encoder_lr_scale if encoder else 1.0),
            "weight_decay": 0.0 if no_decay else train.weight_decay,
        })
    return result


def build_optimizer(model: nn.Module, train: TrainConfig) -> torch.optim.AdamW:
    groups = parameter_groups(model, train)
    if not groups:
        raise ValueError("no parameter trains: check model.encoder_regime and the objective")
    return torch.optim.AdamW(groups, lr=train.learning_rate, betas=(0.9, 0.999))


def lr_factor(step: int, *, total_steps: int, train: TrainConfig) -> float:
    """Linear warm-up to 1, then cosine down to min_learning_rate / learning_rate."""
    if step < train.warmup_steps:
        return (step + 1) / train.warmup_steps
    floor = train.min_learning_rate / train.learning_rate
    decay_steps = max(1, total_steps - train.warmup_steps)
    progress = min(1.0, (step - train.warmup_steps) / decay_steps)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, *, total_steps: int, train: TrainConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps=total_steps, train=train)
    )
