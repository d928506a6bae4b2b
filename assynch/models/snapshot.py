"""The snapshot model (Synchformer-style): one window in, 21 offset logits out.

    video (B, S, 16, 3, H, W) -> visual encoder -> (B, S, 8, Dv) -> visual_proj -+
    audio (B, S, n_mels, T)    -> audio encoder  -> (B, S, 6, Da) -> audio_proj  -+
    -> sync transformer over [OFF, S*8 visual, MOD, S*6 audio] (learned positions,
       per-modality LayerNorm) -> head(OFF)

The streaming models reuse every part of it; `SyncTransformer` takes extra tokens after OFF so
that StreamSync's latent token and AS-Synchformer's queries can ride along.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from assynch.config import AssynchConfig, ConfigError, HeadConfig
from assynch.models.encoders import AudioEncoder, VisualEncoder
from assynch.models.layers import encoder_layer, init_vit_weights
from assynch.models.losses import info_nce


class SyncTransformer(nn.Module):
    """Synchformer's GlobalTransformer: [OFF, *extra, visual, MOD, audio] -> hidden states."""

    def __init__(
        self,
        config: HeadConfig,
        visual_tokens: int,
        audio_tokens: int,
        num_classes: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if config.dim % config.heads:
            raise ConfigError(
                f"model.sync.dim ({config.dim}) must be divisible by model.sync.heads "
                f"({config.heads})"
            )
        dim = config.dim
        self.visual_tokens, self.audio_tokens = visual_tokens, audio_tokens
        self.visual_norm = nn.LayerNorm(dim)
        self.audio_norm = nn.LayerNorm(dim)
        self.off_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.mod_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 2 + visual_tokens + audio_tokens, dim))
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            encoder_layer(dim, config.heads, config.mlp_ratio, dropout) for _ in range(config.depth)
        )
        self.final_norm = nn.LayerNorm(dim)
        self.off_head = nn.Linear(dim, num_classes)
        for parameter in (self.off_token, self.mod_token, self.pos_embed):
            nn.init.normal_(parameter, std=0.02)
        self.apply(init_vit_weights)

    def forward(
        self, visual: torch.Tensor, audio: torch.Tensor, extra: torch.Tensor | None = None
    ) -> torch.Tensor:
        """visual (B, Nv, D), audio (B, Na, D), extra (B, E, D) -> hidden (B, 2+E+Nv+Na, D).

        Layout of the result: [OFF, extra..., visual..., MOD, audio...]. Extra tokens get no
        position here: the caller adds its own.
        """
        batch, mod_at = visual.shape[0], 1 + self.visual_tokens
        position = self.pos_embed
        off = self.off_token.expand(batch, -1, -1) + position[:, :1]
        visual = self.visual_norm(visual) + position[:, 1:mod_at]
        mod = self.mod_token.expand(batch, -1, -1) + position[:, mod_at : mod_at + 1]
        audio = self.audio_norm(audio) + position[:, mod_at + 1 :]
        parts = [off] + ([extra] if extra is not None else []) + [visual, mod, audio]
        x = self.drop(torch.cat(parts, dim=1))
        for block in self.blocks:
            x = block(x)
        return self.final_norm(x)


class SnapshotModel(nn.Module):
    """Encoders + projections + sync transformer: one window -> offset logits."""

    def __init__(self, config: AssynchConfig) -> None:
        super().__init__()
        model, time = config.model, config.time
        self.segments = time.segments_per_window
        self.segment_frames = time.segment_frames
        self.crop = config.video.crop
        self.n_mels, self.mel_frames = config.audio.n_mels, config.audio.segment_mel_frames
        self.num_classes = time.num_offset_classes
        self.visual_encoder = VisualEncoder(
            model.visual_encoder, time.segment_frames, config.video.crop, model.dropout
        )
        self.audio_encoder = AudioEncoder(
            model.audio_encoder, config.audio.n_mels, config.audio.segment_mel_frames,
            model.dropout,
        )
        dim = model.sync.dim
        self.visual_proj = nn.Linear(model.visual_encoder.dim, dim)
        self.audio_proj = nn.Linear(model.audio_encoder.dim, dim)
        self.visual_tokens = self.segments * model.visual_encoder.out_tokens
        self.audio_tokens = self.segments * model.audio_encoder.out_tokens
        self.sync = SyncTransformer(
            model.sync, self.visual_tokens, self.audio_tokens, self.num_classes, model.dropout
        )
        # Stage-1 segment-level contrastive pre-training: CLIP's learnable log inverse temperature.
        self.segment_logit_scale = nn.Parameter(
            torch.tensor(math.log(1.0 / model.contrastive_temperature))
        )
        init_vit_weights(self.visual_proj)
        init_vit_weights(self.audio_proj)

    @property
    def dim(self) -> int:
        return self.sync.off_head.in_features

    def check_inputs(self, video: torch.Tensor, audio: torch.Tensor, leading: int) -> None:
        """Raise a clear error unless the inputs have `leading` batch dims and fit the config."""
        video_tail = (self.segments, self.segment_frames, 3, self.crop, self.crop)
        audio_tail = (self.segments, self.n_mels, self.mel_frames)
        names = ("B", "W")[:leading]
        problems = []
        if video.dim() != leading + 5 or tuple(video.shape[leading:]) != video_tail:
            problems.append(f"video must be ({', '.join(names)}, S, frames, 3, H, W) = "
                            f"(..., {', '.join(map(str, video_tail))}), got {tuple(video.shape)}")
        if audio.dim() != leading + 3 or tuple(audio.shape[leading:]) != audio_tail:
            problems.append(f"audio must be ({', '.join(names)}, S, n_mels, mel_frames) = "
                            f"(..., {', '.join(map(str, audio_tail))}), got {tuple(audio.shape)}")
        if not problems and video.shape[:leading] != audio.shape[:leading]:
            problems.append(f"video and audio disagree on the leading dims: "
                            f"{tuple(video.shape[:leading])} vs {tuple(audio.shape[:leading])}")
        if problems:
            raise ValueError(
                "model input does not match the config: " + "; ".join(problems)
                + ". Build inputs with assynch.samples.model_inputs."
                "stream_sample_to_model_inputs and the same config (time.segments_per_window, "
                "video.crop, audio.n_mels)."
            )

    def encode_segments(
        self, video: torch.Tensor, audio: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, S, ...) windows -> encoder features (N, S, 8, Dv) and (N, S, 6, Da)."""
        count, segments = video.shape[:2]
        visual = self.visual_encoder(video.flatten(0, 1))
        audible = self.audio_encoder(audio.flatten(0, 1))
        return (
            visual.view(count, segments, *visual.shape[1:]),
            audible.view(count, segments, *audible.shape[1:]),
        )

    def dense_tokens(
        self, video: torch.Tensor, audio: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, S, ...) windows -> projected dense segment tokens (N, S*8, D) and (N, S*6, D)."""
        visual, audible = self.encode_segments(video, audio)
        return self.visual_proj(visual.flatten(1, 2)), self.audio_proj(audible.flatten(1, 2))

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """One window per row: video (N, S, 16, 3, H, W), audio (N, S, n_mels, T) -> (N, 21)."""
        self.check_inputs(video, audio, leading=1)
        visual, audible = self.dense_tokens(video, audio)
        return self.sync.off_head(self.sync(visual, audible)[:, 0])

    def segment_contrastive_loss(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Stage-1 pre-training: InfoNCE between the audio and visual embeddings of each segment.

        A segment's embedding is the mean of its projected encoder tokens, L2-normalised. Every
        other segment in the batch (same window, other windows, other streams) is a negative. The
        temperature is learned (`segment_logit_scale`). Accepts (N, S, ...) windows.
        """
        self.check_inputs(video, audio, leading=1)
        visual, audible = self.encode_segments(video, audio)
        visual = F.normalize(self.visual_proj(visual).mean(dim=2).flatten(0, 1), dim=-1)
        audible = F.normalize(self.audio_proj(audible).mean(dim=2).flatten(0, 1), dim=-1)
        scale = self.segment_logit_scale.exp().clamp(max=100.0)
        positives = torch.arange(visual.shape[0], device=visual.device)
        visual_to_audio = info_nce(visual, audible, positives, scale)
        return 0.5 * (visual_to_audio + info_nce(audible, visual, positives, scale))
