"""AS-Synchformer: the snapshot module emits K streaming tokens per window; a streaming module reads
a bounded history of them and predicts the offset after each window.

Per window:
  1. the snapshot module (encoders + sync transformer) gives dense segment tokens for each
     modality and an OFF summary, exactly as in Synchformer (its weights load from there);
  2. K learned queries, shifted by the OFF summary and by what they read from the history ring,
     pool the visual and the audio dense tokens (history-aware selection, `TokenSelector`);
  3. the K visual and K audio picks are fused, together with the snapshot's own offset belief,
     into K streaming tokens that enter a ring of the last `history_windows` windows;
  4. the streaming module (a transformer encoder) reads the whole ring and predicts the offset.
A contrastive head embeds the visual and audio picks for the auxiliary InfoNCE loss.

The ring has a fixed size from the first window on (empty slots masked), so every step costs the
same.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from assynch.config import AssynchConfig, ConfigError
from assynch.models.layers import encoder_layer, init_vit_weights
from assynch.models.streaming import (
    StreamingModel,
    StreamOutput,
    StreamState,
    Window,
    WindowCode,
)


class TokenSelector(nn.Module):
    """K queries pool one modality's dense tokens; attention scores get two history-aware biases.

    - transitions: + g_t * (1 - cos(token, same token one segment earlier)): favours moments where
      the content changes (onsets, cuts) over static stretches;
    - redundancy: - g_r * max cos(key, key of any valid history token): suppresses content the
      streaming history already holds.
    g_t and g_r are learned, non-negative (softplus).
    """

    def __init__(self, dim: int, tokens_per_segment: int) -> None:
        super().__init__()
        self.tokens_per_segment = tokens_per_segment
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.transition_gain = nn.Parameter(torch.tensor(0.0))
        self.redundancy_gain = nn.Parameter(torch.tensor(0.0))

    def transition(self, dense: torch.Tensor) -> torch.Tensor:
        """(B, N, D) segment-major tokens -> (B, N) change from one segment earlier (0 at first)."""
        step = self.tokens_per_segment
        change = 1.0 - F.cosine_similarity(dense[:, step:], dense[:, :-step], dim=-1)
        return F.pad(change, (step, 0))

    @staticmethod
    def redundancy(
        keys: torch.Tensor, history_keys: torch.Tensor, history_valid: torch.Tensor
    ) -> torch.Tensor:
        """(B, N) highest cosine similarity to a valid history token (0 when none is valid)."""
        similarity = F.normalize(keys, dim=-1) @ F.normalize(history_keys, dim=-1).transpose(1, 2)
        similarity = similarity.masked_fill(~history_valid.unsqueeze(1), -1.0)
        return similarity.max(dim=-1).values.clamp(min=0.0)

    def forward(
        self,
        queries: torch.Tensor,
        dense: torch.Tensor,
        history: torch.Tensor,
        history_valid: torch.Tensor,
    ) -> torch.Tensor:
        """queries (B, K, D), dense (B, N, D), history (B, M, D) + valid (B, M) -> (B, K, D)."""
        keys = self.key(dense)
        scores = queries @ keys.transpose(1, 2) / math.sqrt(keys.shape[-1])
        bias = F.softplus(self.transition_gain) * self.transition(dense) - F.softplus(
            self.redundancy_gain
        ) * self.redundancy(keys, self.key(history), history_valid)
        weights = (scores + bias.unsqueeze(1)).softmax(dim=-1)
        return weights @ self.value(dense)


class ASSynchformer(StreamingModel):
    def __init__(self, config: AssynchConfig) -> None:
        super().__init__(config)
        model = config.model
        dim, classes = self.snapshot.dim, self.num_classes
        self.tokens_per_window = model.streaming_tokens
        self.history_windows = model.history_windows
        if model.streaming.dim % model.streaming.heads:
            raise ConfigError(
                f"model.streaming.dim ({model.streaming.dim}) must be divisible by "
                f"model.streaming.heads ({model.streaming.heads})"
            )

        # History-aware selection.
        self.queries = nn.Parameter(torch.zeros(1, self.tokens_per_window, dim))
        self.off_to_query = nn.Linear(dim, dim)
        self.query_norm = nn.LayerNorm(dim)
        self.history_position = nn.Parameter(torch.zeros(1, self.history_windows, 1, dim))
        self.null_memory = nn.Parameter(torch.zeros(1, 1, dim))
        self.history_attention = nn.MultiheadAttention(
            dim, model.sync.heads, dropout=model.dropout, batch_first=True
        )
        self.visual_selector = TokenSelector(dim, model.visual_encoder.out_tokens)
        self.audio_selector = TokenSelector(dim, model.audio_encoder.out_tokens)
        self.fuse = nn.Linear(2 * dim, dim)
        self.belief_embed = nn.Linear(classes, dim)
        self.fuse_norm = nn.LayerNorm(dim)

        # Contrastive head; the temperature is the snapshot's (shared with stage-1 pre-training).
        self.visual_contrastive = nn.Linear(dim, model.contrastive_dim)
        self.audio_contrastive = nn.Linear(dim, model.contrastive_dim)
        self.offset_shift = nn.Parameter(torch.zeros(classes, model.contrastive_dim))

        # Streaming module.
        stream = model.streaming
        self.stream_in = nn.Linear(dim, stream.dim)
        self.stream_cls = nn.Parameter(torch.zeros(1, 1, stream.dim))
        self.stream_position = nn.Parameter(
            torch.zeros(1, self.history_windows, self.tokens_per_window, stream.dim)
        )
        self.stream_blocks = nn.ModuleList(
            encoder_layer(stream.dim, stream.heads, stream.mlp_ratio, model.dropout)
            for _ in range(stream.depth)
        )
        self.stream_norm = nn.LayerNorm(stream.dim)
        self.stream_head = nn.Linear(stream.dim, classes)

        for parameter in (
            self.queries, self.history_position, self.null_memory, self.stream_cls,
            self.stream_position,
        ):
            nn.init.normal_(parameter, std=0.02)
        nn.init.normal_(self.offset_shift, std=0.1)
        for child_name, child in self.named_children():
            if child_name != "snapshot":
                child.apply(init_vit_weights)

    # -- state ---------------------------------------------------------------------------------

    def init_state(self, batch_size: int) -> StreamState:
        like = self._like()
        return {
            "tokens": like.new_zeros(
                batch_size, self.history_windows, self.tokens_per_window, like.shape[-1]
            ),
            "valid": torch.zeros(
                batch_size, self.history_windows, dtype=torch.bool, device=like.device
            ),
        }

    # -- one window ----------------------------------------------------------------------------

    def _select(
        self, hidden: torch.Tensor, state: StreamState
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sync-transformer output of one window (B, L, D) -> K visual and K audio picks."""
        batch, visual_tokens = hidden.shape[0], self.snapshot.visual_tokens
        off, visual, audio = (
            hidden[:, 0], hidden[:, 1 : 1 + visual_tokens], hidden[:, 2 + visual_tokens :]
        )
        history = state["tokens"].flatten(1, 2)  # (B, R*K, D)
        history_valid = state["valid"].repeat_interleave(self.tokens_per_window, dim=1)
        memory = torch.cat(
            (self.null_memory.expand(batch, -1, -1),
             (state["tokens"] + self.history_position).flatten(1, 2)),
            dim=1,
        )
        ignore = torch.cat((history_valid.new_zeros(batch, 1), ~history_valid), dim=1)
        queries = self.queries + self.off_to_query(off).unsqueeze(1)
        read, _ = self.history_attention(
            self.query_norm(queries), memory, memory, key_padding_mask=ignore, need_weights=False
        )
        queries = queries + read
        return (
            self.visual_selector(queries, visual, history, history_valid),
            self.audio_selector(queries, audio, history, history_valid),
        )

    def _predict(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The streaming module over the ring (B, R, K, D) with valid slots (B, R) -> logits."""
        batch = tokens.shape[0]
        x = (self.stream_in(tokens) + self.stream_position).flatten(1, 2)
        x = torch.cat((self.stream_cls.expand(batch, -1, -1), x), dim=1)
        ignore = torch.cat(
            (valid.new_zeros(batch, 1), ~valid.repeat_interleave(self.tokens_per_window, dim=1)),
            dim=1,
        )
        for block in self.stream_blocks:
            x = block(x, src_key_padding_mask=ignore)
        return self.stream_head(self.stream_norm(x[:, 0]))

    def _advance(
        self, hidden: torch.Tensor, state: StreamState
    ) -> tuple[torch.Tensor, StreamState, torch.Tensor, torch.Tensor]:
        visual_pick, audio_pick = self._select(hidden, state)
        belief = self.snapshot.sync.off_head(hidden[:, 0]).softmax(dim=-1)
        new_tokens = self.fuse_norm(
            self.fuse(torch.cat((visual_pick, audio_pick), dim=-1))
            + self.belief_embed(belief).unsqueeze(1)
        )
        valid = state["valid"]
        state = {
            "tokens": torch.cat((state["tokens"][:, 1:], new_tokens.unsqueeze(1)), dim=1),
            "valid": torch.cat((valid[:, 1:], valid.new_ones(valid.shape[0], 1)), dim=1),
        }
        return self._predict(state["tokens"], state["valid"]), state, visual_pick, audio_pick

    def encode_window(self, window: Window) -> WindowCode:
        visual, audio = self._window_dense_tokens(window)
        return (self.snapshot.sync(visual, audio),)

    def advance(self, code: WindowCode, state: StreamState) -> tuple[torch.Tensor, StreamState]:
        logits, state, _, _ = self._advance(code[0], state)
        return logits, state

    # -- whole streams -------------------------------------------------------------------------

    def contrastive_embeddings(
        self, visual_pick: torch.Tensor, audio_pick: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Picks (..., K, D) -> visual (..., P) and audio (..., C, P), one per offset hypothesis."""
        visual = F.normalize(self.visual_contrastive(visual_pick.mean(dim=-2)), dim=-1)
        audio = self.audio_contrastive(audio_pick.mean(dim=-2)).unsqueeze(-2) + self.offset_shift
        return visual, F.normalize(audio, dim=-1)

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> StreamOutput:
        visual, audible = self._stream_dense_tokens(video, audio)
        batch, windows = visual.shape[:2]
        hidden = self.snapshot.sync(visual.flatten(0, 1), audible.flatten(0, 1))
        hidden = hidden.view(batch, windows, *hidden.shape[1:])
        state = self.init_state(batch)
        logits, visual_picks, audio_picks = [], [], []
        for index in range(windows):
            window_logits, state, visual_pick, audio_pick = self._advance(hidden[:, index], state)
            logits.append(window_logits)
            visual_picks.append(visual_pick)
            audio_picks.append(audio_pick)
        visual_embedding, audio_embedding = self.contrastive_embeddings(
            torch.stack(visual_picks, dim=1), torch.stack(audio_picks, dim=1)
        )
        return StreamOutput(
            logits=torch.stack(logits, dim=1),
            visual_embedding=visual_embedding,
            audio_embedding=audio_embedding,
            logit_scale=self.snapshot.segment_logit_scale.exp().clamp(max=100.0),
        )
