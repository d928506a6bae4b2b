"""The quality benchmark's settings: which level gets what (benchmarks/quality.py).

The `ci` scale's budget rests on these rules (easy: random tubelet encoders, 300 head steps, no
ablations; hard: conv stem, onset stage 1 with restarts, 150 head steps, ablations and
regimes), so a change to them should be a decision, not an accident."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "quality.py"


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("quality_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_each_level_takes_its_own_settings_where_the_command_line_leaves_them_out(quality):
    args = quality.parse_args([])
    easy, hard = quality.level_args(args, "easy"), quality.level_args(args, "hard")
    assert (easy.visual_stem, easy.stage1_steps, easy.encoder_seed, easy.steps) == (
        "tubelet", 0, 1234, 300)
    assert (hard.visual_stem, hard.stage1_objective, hard.stage1_targets) == (
        "conv", "visual_onset", "audio")
    assert (hard.encoder_seed, hard.stage1_attempts, hard.steps) == (7, 3, 150)
    assert hard.stage1_check_step < hard.stage1_steps  # else a restart could never happen
    assert args.ablation_levels == ["hard"] and args.regime_levels == ["hard"]


def test_a_flag_given_holds_for_every_level(quality):
    args = quality.parse_args(["--steps", "40", "--visual-stem", "conv", "--stage1-steps", "0",
                               "--encoder-seed", "5", "--ablation-levels", "easy", "hard"])
    for level in ("easy", "hard"):
        filled = quality.level_args(args, level)
        assert (filled.steps, filled.visual_stem, filled.stage1_steps, filled.encoder_seed) == (
            40, "conv", 0, 5)
    assert args.ablation_levels == ["easy", "hard"]
    # The level's own settings are filled in a copy: the parsed arguments stay as given.
    assert quality.level_args(quality.parse_args([]), "hard").steps == 150
    assert quality.parse_args([]).stage1_steps is None


def test_ablations_run_only_at_their_levels_and_never_compare_chance_with_chance(quality):
    args = quality.parse_args([])
    trained = {"as_synchformer": {"seeds": [{"val": [{"acc1": 0.5}]}]}}
    at_chance = {"as_synchformer": {"seeds": [{"val": [{"acc1": 0.05}]}]}}
    assert "--ablation-levels" in quality.ablation_skip_reason("as_no_emd", "easy", trained, args)
    assert quality.ablation_skip_reason("as_no_emd", "hard", trained, args) == ""
    assert "chance" in quality.ablation_skip_reason("as_no_emd", "hard", at_chance, args)
    assert quality.ablation_skip_reason("snapshot", "easy", trained, args) == ""
    forced = quality.parse_args(["--always-ablate"])
    assert quality.ablation_skip_reason("as_no_emd", "hard", at_chance, forced) == ""


def test_the_calibrated_apa_reference_fits_a_temperature_and_keeps_the_ranking(quality):
    import torch

    generator = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 21, (400,), generator=generator)
    # Averaged beliefs that are right 80% of the time but diffuse: the true class (or, for a
    # fifth, a wrong one) leads the others by little. Cross-entropy wants them sharper.
    leader = torch.where(torch.rand(400, generator=generator) < 0.8, targets,
                         (targets + 7) % 21)
    logits = torch.randn(400, 21, generator=generator) * 0.1
    logits[torch.arange(400), leader] += 1.0
    diffuse = logits.softmax(-1).unsqueeze(1)  # (N, W=1, C)
    sharpness = quality.fit_sharpness(diffuse, targets)
    assert sharpness > 1.5
    # Overconfident beliefs (right 80%, all mass on the leader) want a flatter distribution.
    overconfident = (logits * 30).softmax(-1).unsqueeze(1)
    assert quality.fit_sharpness(overconfident, targets) < 1.0
    # Sharpening never changes which offset leads, so ACC@1 is APA's own.
    sharpened = quality.sharpened(diffuse, sharpness)
    assert torch.equal(sharpened.argmax(-1), diffuse.argmax(-1))
    torch.testing.assert_close(sharpened.sum(-1), torch.ones(400, 1))
    assert (sharpened.max(-1).values > diffuse.max(-1).values).all()
