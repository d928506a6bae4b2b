"""Initialise our snapshot module from a Synchformer checkpoint (v-iashin/Synchformer, local file).

Synchformer's `Synchformer` module has `vfeat_extractor` (Motionformer, divided space-time),
`afeat_extractor` (AST from HuggingFace), `vproj`/`aproj` and `transformer` (GlobalTransformer).
`synchformer_key_map` lists, for each of our parameters, the Synchformer key(s) it comes from;
where Synchformer keeps separate query/key/value weights and we keep one fused tensor, ours is
their concatenation along dim 0 (q, k, v). The table is in docs/MODELS.md.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

QKV = ("query", "key", "value")

# (our pattern, their template); `{0}` is a block index, `{p}` weight or bias.
_VISUAL_RULES: list[tuple[str, tuple[str, ...]]] = [
    (r"patch_embed_3d\.(weight|bias)", ("patch_embed_3d.proj.{p}",)),
    (r"(cls_token|pos_embed|temp_embed)", ("{name}",)),
    (r"blocks\.(\d+)\.((?:norm[123]|attn\.qkv|attn\.proj|timeattn\.qkv|timeattn\.proj"
     r"|mlp\.fc1|mlp\.fc2))\.(weight|bias)", ("blocks.{0}.{1}.{p}",)),
    (r"norm\.(weight|bias)", ("norm.{p}",)),
    (r"spatial_pool\.cls_token", ("spatial_attn_agg.cls_token",)),
    (r"spatial_pool\.layer\.(.+)", ("spatial_attn_agg.{0}",)),
]
_AUDIO_RULES: list[tuple[str, tuple[str, ...]]] = [
    (r"patch_embed\.(weight|bias)", ("ast.embeddings.patch_embeddings.projection.{p}",)),
    (r"cls_token", ("ast.embeddings.cls_token",)),
    (r"dist_token", ("ast.embeddings.distillation_token",)),
    (r"pos_embed", ("ast.embeddings.position_embeddings",)),
    (r"blocks\.(\d+)\.norm1\.(weight|bias)", ("ast.encoder.layer.{0}.layernorm_before.{p}",)),
    (r"blocks\.(\d+)\.norm2\.(weight|bias)", ("ast.encoder.layer.{0}.layernorm_after.{p}",)),
    (r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)",
     tuple(f"ast.encoder.layer.{{0}}.attention.attention.{part}.{{p}}" for part in QKV)),
    (r"blocks\.(\d+)\.attn\.proj\.(weight|bias)",
     ("ast.encoder.layer.{0}.attention.output.dense.{p}",)),
    (r"blocks\.(\d+)\.mlp\.fc1\.(weight|bias)", ("ast.encoder.layer.{0}.intermediate.dense.{p}",)),
    (r"blocks\.(\d+)\.mlp\.fc2\.(weight|bias)", ("ast.encoder.layer.{0}.output.dense.{p}",)),
    (r"norm\.(weight|bias)", ("ast.layernorm.{p}",)),
    (r"freq_pool\.cls_token", ("freq_attn_agg.cls_token",)),
    (r"freq_pool\.layer\.(.+)", ("freq_attn_agg.{0}",)),
]
_SYNC_RULES: list[tuple[str, tuple[str, ...]]] = [
    (r"visual_norm\.(weight|bias)", ("vis_in_lnorm.{p}",)),
    (r"audio_norm\.(weight|bias)", ("aud_in_lnorm.{p}",)),
    (r"off_token", ("OFF_tok",)),
    (r"mod_token", ("MOD_tok",)),
    (r"pos_embed", ("pos_emb_cfg.pos_emb",)),
    (r"blocks\.(\d+)\.self_attn\.in_proj_(weight|bias)",
     tuple(f"blocks.{{0}}.attn.{part}.{{p}}" for part in QKV)),
    (r"blocks\.(\d+)\.self_attn\.out_proj\.(weight|bias)", ("blocks.{0}.attn.proj.{p}",)),
    (r"blocks\.(\d+)\.linear1\.(weight|bias)", ("blocks.{0}.mlp.0.{p}",)),
    (r"blocks\.(\d+)\.linear2\.(weight|bias)", ("blocks.{0}.mlp.2.{p}",)),
    (r"blocks\.(\d+)\.norm1\.(weight|bias)", ("blocks.{0}.ln1.{p}",)),
    (r"blocks\.(\d+)\.norm2\.(weight|bias)", ("blocks.{0}.ln2.{p}",)),
    (r"final_norm\.(weight|bias)", ("ln_f.{p}",)),
    (r"off_head\.(weight|bias)", ("off_head.{p}",)),
]
_SECTIONS: list[tuple[str, str, list[tuple[str, tuple[str, ...]]]]] = [
    ("visual_encoder.", "vfeat_extractor.", _VISUAL_RULES),
    ("audio_encoder.", "afeat_extractor.", _AUDIO_RULES),
    ("sync.", "transformer.", _SYNC_RULES),
    ("visual_proj.", "vproj.", [(r"(weight|bias)", ("{p}",))]),
    ("audio_proj.", "aproj.", [(r"(weight|bias)", ("{p}",))]),
]
# Synchformer keys we knowingly do not use: Motionformer's 2D patch embedding (unused when
# tubelets are 3D), classifier heads, and AST's classifier.
_IGNORED_THEIRS = re.compile(
    r"^(vfeat_extractor\.(patch_embed\.proj|head|pre_logits)\.|afeat_extractor\.classifier\.)"
)


@dataclass
class LoadReport:
    """What `load_synchformer_checkpoint` did.

    mapped: our keys filled from the checkpoint. missing: our keys the mapping expects from a
    Synchformer checkpoint that this file lacks (left at their initial values). unexpected:
    checkpoint keys we did not use. ignored: checkpoint keys we knowingly skip. not_in_synchformer:
    our keys Synchformer has no counterpart for (streaming parts), left at their initial values.
    """

    mapped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    not_in_synchformer: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.mapped)} mapped, {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected, {len(self.ignored)} ignored, "
            f"{len(self.not_in_synchformer)} not in Synchformer"
        )


def _snapshot_prefix(model: nn.Module) -> str:
    return "snapshot." if hasattr(model, "snapshot") else ""


def _their_keys(ours: str) -> tuple[str, ...] | None:
    """Our snapshot-relative key -> its Synchformer key(s), or None when it has none."""
    for our_prefix, their_prefix, rules in _SECTIONS:
        if not ours.startswith(our_prefix):
            continue
        rest = ours[len(our_prefix) :]
        for pattern, templates in rules:
            match = re.fullmatch(pattern, rest)
            if match is None:
                continue
            groups = match.groups()
            values = {"p": groups[-1] if groups else "", "name": rest}
            return tuple(
                their_prefix + template.format(*groups, **values) for template in templates
            )
    return None


def synchformer_key_map(model: nn.Module) -> dict[str, tuple[str, ...]]:
    """Each of our state-dict keys that has a Synchformer counterpart -> its Synchformer key(s)."""
    prefix = _snapshot_prefix(model)
    mapping = {}
    for key in model.state_dict():
        if key.startswith(prefix):
            theirs = _their_keys(key[len(prefix) :])
            if theirs is not None:
                mapping[key] = theirs
    return mapping


def to_synchformer_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Our weights under Synchformer's key names (fused q/k/v split back into three)."""
    state = model.state_dict()
    exported = {}
    for ours, theirs in synchformer_key_map(model).items():
        for their_key, part in zip(theirs, state[ours].chunk(len(theirs), dim=0), strict=True):
            exported[their_key] = part.clone()
    return exported


def _read_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(
            f"Synchformer checkpoint not found: {path}. Pass the local path of a .pt file "
            f"(model.pretrained_checkpoint); nothing is downloaded."
        )
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise ValueError(
            f"cannot read {path} as a weights-only checkpoint ({str(exc).splitlines()[0]}). If it "
            f"is a genuine Synchformer file that also pickles its config, re-save only the weights "
            f"once, in an environment you trust: torch.save(torch.load(path, weights_only=False)"
            f"['model'], 'synchformer_weights.pt')"
        ) from None
    if isinstance(loaded, Mapping):
        for wrapper in ("model", "state_dict"):
            if isinstance(loaded.get(wrapper), Mapping):
                loaded = loaded[wrapper]
                break
    if not isinstance(loaded, Mapping) or not all(
        isinstance(value, torch.Tensor) for value in loaded.values()
    ):
        raise ValueError(
            f"{path} holds no state dict (a mapping of names to tensors, optionally under 'model' "
            f"or 'state_dict')"
        )
    return {key.removeprefix("module."): value for key, value in loaded.items()}


def load_synchformer_checkpoint(model: nn.Module, path: str | Path) -> LoadReport:
    """Copy the weights of a Synchformer-format checkpoint at a local `path` into `model`.

    `model` is a SnapshotModel or any streaming model (its `snapshot` is filled). Loads with
    `weights_only=True`. Raises if a tensor's shape does not fit (e.g. a 224-px checkpoint into a
    64-px model) or nothing at all maps; otherwise returns a report and logs a summary.
    """
    path = Path(path)
    theirs = _read_state_dict(path)
    own = model.state_dict()
    report = LoadReport()
    update: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    mismatched = []
    mapping = synchformer_key_map(model)
    for ours, their_keys in mapping.items():
        if not all(key in theirs for key in their_keys):
            report.missing.append(ours)
            continue
        value = torch.cat([theirs[key] for key in their_keys], dim=0)
        used.update(their_keys)
        if value.shape != own[ours].shape:
            mismatched.append(f"{'+'.join(their_keys)} {tuple(value.shape)} -> {ours} "
                              f"{tuple(own[ours].shape)}")
            continue
        update[ours] = value.to(own[ours].dtype)
        report.mapped.append(ours)
    if mismatched:
        raise ValueError(
            f"{path} does not fit this model ({len(mismatched)} shape mismatches, e.g. "
            f"{'; '.join(mismatched[:3])}). Use the config the checkpoint was trained with "
            f"(configs/full.yaml for Synchformer's released weights)."
        )
    if not report.mapped:
        raise ValueError(
            f"no key of {path} maps onto this model: is it a Synchformer checkpoint? (first keys: "
            f"{', '.join(list(theirs)[:5])})"
        )
    for key in theirs:
        if key not in used:
            (report.ignored if _IGNORED_THEIRS.match(key) else report.unexpected).append(key)
    report.not_in_synchformer = [key for key in own if key not in mapping]
    model.load_state_dict(update, strict=False)
    # Our lag-correlation path has no Synchformer counterpart: start it neutral, so the loaded
    # model predicts as Synchformer does and fine-tuning grows the path from zero.
    prefix = _snapshot_prefix(model)
    if any(key.startswith(f"{prefix}sync.") for key in report.mapped):
        (model.snapshot if prefix else model).sync.neutralise_lag_correlation()
    log.info("loaded Synchformer checkpoint %s: %s", path, report.summary())
    if report.missing:
        log.warning("keys missing from %s (left at init): %s", path, ", ".join(report.missing))
    if report.unexpected:
        log.warning("unexpected keys in %s (not used): %s", path, ", ".join(report.unexpected))
    return report
