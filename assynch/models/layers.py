"""Transformer building blocks shared by the encoders and heads.

Parameter names follow the models whose checkpoints we load (Motionformer's `qkv`/`proj`/`mlp.fc1`,
torch's `nn.TransformerEncoderLayer`), so that the Synchformer key mapping stays a renaming.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint


def init_vit_weights(module: nn.Module) -> None:
    """Truncated-normal linear weights, zero biases, unit LayerNorms (ViT / Synchformer init)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, D) -> (B, heads, N, D / heads)."""
    batch, tokens, dim = x.shape
    return x.view(batch, tokens, heads, dim // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, d) -> (B, N, heads * d)."""
    batch, heads, tokens, dim = x.shape
    return x.transpose(1, 2).reshape(batch, tokens, heads * dim)


class DropPath(nn.Module):
    """Stochastic depth (timm's `DropPath`): in training, zero a sample's residual branch with
    probability p and scale the kept ones by 1 / (1 - p). Identity in eval mode or at p = 0."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (timm / Motionformer names)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention dim {dim} must be divisible by its {heads} heads")
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (split_heads(t, self.heads) for t in self.qkv(x).chunk(3, dim=-1))
        dropout = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        return self.proj(merge_heads(out))


class Block(nn.Module):
    """A pre-norm ViT block."""

    def __init__(
        self, dim: int, heads: int, mlp_ratio: float, dropout: float = 0.0, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class DividedAttention(Attention):
    """Attention along one axis of a (frames x patches) grid, as in TimeSformer / Motionformer.

    The input is [CLS, grid tokens] with the grid flattened frame-major. The CLS token attends to
    every token; each grid token attends to the CLS token and to the tokens that share its other
    coordinate (the same patch in every frame for `axis="time"`, the same frame for "space").
    Same parameters as `Attention`; only the attention pattern differs.
    """

    def forward(self, x: torch.Tensor, frames: int, axis: str) -> torch.Tensor:  # type: ignore[override]
        batch, tokens, dim = x.shape
        heads, patches = self.heads, (tokens - 1) // frames
        dropout = self.dropout if self.training else 0.0
        qkv = self.qkv(x).view(batch, tokens, 3, heads, dim // heads)
        q_all, k_all, v_all = qkv.permute(2, 0, 3, 1, 4)  # each (B, h, N, d)
        cls_out = F.scaled_dot_product_attention(q_all[:, :, :1], k_all, v_all, dropout_p=dropout)

        grid = qkv[:, 1:].view(batch, frames, patches, 3, heads, -1)
        if axis == "time":  # groups: patches, sequence: frames
            grid = grid.permute(3, 0, 2, 4, 1, 5)
        else:  # groups: frames, sequence: patches
            grid = grid.permute(3, 0, 1, 4, 2, 5)
        groups, length = grid.shape[2], grid.shape[4]
        cls_kv = qkv[:, 0, 1:].transpose(0, 1)[:, :, None, :, None]  # (2, B, 1, h, 1, d)
        kv = torch.cat((cls_kv.expand(-1, -1, groups, -1, -1, -1), grid[1:]), dim=4)
        kv = kv.reshape(2, batch * groups, heads, length + 1, -1)
        q = grid[0].reshape(batch * groups, heads, length, -1)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1], dropout_p=dropout)
        out = out.view(batch, groups, heads, length, -1)
        if axis == "time":
            out = out.permute(0, 3, 1, 2, 4)  # (B, frames, patches, h, d)
        else:
            out = out.permute(0, 1, 3, 2, 4)  # (B, frames, patches, h, d)
        out = torch.cat((merge_heads(cls_out), out.reshape(batch, frames * patches, dim)), dim=1)
        return self.proj(out)


class DividedSpaceTimeBlock(nn.Module):
    """Motionformer's divided block: time attention, then space attention, then the MLP."""

    def __init__(
        self, dim: int, heads: int, mlp_ratio: float, dropout: float = 0.0, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        self.norm3 = nn.LayerNorm(dim, eps=1e-6)
        self.timeattn = DividedAttention(dim, heads, dropout)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = DividedAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        # As in Motionformer's code: stochastic depth on the space and MLP branches only.
        x = x + self.timeattn(self.norm3(x), frames, axis="time")
        x = x + self.drop_path(self.attn(self.norm1(x), frames, axis="space"))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def run_blocks(
    blocks: nn.ModuleList, x: torch.Tensor, checkpointing: bool, **kwargs: object
) -> torch.Tensor:
    """Apply `blocks` in order; with `checkpointing`, keep only each trainable block's input for
    the backward pass and recompute its inside there (non-reentrant `torch.utils.checkpoint`,
    which also gives gradients to a block whose input does not require them, and replays the
    RNG so dropout / drop-path masks match). Blocks that do not train, or runs without autograd,
    go through plainly: they save nothing anyway."""
    for block in blocks:
        if (
            checkpointing
            and torch.is_grad_enabled()
            and any(p.requires_grad for p in block.parameters())
        ):
            x = checkpoint(block, x, use_reentrant=False, **kwargs)
        else:
            x = block(x, **kwargs)
    return x


def drop_path_rates(depth: int, rate: float) -> list[float]:
    """Stochastic depth rising linearly from 0 at the first block to `rate` at the last."""
    return [rate * i / (depth - 1) if depth > 1 else rate for i in range(depth)]


def encoder_layer(
    dim: int, heads: int, mlp_ratio: float, dropout: float, eps: float = 1e-5
) -> nn.TransformerEncoderLayer:
    """torch's pre-norm encoder layer with GELU (Synchformer's aggregation and head layers)."""
    return nn.TransformerEncoderLayer(
        d_model=dim,
        nhead=heads,
        dim_feedforward=int(dim * mlp_ratio),
        dropout=dropout,
        activation="gelu",
        layer_norm_eps=eps,
        batch_first=True,
        norm_first=True,
    )


class ClsPooling(nn.Module):
    """One pre-norm encoder layer over [CLS, tokens]; returns the CLS output (B, D).

    Synchformer reduces each frame's patches (visual) and each time step's frequency patches
    (audio) this way; `layer.*` and `cls_token` map onto its `*_attn_agg` keys.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.layer = encoder_layer(dim, heads, mlp_ratio, dropout, eps=1e-6)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        # A copy, not a view: a view would keep the whole (B, 1 + N, D) output alive wherever
        # the result is saved for the backward pass (e.g. as the input of the projection).
        return self.layer(torch.cat((cls, tokens), dim=1))[:, 0].contiguous()
