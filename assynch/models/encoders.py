"""The two segment encoders of the snapshot model (Synchformer's feature extractors).

Audio: an AST-like ViT over one segment's log-mel, then one token per time patch (its frequency
patches pooled by a CLS encoder layer): 6 tokens for a 66-frame segment with AST's 16x16 patches
at stride 10. Visual: a Motionformer-like ViT with divided space-time attention over one segment's
16 frames in 2x16x16 tubelets, then one token per tubelet step (its patches pooled the same way):
8 tokens. With `stem: conv` the visual encoder embeds each tubelet with early convolutions over
its frames and two frames of context on both sides instead of one linear map (`ConvStem`).
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
        if config.stem != "tubelet":
            raise ConfigError(
                f"model.audio_encoder.stem is {config.stem!r}; the convolutional stem is for the "
                "visual encoder only: remove model.audio_encoder.stem"
            )
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


STEM_CONTEXT_FRAMES = 2  # frames the conv stem sees on each side of a tubelet


class ConvStem(nn.Module):
    """Early convolutions in place of the tubelet embedding (as in Xiao et al. 2021, "Early
    Convolutions Help Transformers See Better"), for objects smaller than a 16 px patch.

    (N, frames, 3, H, W) -> (N, steps * patches, dim), time-major like the tubelet embedding.
    Each tubelet step sees its `tubelet` frames plus `STEM_CONTEXT_FRAMES` on each side (edge
    frames repeated at the segment's ends), as each frame's difference from the stack's mean
    (where and how things move: a contact or a reversal is a change of that motion) beside the
    stack's mean (what is there). A 3x3 convolution at full resolution, stride-2 convolutions
    down to the patch grid, the last one to `dim`.
    """

    def __init__(self, dim: int, channels: int, tubelet: int, patch: int) -> None:
        super().__init__()
        if patch < 2 or patch & (patch - 1):
            raise ConfigError(
                f"model.visual_encoder.patch_size ({patch}) must be a power of two >= 2 with "
                "stem: conv (its stride-2 convolutions halve the frame down to the patch grid)"
            )
        self.tubelet, self.stack = tubelet, tubelet + 2 * STEM_CONTEXT_FRAMES
        layers: list[nn.Module] = [nn.Conv2d(3 * (self.stack + 1), channels, 3, padding=1)]
        for _ in range(patch.bit_length() - 2):  # halvings before the last one
            layers += [nn.GELU(), nn.Conv2d(channels, channels, 3, stride=2, padding=1)]
        layers += [nn.GELU(), nn.Conv2d(channels, dim, 3, stride=2, padding=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        count, context = video.shape[0], STEM_CONTEXT_FRAMES
        padded = torch.cat(
            (video[:, :1].expand(-1, context, -1, -1, -1), video,
             video[:, -1:].expand(-1, context, -1, -1, -1)), dim=1,
        )
        # (N, steps, 3, H, W, stack): each step's frames with their context
        stacks = padded.unfold(1, self.stack, self.tubelet)
        mean = stacks.mean(dim=-1, keepdim=True)
        x = torch.cat((stacks - mean, mean), dim=-1).movedim(-1, 2)  # (N, steps, stack+1, 3, H, W)
        steps = x.shape[1]
        x = self.layers(x.flatten(0, 1).flatten(1, 2))  # (N * steps, dim, h, w)
        return x.flatten(2).transpose(1, 2).reshape(count, steps * x.shape[-1] * x.shape[-2], -1)


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
        self.stem = config.stem
        if config.stem == "conv":
            self.conv_stem = ConvStem(dim, config.stem_channels, tubelet, patch)
        else:
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

    def patch_tokens(self, video: torch.Tensor) -> torch.Tensor:
        """(N, frames, 3, H, W) -> (N, steps, patches, dim): every patch's token after the
        blocks and the final LayerNorm, before each step's patches are pooled."""
        count = video.shape[0]
        if self.stem == "conv":
            x = self.conv_stem(video)
        else:
            x = self.patch_embed_3d(video.transpose(1, 2)).flatten(2).transpose(1, 2)  # time-major
        position = self.pos_embed[:, 1:].repeat(1, self.steps, 1) + (
            self.temp_embed.repeat_interleave(self.patches, dim=1)
        )
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(count, -1, -1)
        x = torch.cat((cls, x + position), dim=1)
        x = run_blocks(self.blocks, x, self.checkpointing, frames=self.steps)
        return self.norm(x)[:, 1:].view(count, self.steps, self.patches, -1)

    def pool(self, patches: torch.Tensor) -> torch.Tensor:
        """(N, steps, patches, dim) -> (N, steps, dim): one token per step (CLS pooling)."""
        count = patches.shape[0]
        return self.spatial_pool(patches.flatten(0, 1)).view(count, self.steps, -1)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.pool(self.patch_tokens(video))
