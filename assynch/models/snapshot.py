"""The snapshot model (Synchformer-style): one window in, 21 offset logits out.

    video (B, S, 16, 3, H, W) -> visual encoder -> (B, S, 8, Dv) -> visual_proj -+
    audio (B, S, n_mels, T)    -> audio encoder  -> (B, S, 6, Da) -> audio_proj  -+
    -> sync transformer over [OFF, S*8 visual, MOD, S*6 audio] (learned positions,
       per-modality LayerNorm) -> head(OFF) (+ lag-correlation evidence, below)

Lag correlation (`model.lag_correlation`, docs/MODELS.md): besides reading OFF, the sync
transformer scores each offset class directly, SyncNet-style, by the mean similarity of the
visual and audio tokens that lie that class's offset apart in time (a fixed kernel over the
tokens' time stamps, learned projections). The evidence vector is added to OFF's input and to
the logits. It is what lets a sync module trained from scratch leave the chance plateau within
a CPU budget (docs/BENCHMARKS.md, "Quality benchmark"); with it off, the module is Synchformer's.

The streaming models reuse every part of it; `SyncTransformer` takes extra tokens after OFF so
that StreamSync's latent token and AS-Synchformer's queries can ride along.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from assynch.config import AssynchConfig, ConfigError, HeadConfig
from assynch.models.encoders import AudioEncoder, VisualEncoder
from assynch.models.layers import encoder_layer, init_vit_weights
from assynch.models.losses import bounded_logit_scale, info_nce, logit_scale_parameter
from assynch.models.visual_onset import onset_targets, step_onset_strength, two_path_onset_loss
from assynch.samples.offsets import offset_grid_sec


class SegmentFeatures(NamedTuple):
    """What the two encoders give for some windows (leading dims L, e.g. (B, W) or (B,)):
    visual (*L, S, 8, Dv) and audio (*L, S, 6, Da), before the projections.

    With frozen encoders these are all a model needs from a window, so they can be computed once
    and cached (`StreamingModel.forward_features` / `advance_features` take them).
    """

    visual: torch.Tensor
    audio: torch.Tensor


def token_times(config: AssynchConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Seconds from the window start of each dense visual and audio token (segment-major)."""
    time, model, audio = config.time, config.model, config.audio
    segment_starts = torch.arange(time.segments_per_window) * time.segment_stride_sec
    visual = model.visual_encoder
    tubelet_sec = visual.tubelet_frames / time.fps
    visual_offsets = (torch.arange(visual.out_tokens) + 0.5) * tubelet_sec
    mel_sec = audio.hop_length / time.sample_rate
    sound = model.audio_encoder
    stride = sound.patch_stride or sound.patch_size
    audio_offsets = (torch.arange(sound.out_tokens) * stride + sound.patch_size / 2) * mel_sec
    return (
        (segment_starts[:, None] + visual_offsets[None, :]).flatten(),
        (segment_starts[:, None] + audio_offsets[None, :]).flatten(),
    )


def lag_kernel(config: AssynchConfig) -> torch.Tensor:
    """(C, Nv, Na) weights: how much the pair (visual token i, audio token j) speaks for offset
    class c, each class's weights summing to 1.

    With offset d (positive: audio early), an event at window time t is seen at t and heard in
    the window's audio at t - d, so class c collects the pairs whose audio-minus-visual time is
    near -d_c: a triangular kernel one offset step wide at its base, so neighbouring classes
    split a pair between them and every lag inside the grid counts once. A class that no pair
    reaches (a window shorter than the largest offset) keeps all-zero weights: no evidence.
    """
    time = config.time
    visual_times, audio_times = token_times(config)
    lag = (audio_times[None, :] - visual_times[:, None]).double()
    # On lag's device: under torch.device("meta") (cost estimates) a CPU grid would not mix.
    offsets = torch.as_tensor(offset_grid_sec(time), dtype=torch.float64, device=lag.device)
    weights = (1 - (lag[None] + offsets[:, None, None]).abs() / time.offset_step_sec).clamp(min=0)
    total = weights.sum(dim=(1, 2), keepdim=True).clamp(min=1e-12)  # 0 for unreached classes
    return (weights / total).float()


class SyncTransformer(nn.Module):
    """Synchformer's GlobalTransformer: [OFF, *extra, visual, MOD, audio] -> hidden states, and
    `predict`: the same plus offset logits (OFF's head plus, with a `lag_kernel`, the
    lag-correlation evidence)."""

    def __init__(
        self,
        config: HeadConfig,
        visual_tokens: int,
        audio_tokens: int,
        num_classes: int,
        dropout: float = 0.0,
        lag_kernel: torch.Tensor | None = None,
        tokens_per_segment: tuple[int, int] = (8, 6),
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
        self.lag_correlation = lag_kernel is not None
        if lag_kernel is not None:
            expected = (num_classes, visual_tokens, audio_tokens)
            if tuple(lag_kernel.shape) != expected:
                raise ValueError(f"lag_kernel must be {expected}, got {tuple(lag_kernel.shape)}")
            self.register_buffer("lag_kernel", lag_kernel, persistent=False)
            self.tokens_per_segment = tokens_per_segment
            self.lag_visual = nn.Sequential(nn.LayerNorm(2 * dim), nn.Linear(2 * dim, dim))
            self.lag_audio = nn.Sequential(nn.LayerNorm(2 * dim), nn.Linear(2 * dim, dim))
            self.lag_embed = nn.Linear(num_classes, dim)
            self.lag_gain = nn.Parameter(torch.tensor(1.0))
        self.apply(init_vit_weights)
        # Synchformer draws OFF, MOD and the positions from N(0, 1) (torch.randn), the scale of
        # the LayerNormed tokens they sit beside; its init_weights leaves them alone.
        for parameter in (self.off_token, self.mod_token, self.pos_embed):
            nn.init.normal_(parameter, std=1.0)
        if self.lag_correlation:  # unit-gain projections: similarities of order 1 from the start
            for projection in (self.lag_visual[1], self.lag_audio[1]):
                nn.init.normal_(projection.weight, std=(2 * dim) ** -0.5)

    def neutralise_lag_correlation(self) -> None:
        """Make the lag-correlation path add nothing (gain and OFF embedding at 0): the module
        then predicts exactly as Synchformer's, e.g. right after loading its weights."""
        if self.lag_correlation:
            with torch.no_grad():
                self.lag_gain.zero_()
                self.lag_embed.weight.zero_()
                self.lag_embed.bias.zero_()

    @staticmethod
    def with_change(tokens: torch.Tensor, per_segment: int) -> torch.Tensor:
        """(B, S*T, D) segment-major tokens -> (B, S*T, 2D): each token beside its change from
        the token before it in the same segment (zero for a segment's first token). Events are
        changes: on frozen random encoders the change is what lines up across the modalities
        (docs/MODELS.md, "Lag correlation")."""
        batch, count, dim = tokens.shape
        grid = tokens.view(batch, count // per_segment, per_segment, dim)
        change = torch.cat(
            (torch.zeros_like(grid[:, :, :1]), grid[:, :, 1:] - grid[:, :, :-1]), dim=2
        )
        return torch.cat((tokens, change.view(batch, count, dim)), dim=-1)

    def lag_evidence(self, visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor | None:
        """visual (B, Nv, D), audio (B, Na, D) -> (B, C): per offset class, the kernel-weighted
        mean similarity of the visual and audio tokens (with their changes) that far apart
        (None when off)."""
        if not self.lag_correlation:
            return None
        visual_per_segment, audio_per_segment = self.tokens_per_segment
        visual = self.lag_visual(self.with_change(visual, visual_per_segment))
        audio = self.lag_audio(self.with_change(audio, audio_per_segment))
        similarity = torch.einsum("bid,bjd->bij", visual, audio) / visual.shape[-1] ** 0.5
        return torch.einsum("bij,cij->bc", similarity, self.lag_kernel.to(similarity.dtype))

    def predict(
        self,
        visual: torch.Tensor,
        audio: torch.Tensor,
        extra: torch.Tensor | None = None,
        extra_valid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Like `forward`, plus the offset logits (B, C): OFF's head, plus the lag-correlation
        evidence times a learned gain when the module has a lag kernel."""
        evidence = self.lag_evidence(visual, audio)
        hidden = self._run(visual, audio, extra, extra_valid, evidence)
        logits = self.off_head(hidden[:, 0])
        if evidence is not None:
            logits = logits + self.lag_gain * evidence
        return hidden, logits

    def forward(
        self,
        visual: torch.Tensor,
        audio: torch.Tensor,
        extra: torch.Tensor | None = None,
        extra_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """visual (B, Nv, D), audio (B, Na, D), extra (B, E, D) -> hidden (B, 2+E+Nv+Na, D).

        Layout of the result: [OFF, extra..., visual..., MOD, audio...]. Extra tokens get no
        position here: the caller adds its own. `extra_valid` (B, E) masks extra tokens out as
        attention keys (False: no token attends to it); their own outputs are then meaningless.
        With every extra token masked, OFF, visual, MOD and audio come out as without extras.
        """
        return self._run(visual, audio, extra, extra_valid, self.lag_evidence(visual, audio))

    def _run(
        self,
        visual: torch.Tensor,
        audio: torch.Tensor,
        extra: torch.Tensor | None,
        extra_valid: torch.Tensor | None,
        evidence: torch.Tensor | None,
    ) -> torch.Tensor:
        batch, mod_at = visual.shape[0], 1 + self.visual_tokens
        position = self.pos_embed
        off = self.off_token.expand(batch, -1, -1) + position[:, :1]
        if evidence is not None:
            off = off + self.lag_embed(evidence).unsqueeze(1)
        visual = self.visual_norm(visual) + position[:, 1:mod_at]
        mod = self.mod_token.expand(batch, -1, -1) + position[:, mod_at : mod_at + 1]
        audio = self.audio_norm(audio) + position[:, mod_at + 1 :]
        parts = [off] + ([extra] if extra is not None else []) + [visual, mod, audio]
        x = self.drop(torch.cat(parts, dim=1))
        ignore = None
        if extra is not None and extra_valid is not None:
            present = extra_valid.new_ones(batch, x.shape[1])
            present[:, 1 : 1 + extra.shape[1]] = extra_valid
            ignore = ~present
        for block in self.blocks:
            x = block(x, src_key_padding_mask=ignore)
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
            model.visual_encoder, time.segment_frames, config.video.crop, model.dropout,
            model.drop_path,
        )
        self.audio_encoder = AudioEncoder(
            model.audio_encoder, config.audio.n_mels, config.audio.segment_mel_frames,
            model.dropout, model.audio_drop_path,
        )
        self.visual_encoder.checkpointing = model.activation_checkpointing
        self.audio_encoder.checkpointing = model.activation_checkpointing
        self.encode_chunk_windows = model.encode_chunk_windows
        dim = model.sync.dim
        self.visual_proj = nn.Linear(model.visual_encoder.dim, dim)
        self.audio_proj = nn.Linear(model.audio_encoder.dim, dim)
        self.visual_tokens = self.segments * model.visual_encoder.out_tokens
        self.audio_tokens = self.segments * model.audio_encoder.out_tokens
        self.sync = SyncTransformer(
            model.sync, self.visual_tokens, self.audio_tokens, self.num_classes,
            model.sync_dropout, lag_kernel(config) if model.lag_correlation else None,
            (model.visual_encoder.out_tokens, model.audio_encoder.out_tokens),
        )
        # Stage-1 segment-level contrastive pre-training: a learnable inverse temperature, stored
        # unbounded and mapped smoothly into (1/100, 100) by `bounded_logit_scale`.
        self.segment_logit_scale = nn.Parameter(
            logit_scale_parameter(model.contrastive_temperature)
        )
        # Stage-1 visual onset pre-training (`train.objective: visual_onset`): a linear probe
        # from each tubelet step's visual token to "the in-sync audio has an onset here".
        # Frozen unless that stage 1 runs (the training loop unfreezes it), so DDP and the
        # encoder regimes see no parameter that the offsets objective leaves unused.
        # Initialised from its own generator, so every other weight of a seeded model is what it
        # was before this probe existed; not at zero, where the encoder would get no gradient
        # until the probe itself had moved.
        self.visual_onset_head = nn.utils.skip_init(nn.Linear, model.visual_encoder.dim, 1)
        nn.init.normal_(self.visual_onset_head.weight, std=0.5 / model.visual_encoder.dim**0.5,
                        generator=torch.Generator().manual_seed(0))
        nn.init.zeros_(self.visual_onset_head.bias)
        self.visual_onset_head.requires_grad_(False)
        self.mel_per_step = round(
            model.visual_encoder.tubelet_frames / time.fps * time.sample_rate
            / config.audio.hop_length
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

    def _encode(self, encoder: nn.Module, windows: torch.Tensor, leading: int) -> torch.Tensor:
        """(*L, S, ...) windows with `leading` dims L -> (*L, S, tokens, D), `encode_chunk_windows`
        windows per call.

        A frozen encoder runs under `no_grad` (it saves nothing for the backward pass). With
        activation checkpointing, chunks also bound the recomputation peak of the backward pass
        to one chunk's block.
        """
        outer = windows.shape[: leading + 1]
        flat = windows.flatten(0, leading - 1) if leading > 1 else windows
        count = flat.shape[0]
        step = self.encode_chunk_windows or count
        trainable = any(p.requires_grad for p in encoder.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and trainable):
            parts = [
                encoder(flat[start : start + step].flatten(0, 1))
                for start in range(0, count, step)
            ]
        features = torch.cat(parts) if len(parts) > 1 else parts[0]
        return features.view(*outer, *features.shape[1:])

    def encode_video(self, video: torch.Tensor, leading: int = 1) -> torch.Tensor:
        """(*L, S, frames, 3, H, W) -> visual encoder features (*L, S, 8, Dv)."""
        return self._encode(self.visual_encoder, video, leading)

    def encode_audio(self, audio: torch.Tensor, leading: int = 1) -> torch.Tensor:
        """(*L, S, n_mels, T) -> audio encoder features (*L, S, 6, Da)."""
        return self._encode(self.audio_encoder, audio, leading)

    def encode(
        self, video: torch.Tensor, audio: torch.Tensor, leading: int = 1
    ) -> SegmentFeatures:
        """Windows with `leading` batch dims -> their encoder features (checked inputs)."""
        self.check_inputs(video, audio, leading=leading)
        return SegmentFeatures(
            self.encode_video(video, leading), self.encode_audio(audio, leading)
        )

    def check_features(self, features: SegmentFeatures, leading: int) -> None:
        """Raise a clear error unless `features` are this model's encoder outputs for windows
        with `leading` batch dims (e.g. a feature cache written by another config)."""
        visual, audio = features
        expected = (
            (self.segments, self.visual_encoder.steps, self.visual_proj.in_features),
            (self.segments, self.audio_encoder.time_patches, self.audio_proj.in_features),
        )
        for name, value, tail in (("visual", visual, expected[0]), ("audio", audio, expected[1])):
            if value.dim() != leading + 3 or tuple(value.shape[leading:]) != tail:
                raise ValueError(
                    f"{name} features must be (..., {', '.join(map(str, tail))}) with {leading} "
                    f"leading dims (the encoder outputs of this config), got "
                    f"{tuple(value.shape)}; were they made with another model config?"
                )
        if visual.shape[:leading] != audio.shape[:leading]:
            raise ValueError(
                f"visual and audio features disagree on the leading dims: "
                f"{tuple(visual.shape[:leading])} vs {tuple(audio.shape[:leading])}"
            )

    def project_visual(self, visual: torch.Tensor) -> torch.Tensor:
        """Visual encoder features (..., S, 8, Dv) -> dense sync tokens (..., S*8, D)."""
        return self.visual_proj(visual.flatten(-3, -2))

    def project_audio(self, audio: torch.Tensor) -> torch.Tensor:
        """Audio encoder features (..., S, 6, Da) -> dense sync tokens (..., S*6, D)."""
        return self.audio_proj(audio.flatten(-3, -2))

    def encode_segments(
        self, video: torch.Tensor, audio: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, S, ...) windows -> encoder features (N, S, 8, Dv) and (N, S, 6, Da)."""
        return self.encode_video(video), self.encode_audio(audio)

    def visual_dense_tokens(self, video: torch.Tensor) -> torch.Tensor:
        """(N, S, frames, 3, H, W) -> projected dense visual tokens (N, S*8, D)."""
        return self.project_visual(self.encode_video(video))

    def audio_dense_tokens(self, audio: torch.Tensor) -> torch.Tensor:
        """(N, S, n_mels, T) -> projected dense audio tokens (N, S*6, D)."""
        return self.project_audio(self.encode_audio(audio))

    def dense_tokens(
        self, video: torch.Tensor, audio: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, S, ...) windows -> projected dense segment tokens (N, S*8, D) and (N, S*6, D)."""
        return self.visual_dense_tokens(video), self.audio_dense_tokens(audio)

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """One window per row: video (N, S, 16, 3, H, W), audio (N, S, n_mels, T) -> (N, 21)."""
        self.check_inputs(video, audio, leading=1)
        visual, audible = self.dense_tokens(video, audio)
        return self.sync.predict(visual, audible)[1]

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
        scale = bounded_logit_scale(self.segment_logit_scale)
        positives = torch.arange(visual.shape[0], device=visual.device)
        visual_to_audio = info_nce(visual, audible, positives, scale)
        return 0.5 * (visual_to_audio + info_nce(audible, visual, positives, scale))

    def visual_onset_logits(self, segments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, frames, 3, H, W) segments -> logits of "the in-sync audio has an onset in this
        tubelet step", (M, steps) each: from the step's pooled token (what the models after the
        encoder read), and the largest over the step's patch tokens (where a small object is:
        the short path by which the encoder learns to find it; docs/TRAINING.md)."""
        patches = self.visual_encoder.patch_tokens(segments)  # (M, steps, patches, Dv)
        pooled = self.visual_onset_head(self.visual_encoder.pool(patches)).squeeze(-1)
        strongest = self.visual_onset_head(patches).squeeze(-1).amax(dim=-1)
        return pooled, strongest

    def visual_onset_targets(self, audio: torch.Tensor) -> torch.Tensor:
        """(N, S, n_mels, T) in-sync audio -> (N, S, steps) onset targets (0 or 1), normalised
        per window (`assynch.models.visual_onset`)."""
        return onset_targets(step_onset_strength(audio, self.visual_encoder.steps,
                                                 self.mel_per_step))

    def visual_onset_loss(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Stage-1 visual onset pre-training on (N, S, ...) in-sync windows: the weighted binary
        cross-entropy of both `visual_onset_logits` against the audio's onsets, averaged."""
        return self.visual_onset_outputs(video, audio)[0]

    def visual_onset_outputs(
        self, video: torch.Tensor, audio: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`visual_onset_loss`, with the pooled path's logits and the targets it was scored
        against, (N*S, steps) each (for the held-out AUC, `onset_score_counts`)."""
        self.check_inputs(video, audio, leading=1)
        targets = self.visual_onset_targets(audio).flatten(0, 1)
        pooled, strongest = self.visual_onset_logits(video.flatten(0, 1))
        return two_path_onset_loss(pooled, strongest, targets), pooled, targets
