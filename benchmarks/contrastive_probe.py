"""Probe: does AS-Synchformer's contrastive path learn on frozen, cached encoder features?

    PYTHONPATH=. .venv/bin/python benchmarks/contrastive_probe.py FEATURES.pt [--steps 400]

FEATURES.pt holds `(train, test)`, two `assynch.train.frozen_features.FeatureSet`s saved with
`torch.save` (`encode_split` of a shard set made with `preprocess.audio_margin_sec=4.0`). Only
the contrastive term is trained (CE and EMD weights 0), 8 streams x 4 cached audio cuts per
step; every 50 steps the term is printed beside its chance level (`contrastive_chance_level`).
Results: docs/BENCHMARKS.md, "Quality benchmark".
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from assynch.config import load_config
from assynch.models import build_model, total_loss
from assynch.models.contrastive import contrastive_offset_classes
from assynch.models.losses import contrastive_chance_level
from assynch.models.regimes import apply_encoder_regime

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("features")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--cuts", type=int, default=4)
    args = parser.parse_args()
    train, _ = torch.load(args.features, weights_only=False)
    config = load_config(REPO / "configs" / "quickstart.yaml", [
        "model.kind=as_synchformer", "model.encoder_regime=frozen", "model.history_windows=4",
        "model.losses.contrastive=1.0", "model.losses.cross_entropy=0.0", "model.losses.emd=0.0",
    ])
    torch.manual_seed(0)
    model = build_model(config)
    apply_encoder_regime(model, "frozen")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    started, history = time.perf_counter(), []
    for step in range(args.steps):
        index = torch.randint(len(train), (args.batch_size,), generator=generator)
        labels = torch.randint(train.num_classes, (args.batch_size,), generator=generator)
        chosen, hypotheses = contrastive_offset_classes(
            labels, args.cuts, train.num_classes, generator
        )
        output = model.forward_features(
            train.inputs(index, labels), train.candidates(index, chosen), hypotheses
        )
        sources = train.source_ids(index)
        losses = total_loss(output, labels, config.model.losses, sources)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()
        chance = contrastive_chance_level(output, labels, sources)
        history.append((float(losses["contrastive"].detach()), chance))
        if (step + 1) % 50 == 0:
            recent = history[-50:]
            term = sum(h[0] for h in recent) / len(recent)
            level = sum(h[1] for h in recent) / len(recent)
            print(f"{step + 1} contrastive {term:.3f} chance {level:.3f} "
                  f"{time.perf_counter() - started:.0f}s", flush=True)


if __name__ == "__main__":
    main()
