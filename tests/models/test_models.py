"""Models on the tiny preset: shapes, streaming contract (step == forward, causality, bounded
state), encoder regimes, checkpoints, the Synchformer key mapping, stage-1 pre-training."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from assynch.config import AssynchConfig, ConfigError, load_config
from assynch.models import (
    MODEL_KINDS,
    StreamingModel,
    StreamOutput,
    Window,
    apply_encoder_regime,
    build_model,
    load_model_checkpoint,
    load_synchformer_checkpoint,
    save_model_checkpoint,
    synchformer_key_map,
    to_synchformer_state_dict,
    total_loss,
)
from assynch.models.layers import DividedAttention

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
KINDS = tuple(MODEL_KINDS)


def tiny_config(*overrides: str) -> AssynchConfig:
    # A ring of 2 windows, so that 4-window streams exercise a full, wrapping history.
    return load_config(CONFIGS / "tiny.yaml", ["model.history_windows=2", *overrides])


def random_streams(config: AssynchConfig, batch: int, windows: int, seed: int = 0) -> tuple[
    torch.Tensor, torch.Tensor
]:
    generator = torch.Generator().manual_seed(seed)
    time, crop = config.time, config.video.crop
    video = torch.randn(
        batch, windows, time.segments_per_window, time.segment_frames, 3, crop, crop,
        generator=generator,
    )
    audio = torch.randn(
        batch, windows, time.segments_per_window, config.audio.n_mels,
        config.audio.segment_mel_frames, generator=generator,
    )
    return video, audio


def built(kind: str, *overrides: str, seed: int = 0) -> StreamingModel:
    torch.manual_seed(seed)
    return build_model(tiny_config(f"model.kind={kind}", *overrides))


@pytest.fixture(scope="module")
def streams() -> tuple[torch.Tensor, torch.Tensor]:
    return random_streams(tiny_config(), batch=2, windows=3)


@dataclass
class StreamRun:
    """A model's outputs on `streams`: forward, step by step, forward with window 2 changed."""

    kind: str
    output: StreamOutput
    stepped: torch.Tensor
    state_shapes: list[dict[str, tuple[int, ...]]]
    changed: torch.Tensor


def grid_candidates(
    config: AssynchConfig, batch: int, windows: int, seed: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Contrastive audio for every offset hypothesis but the centre one (the input audio's):
    (B, W, 20, S, n_mels, T) random audio and its (B, 20) hypotheses, so that with the input
    audio the candidates cover the whole grid in class order."""
    generator = torch.Generator().manual_seed(seed)
    classes = config.time.num_offset_classes
    audio = torch.randn(
        batch, windows, classes - 1, config.time.segments_per_window, config.audio.n_mels,
        config.audio.segment_mel_frames, generator=generator,
    )
    others = [c for c in range(classes) if c != classes // 2]
    return audio, torch.tensor(others).expand(batch, -1)


@pytest.fixture(scope="module", params=KINDS)
def run(request: pytest.FixtureRequest, streams: tuple[torch.Tensor, torch.Tensor]) -> StreamRun:
    video, audio = streams
    model = built(request.param).eval()
    later_video, later_audio = random_streams(tiny_config(), batch=2, windows=3, seed=1)
    changed_video = torch.cat((video[:, :2], later_video[:, 2:]), dim=1)
    changed_audio = torch.cat((audio[:, :2], later_audio[:, 2:]), dim=1)
    with torch.no_grad():
        candidates = (
            grid_candidates(tiny_config(), batch=2, windows=3)
            if request.param == "as_synchformer" else ()
        )
        output = model(video, audio, *candidates)
        state, stepped, shapes = model.init_state(2), [], []
        for index in range(video.shape[1]):
            logits, state = model.step(Window(video[:, index], audio[:, index]), state)
            stepped.append(logits)
            shapes.append({name: tuple(value.shape) for name, value in state.items()})
        changed = model(changed_video, changed_audio).logits
    return StreamRun(request.param, output, torch.stack(stepped, dim=1), shapes, changed)


def test_tiny_shapes(run: StreamRun) -> None:
    output = run.output
    assert output.logits.shape == (2, 3, 21)
    assert run.stepped.shape == (2, 3, 21)
    assert torch.isfinite(output.logits).all()
    if run.kind == "as_synchformer":
        assert output.visual_embedding is not None and output.audio_embedding is not None
        assert output.visual_embedding.shape == (2, 3, 32)
        assert output.audio_embedding.shape == (2, 3, 21, 32)
        norms = output.audio_embedding.norm(dim=-1)
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
        assert run.state_shapes[0]["tokens"] == (2, 2, 4, 64)
    else:
        assert output.visual_embedding is None and output.audio_embedding is None


@pytest.mark.parametrize("kind", KINDS)
def test_cached_encoder_features_give_the_same_predictions(
    kind: str, streams: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """forward_features / step_features on encoder features made once (what a frozen-encoder
    run caches) give exactly what forward / step give on the raw windows."""
    video, audio = streams
    model = built(kind).eval()
    candidates = (
        grid_candidates(tiny_config(), batch=2, windows=3) if kind == "as_synchformer" else ()
    )
    with torch.no_grad():
        direct = model(video, audio, *candidates)
        features = model.snapshot.encode(video, audio, leading=2)
        cached_candidates = (
            (model.snapshot.encode_audio(candidates[0], leading=3), candidates[1])
            if candidates else ()
        )
        cached = model.forward_features(features, *cached_candidates)
        state = model.init_state(2)
        for index in range(video.shape[1]):
            window = Window(video[:, index], audio[:, index])
            stepped, _ = model.step(window, state)
            from_features, state = model.step_features(model.encode(window), state)
            torch.testing.assert_close(from_features, stepped)
            torch.testing.assert_close(from_features, direct.logits[:, index], atol=1e-5, rtol=0)
    torch.testing.assert_close(cached.logits, direct.logits)
    if kind == "as_synchformer":
        torch.testing.assert_close(cached.audio_embedding, direct.audio_embedding)
    with pytest.raises(ValueError, match="features must be"):
        model.forward_features(type(features)(features.visual[..., :-1], features.audio))


def test_encoders_emit_the_designed_tokens_per_segment() -> None:
    config = tiny_config()
    snapshot = built("snapshot").snapshot
    video, audio = random_streams(config, batch=1, windows=1)
    visual, audible = snapshot.encode_segments(video[:, 0], audio[:, 0])
    assert visual.shape == (1, 14, 8, 64)
    assert audible.shape == (1, 14, 6, 64)
    assert snapshot.sync.pos_embed.shape[1] == 1 + 14 * 8 + 1 + 14 * 6


def test_step_by_step_equals_forward(run: StreamRun) -> None:
    torch.testing.assert_close(run.stepped, run.output.logits, atol=1e-5, rtol=1e-4)


def test_outputs_never_look_ahead(run: StreamRun) -> None:
    torch.testing.assert_close(run.changed[:, :2], run.output.logits[:, :2], atol=1e-6, rtol=0)
    # ... while the window that did change does move the prediction after it.
    assert (run.changed[:, 2] - run.output.logits[:, 2]).abs().max() > 1e-4


def test_state_size_does_not_grow(run: StreamRun) -> None:
    assert all(shapes == run.state_shapes[0] for shapes in run.state_shapes)


def test_apa_is_the_running_mean_of_snapshot_logits(
    streams: tuple[torch.Tensor, torch.Tensor],
) -> None:
    video, audio = streams
    model = built("apa", "model.apa_average=logits").eval()
    with torch.no_grad():
        per_window = torch.stack(
            [model.snapshot(video[:, k], audio[:, k]) for k in range(video.shape[1])], dim=1
        )
        averaged = model(video, audio).logits
    for k in range(video.shape[1]):
        torch.testing.assert_close(averaged[:, k], per_window[:, : k + 1].mean(dim=1))


def test_wrong_input_shape_names_the_expected_shape() -> None:
    model = built("as_synchformer")
    video = torch.zeros(1, 1, 14, 16, 3, 32, 32)
    audio = torch.zeros(1, 1, 14, 128, 66)
    expected = r"video must be .*64, 64\).*got \(1, 1, 14, 16, 3, 32, 32\)"
    with pytest.raises(ValueError, match=expected):
        model(video, audio)


def test_audio_token_count_mismatch_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="patch_stride"):
        build_model(tiny_config("model.audio_encoder.patch_stride=16"))


# --- encoder regimes --------------------------------------------------------------------------


def expected_trainable(model: StreamingModel, regime: str, blocks: int) -> set[str]:
    names = set()
    for name, _ in model.named_parameters():
        if name == "snapshot.segment_logit_scale":
            continue  # stage-1 temperature: frozen in AS-Synchformer (it has its own)
        if name.startswith("snapshot.visual_onset_head."):
            continue  # the visual onset stage 1's probe: frozen unless that stage 1 runs
        encoder = re.match(r"snapshot\.(visual|audio)_encoder\.(.*)", name)
        if encoder is None or regime == "full":
            names.add(name)
            continue
        if regime == "partial":
            rest = encoder.group(2)
            block = re.match(r"blocks\.(\d+)\.", rest)
            depth = 2  # tiny encoders
            if block and int(block.group(1)) >= depth - blocks:
                names.add(name)
            elif rest.startswith(("norm.", "spatial_pool.", "freq_pool.")):
                names.add(name)
    return names


@pytest.mark.parametrize(("regime", "blocks"), [("frozen", 0), ("partial", 1), ("full", 0)])
def test_regime_trains_exactly_the_intended_parameters(
    regime: str, blocks: int, streams: tuple[torch.Tensor, torch.Tensor]
) -> None:
    video, audio = streams
    model = built("as_synchformer")
    apply_encoder_regime(model, regime, blocks)
    # One contrastive audio per stream, in sync under the label: the contrastive term is on.
    candidates, _ = grid_candidates(tiny_config(), batch=2, windows=2)
    labels = torch.tensor([3, 17])
    output = model(video[:, :2], audio[:, :2], candidates[:, :, :1], labels[:, None])
    losses = total_loss(output, labels, tiny_config().model.losses)
    losses["total"].backward()
    with_gradient = {
        name for name, p in model.named_parameters() if p.grad is not None and p.grad.any()
    }
    expected = expected_trainable(model, regime, blocks)
    assert with_gradient == expected
    assert {name for name, p in model.named_parameters() if p.requires_grad} == expected


def test_build_model_applies_the_configured_regime() -> None:
    model = build_model(
        tiny_config("model.encoder_regime=partial", "model.trainable_encoder_blocks=1")
    )
    visual = model.snapshot.visual_encoder
    assert not visual.blocks[0].timeattn.qkv.weight.requires_grad
    assert visual.blocks[1].timeattn.qkv.weight.requires_grad
    assert not visual.patch_embed_3d.weight.requires_grad


def test_partial_regime_rejects_more_blocks_than_the_encoder_has() -> None:
    with pytest.raises(ValueError, match="trainable_encoder_blocks"):
        apply_encoder_regime(built("apa"), "partial", 3)


# --- checkpoints ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["streamsync", "as_synchformer"])
def test_checkpoint_round_trip(
    kind: str, tmp_path: Path, streams: tuple[torch.Tensor, torch.Tensor]
) -> None:
    video, audio = streams
    config = tiny_config(f"model.kind={kind}")
    torch.manual_seed(3)
    model = build_model(config).eval()
    path = save_model_checkpoint(model, config, tmp_path / "models" / "model.pt")
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) == {"format", "config", "state_dict"}
    restored, restored_config = load_model_checkpoint(path)
    assert restored_config == config
    with torch.no_grad():
        torch.testing.assert_close(restored(video, audio).logits, model(video, audio).logits)


def test_loading_something_else_as_a_model_checkpoint_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not an assynch model checkpoint"):
        load_model_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_model_checkpoint(tmp_path / "missing.pt")


# --- Synchformer checkpoints ------------------------------------------------------------------


def test_synchformer_state_dict_loads_with_no_missing_keys(
    tmp_path: Path, streams: tuple[torch.Tensor, torch.Tensor]
) -> None:
    video, audio = streams
    source = built("snapshot", seed=1).eval()
    # A Synchformer has no lag-correlation path: the source predicts as one with it neutral.
    source.snapshot.sync.neutralise_lag_correlation()
    exported = to_synchformer_state_dict(source)
    # Synchformer's names, as in v-iashin/Synchformer (separate q/k/v where it keeps them).
    for key in (
        "vfeat_extractor.patch_embed_3d.proj.weight",
        "vfeat_extractor.blocks.1.timeattn.qkv.weight",
        "vfeat_extractor.temp_embed",
        "vfeat_extractor.spatial_attn_agg.self_attn.in_proj_weight",
        "afeat_extractor.ast.embeddings.distillation_token",
        "afeat_extractor.ast.encoder.layer.0.attention.attention.query.weight",
        "afeat_extractor.freq_attn_agg.cls_token",
        "vproj.weight",
        "aproj.bias",
        "transformer.OFF_tok",
        "transformer.pos_emb_cfg.pos_emb",
        "transformer.blocks.1.attn.value.bias",
        "transformer.blocks.0.mlp.2.weight",
        "transformer.ln_f.weight",
        "transformer.off_head.weight",
    ):
        assert key in exported, key
    exported["vfeat_extractor.patch_embed.proj.weight"] = torch.zeros(64, 3, 16, 16)
    exported["transformer.sync_head.weight"] = torch.zeros(2, 64)
    path = tmp_path / "synchformer.pt"
    torch.save({"model": {f"module.{k}": v for k, v in exported.items()}}, path)

    target = built("as_synchformer", seed=2).eval()
    report = load_synchformer_checkpoint(target, path)
    assert report.missing == []
    assert report.unexpected == ["transformer.sync_head.weight"]
    assert report.ignored == ["vfeat_extractor.patch_embed.proj.weight"]
    assert set(report.mapped) == set(synchformer_key_map(source))
    assert "snapshot.segment_logit_scale" in report.not_in_synchformer
    assert all(
        not key.startswith("snapshot.") or key == "snapshot.segment_logit_scale"
        or key.startswith(("snapshot.sync.lag_", "snapshot.visual_onset_head."))
        for key in report.not_in_synchformer
    )
    assert target.snapshot.sync.lag_gain.item() == 0.0  # loaded: the lag path starts neutral
    with torch.no_grad():
        window = (video[:, 0], audio[:, 0])
        torch.testing.assert_close(target.snapshot(*window), source.snapshot(*window))


def test_synchformer_checkpoint_of_another_size_is_refused(tmp_path: Path) -> None:
    exported = to_synchformer_state_dict(built("snapshot"))
    exported["transformer.OFF_tok"] = torch.zeros(1, 1, 768)
    path = tmp_path / "synchformer.pt"
    torch.save(exported, path)
    with pytest.raises(ValueError, match=r"shape mismatch.*OFF_tok"):
        load_synchformer_checkpoint(built("snapshot"), path)


def test_synchformer_checkpoint_with_pickled_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pickled.pt"
    torch.save({"model": {}, "args": Path("not a tensor")}, path)
    with pytest.raises(ValueError, match="weights-only"):
        load_synchformer_checkpoint(built("snapshot"), path)


def test_build_model_loads_the_configured_pretrained_checkpoint(tmp_path: Path) -> None:
    source = built("snapshot", seed=5)
    path = tmp_path / "synchformer.pt"
    torch.save({"model": to_synchformer_state_dict(source)}, path)
    model = build_model(tiny_config(f"model.pretrained_checkpoint={path}"))
    torch.testing.assert_close(model.snapshot.sync.off_token, source.snapshot.sync.off_token)


# --- stage-1 pre-training and building blocks --------------------------------------------------


def test_segment_contrastive_pretraining_reduces_its_loss() -> None:
    config = tiny_config()
    snapshot = built("snapshot").snapshot
    video, audio = random_streams(config, batch=2, windows=1, seed=4)
    video, audio = video[:, 0], audio[:, 0]
    optimizer = torch.optim.Adam(snapshot.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        loss = snapshot.segment_contrastive_loss(video, audio)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3, losses
    assert snapshot.segment_logit_scale.grad is not None


@pytest.mark.parametrize("axis", ["time", "space"])
def test_divided_attention_matches_attention_within_each_group(axis: str) -> None:
    torch.manual_seed(0)
    heads, head_dim, frames, patches, batch = 4, 8, 3, 5, 2
    attention = DividedAttention(heads * head_dim, heads).eval()
    x = torch.randn(batch, 1 + frames * patches, heads * head_dim)
    q, k, v = (
        t.reshape(batch, -1, heads, head_dim) for t in attention.qkv(x).chunk(3, dim=-1)
    )

    def attend(query: torch.Tensor, index: list[int], b: int) -> torch.Tensor:
        weights = torch.einsum("hd,lhd->hl", query, k[b, index]) / head_dim**0.5
        return torch.einsum("hl,lhd->hd", weights.softmax(dim=-1), v[b, index]).reshape(-1)

    expected = torch.zeros_like(x)
    for b in range(batch):
        expected[b, 0] = attend(q[b, 0], list(range(x.shape[1])), b)
        for f in range(frames):
            for p in range(patches):
                if axis == "time":
                    group = [1 + g * patches + p for g in range(frames)]
                else:
                    group = [1 + f * patches + g for g in range(patches)]
                expected[b, 1 + f * patches + p] = attend(q[b, 1 + f * patches + p], [0, *group], b)
    with torch.no_grad():
        torch.testing.assert_close(attention(x, frames, axis), attention.proj(expected))
