"""The `full` preset (Synchformer's sizes): one forward at batch 1, parameter counts and FLOPs."""

from __future__ import annotations

from pathlib import Path

import torch

from assynch.config import load_config
from assynch.models import build_model
from assynch.models.flops import model_cost, parameter_counts

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_full_as_synchformer_forward_at_batch_one() -> None:
    # Full widths and depths; 1 segment per window instead of 14 keeps this CPU test near 10 s
    # (a 14-segment window is ~5.7 TFLOP, about a minute on two cores; see docs/MODELS.md).
    # The preset's bf16 autocast is for GPUs; on this CPU it is several times slower than fp32.
    config = load_config(
        CONFIGS / "full.yaml", ["time.segments_per_window=1", "model.autocast_bf16=false"]
    )
    torch.manual_seed(0)
    model = build_model(config).eval()
    snapshot = model.snapshot
    assert snapshot.visual_encoder.blocks[0].attn.qkv.in_features == 768
    assert len(snapshot.visual_encoder.blocks) == 12 and len(snapshot.audio_encoder.blocks) == 12
    assert len(snapshot.sync.blocks) == 3 and len(model.stream_blocks) == 3
    video = torch.randn(1, 1, 1, 16, 3, 224, 224)
    audio = torch.randn(1, 1, 1, 128, 66)
    # The same window's audio under the 20 other offset hypotheses (contrastive candidates).
    candidates = torch.randn(1, 1, 20, 1, 128, 66)
    hypotheses = torch.tensor([[c for c in range(21) if c != 10]])
    with torch.no_grad():
        output = model(video, audio, candidates, hypotheses)
    assert output.logits.shape == (1, 1, 21)
    assert torch.isfinite(output.logits).all()
    assert output.audio_embedding is not None and output.audio_embedding.shape == (1, 1, 21, 256)
    # The partial regime of the preset: the last two encoder blocks train, the rest is frozen.
    counts = parameter_counts(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert counts["visual_encoder"] > 100_000_000 and counts["audio_encoder"] > 80_000_000
    assert counts["total"] - trainable > 150_000_000


def test_costs_per_window_scale_with_the_preset() -> None:
    tiny = model_cost(load_config(CONFIGS / "tiny.yaml"))
    full = model_cost(load_config(CONFIGS / "full.yaml"))
    assert tiny.parameters["total"] == sum(
        p.numel() for p in build_model(load_config(CONFIGS / "tiny.yaml")).parameters()
    )
    assert 0 < tiny.flops_per_window < full.flops_per_window
    # Dominated by the visual encoder: 14 segments x 1,568 tubelet tokens x 12 blocks at 768 dim.
    visual_linear = 14 * 1568 * 12 * 2 * 16 * 768**2
    assert visual_linear < full.flops_per_window < 2 * visual_linear
