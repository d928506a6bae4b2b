"""The two segment encoders of the snapshot model (Synchformer's feature extractors).

Audio: an AST-like ViT over one segment's log-mel, then one token per time patch (its frequency
patches pooled by a CLS encoder layer): 6 tokens for a 66-frame segment with AST's 16x16 patches
at stride 10. Visual: a Motionformer-like ViT with divided space-time attention over one segment's
16 frames in 2x16x16 tubelets, then one token per tubelet step (its patches pooled the same way):
8 tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from assynch.config import ConfigError, EncoderConfig
from assynch.models.layers import (
    Block,
    ClsPooling,
    DividedSpaceTimeBlock,
    drop_path_rates,
    init_vit_weights,
    run_blocks,
)


def _check_heads(name: str, config: EncoderConfig) -> None:
    if config.dim % config.heads:
        raise ConfigError(
            f"model.{name}.dim ({config.dim}) must be divisible by model.{name}.heads "
            f"({config.heads}); pick heads that divide dim"
        )


class AudioEncoder(nn.Module):
    """(N, n_mels, mel_frames) log-mel segments -> (N, out_tokens, dim)."""

    def __init__(
        self,
        config: EncoderConfig,
        n_mels: int,
        mel_frames: int,
        dropout: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        _check_heads("audio_encoder", config)
        patch, stride = config.patch_size, config.patch_stride or config.patch_size
        if patch > min(n_mels, mel_frames):
            raise ConfigError(
                f"model.audio_encoder.patch_size ({patch}) is larger than a segment's log-mel "
                f"({n_mels} bins x {mel_frames} frames); use a smaller patch"
            )
        self.freq_patches = (n_mels - patch) // stride + 1
        self.time_patches = (mel_frames - patch) // stride + 1
        if self.time_patches != config.out_tokens:
            raise ConfigError(
                f"model.audio_encoder: a segment of {mel_frames} mel frames gives "
                f"{self.time_patches} time patches with patch_size {patch} and patch_stride "
                f"{stride}, but out_tokens is {config.out_tokens}; set patch_stride: 10 "
                f"(AST) or out_tokens: {self.time_patches}"
            )
        dim = config.dim
        self.n_mels, self.mel_frames = n_mels, mel_frames
        self.patch_embed = nn.Conv2d(1, dim, kernel_size=patch, stride=stride)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim))
        patches = self.freq_patches * self.time_patches
        self.pos_embed = nn.Parameter(torch.zeros(1, 2 + patches, dim))
        self.blocks = nn.ModuleList(
            Block(dim, config.heads, config.mlp_ratio, dropout, rate)
            for rate in drop_path_rates(config.depth, drop_path)
        )
        self.checkpointing = False
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.freq_pool = ClsPooling(dim, config.heads, config.mlp_ratio, dropout)
        for parameter in (self.cls_token, self.dist_token, self.pos_embed):
            nn.init.trunc_normal_(parameter, std=0.02)
        self.blocks.apply(init_vit_weights)

    def head_modules(self) -> list[nn.Module]:
        """The modules after the last block (trainable in the `partial` regime)."""
        return [self.norm, self.freq_pool]

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        count = mel.shape[0]
        x = self.patch_embed(mel.unsqueeze(1)).flatten(2).transpose(1, 2)  # frequency-major
        aux = torch.cat((self.cls_token, self.dist_token), dim=1).expand(count, -1, -1)
        x = torch.cat((aux, x), dim=1) + self.pos_embed
        x = run_blocks(self.blocks, x, self.checkpointing)
        x = self.norm(x)[:, 2:]
        dim = x.shape[-1]
        x = x.reshape(count, self.freq_patches, self.time_patches, dim).transpose(1, 2)
        x = self.freq_pool(x.reshape(count * self.time_patches, self.freq_patches, dim))
        return x.view(count, self.time_patches, dim)


class VisualEncoder(nn.Module):
    """(N, frames, 3, crop, crop) segments -> (N, frames / tubelet_frames, dim)."""

    def __init__(
        self,
        config: EncoderConfig,
        frames: int,
        crop: int,
        dropout: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        _check_heads("visual_encoder", config)
        tubelet, patch = config.tubelet_frames, config.patch_size
        if frames % tubelet:
            raise ConfigError(
                f"model.visual_encoder.tubelet_frames ({tubelet}) must divide the "
                f"{frames} frames of a segment (time.segment_frames)"
            )
        if crop % patch:
            raise ConfigError(
                f"model.visual_encoder.patch_size ({patch}) must divide video.crop ({crop})"
            )
        self.steps = frames // tubelet
        if self.steps != config.out_tokens:
            raise ConfigError(
                f"model.visual_encoder: {frames} frames in tubelets of {tubelet} give "
                f"{self.steps} tokens per segment, but out_tokens is {config.out_tokens}; set "
                f"out_tokens: {self.steps} or change tubelet_frames"
            )
        self.frames, self.crop = frames, crop
        self.patches = (crop // patch) ** 2
        dim = config.dim
        self.patch_embed_3d = nn.Conv3d(
            3, dim, kernel_size=(tubelet, patch, patch), stride=(tubelet, patch, patch)
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.patches, dim))
        self.temp_embed = nn.Parameter(torch.zeros(1, self.steps, dim))
        self.blocks = nn.ModuleList(
            DividedSpaceTimeBlock(dim, config.heads, config.mlp_ratio, dropout, rate)
            for rate in drop_path_rates(config.depth, drop_path)
        )
        self.checkpointing = False
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.spatial_pool = ClsPooling(dim, config.heads, config.mlp_ratio, dropout)
        for parameter in (self.cls_token, self.pos_embed, self.temp_embed):
            nn.init.trunc_normal_(parameter, std=0.02)
        self.blocks.apply(init_vit_weights)

    def head_modules(self) -> list[nn.Module]:
        """The modules after the last block (trainable in the `partial` regime)."""
        return [self.norm, self.spatial_pool]

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        count = video.shape[0]
        x = self.patch_embed_3d(video.transpose(1, 2)).flatten(2).transpose(1, 2)  # time-major
        position = self.pos_embed[:, 1:].repeat(1, self.steps, 1) + (
            self.temp_embed.repeat_interleave(self.patches, dim=1)
        )
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(count, -1, -1)
        x = torch.cat((cls, x + position), dim=1)
        x = run_blocks(self.blocks, x, self.checkpointing, frames=self.steps)
        x = self.norm(x)[:, 1:]
        x = self.spatial_pool(x.reshape(count * self.steps, self.patches, x.shape[-1]))
        return x.view(count, self.steps, -1)
