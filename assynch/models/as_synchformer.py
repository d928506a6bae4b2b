"""AS-Synchformer: history-aware streaming tokens, a history-conditioned snapshot module, and a
streaming module over a bounded token history (docs/MODELS.md, "AS-Synchformer").

Per window w (B streams at once):
  1. The encoders give dense segment tokens of each modality (unimodal, projected to the sync
     width), each stamped with its time in the window (a shared sinusoidal embedding, so the
     same instant has the same stamp in both modalities).
  2. Per modality, a `ModalitySelector` picks K tokens: K orthogonally initialised queries, each
     shifted by what it reads from that modality's own pick history, compete for the dense tokens
     (slot-style: a token's attention is split among the queries), with two history-aware biases
     (transitions up, what the history already holds down); a pick is the attention-weighted
     mean of the tokens minus the window's mean token (what is specific to the picked moments).
     The visual picks never see audio and the audio picks never see video.
  3. The K visual and K audio picks fuse, index by index, into K streaming tokens.
  4. The snapshot module's sync transformer reads [OFF, history, visual, MOD, audio], the
     history being the streaming tokens and summaries of the last R windows (empty slots
     masked): the snapshot is conditioned on its own token history. Its OFF output gives the
     window's snapshot logits and, with their softmax (the snapshot's offset belief), a
     summary token.
  5. Streaming tokens and summary enter a ring of the last R windows; the streaming module (a
     transformer encoder) reads the ring and predicts how sharp the belief accumulated over the
     windows seen should be (a sharpness: an inverse temperature, 1 at init) and a correction:
     the offset logits are sharpness x log(mean snapshot belief) + correction.
A contrastive head per modality embeds the K picks of each window (per-pick MLP, then the mean);
audio candidates at other offsets (and of other streams) are the negatives
(losses.stream_contrastive_loss).

The ring has a fixed size from the first window on (empty slots masked), so every step costs the
same.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import skip_init

from assynch.config import AssynchConfig, ConfigError
from assynch.models.layers import encoder_layer, init_vit_weights
from assynch.models.losses import bounded_logit_scale, logit_scale_parameter
from assynch.models.snapshot import token_times
from assynch.models.streaming import (
    StreamingModel,
    StreamOutput,
    StreamState,
    log_mean_probabilities,
)

TIME_FREQUENCIES = 16
# The streaming module's sharpness (an inverse temperature of the accumulated belief) stays
# within exp(+-3) = 0.05 .. 20.
SHARPNESS_BOUND = 3.0


def time_features(times_sec: torch.Tensor) -> torch.Tensor:
    """(N,) seconds -> (N, 2 * TIME_FREQUENCIES) sines and cosines, periods 0.16 s .. 10 s."""
    periods = torch.logspace(math.log10(0.16), 1.0, TIME_FREQUENCIES, dtype=torch.float64)
    angle = 2 * math.pi * times_sec.double()[:, None] / periods[None, :]
    return torch.cat((angle.sin(), angle.cos()), dim=-1).float()


def _unit_gain(linear: nn.Linear) -> None:
    nn.init.normal_(linear.weight, std=linear.in_features**-0.5)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


class ModalitySelector(nn.Module):
    """K queries pick K tokens from one modality's dense tokens, conditioned on its history.

    - Distinct by construction: the K queries start orthonormal (scaled to unit entries) and
      compete for tokens (softmax over the queries first, as in Slot Attention), so different
      queries take different moments; a pick is the weighted mean of the tokens minus their
      plain mean, so a common component shared by all tokens cannot make the picks alike.
    - History-aware: each query reads, with one cross-attention, from the ring of this
      modality's earlier picks (plus an always-present null slot); scores get + g_t *
      transition (1 - cos to the same token one segment earlier: onsets and changes) and - g_r *
      redundancy (highest cosine to a valid history pick, in a learned space).
    """

    def __init__(
        self,
        dim: int,
        queries: int,
        tokens_per_segment: int,
        heads: int,
        history_windows: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.tokens_per_segment = tokens_per_segment
        self.norm = nn.LayerNorm(dim)
        self.queries = nn.Parameter(torch.zeros(queries, dim))
        self.query_norm = nn.LayerNorm(dim)
        self.history_position = nn.Parameter(torch.zeros(1, history_windows, queries, dim))
        self.null_memory = nn.Parameter(torch.zeros(1, 1, dim))
        self.history_attention = nn.MultiheadAttention(
            dim, heads, dropout=dropout, batch_first=True
        )
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.redundancy_proj = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.out_norm = nn.LayerNorm(dim)
        self.transition_gain = nn.Parameter(torch.tensor(0.0))
        self.redundancy_gain = nn.Parameter(torch.tensor(0.0))

    def reset_selection_parameters(self) -> None:
        """Orthonormal queries with unit-size entries; unit-gain key/value/output projections so
        that scores start with a spread of ~1 (not ~0.02: uniform attention, identical picks)."""
        dim = self.queries.shape[1]
        nn.init.orthogonal_(self.queries)
        with torch.no_grad():
            self.queries.mul_(math.sqrt(dim))
        for linear in (self.key, self.value, self.redundancy_proj):
            _unit_gain(linear)
        nn.init.eye_(self.out.weight)  # starts as the identity: the pick itself
        nn.init.zeros_(self.out.bias)
        for parameter in (self.history_position, self.null_memory):
            nn.init.normal_(parameter, std=0.02)
        with torch.no_grad():  # softplus(gain) = 1: onsets are favoured from the start
            self.transition_gain.fill_(math.log(math.e - 1.0))

    def transition(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, D) segment-major tokens -> (B, N) change from one segment earlier (0 at first)."""
        step = self.tokens_per_segment
        change = 1.0 - F.cosine_similarity(tokens[:, step:], tokens[:, :-step], dim=-1)
        return F.pad(change, (step, 0))

    def forward(
        self,
        dense: torch.Tensor,
        position: torch.Tensor,
        history: torch.Tensor,
        valid: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """dense (B, N, D), position (N, D), history (B, R, K, D) + valid (B, R) ->
        picks (B, K, D) and the selection weights (B, K, N)."""
        batch, _, queries, dim = history.shape
        content = self.norm(dense)

        flat_history = history.flatten(1, 2)  # (B, R*K, D)
        history_valid = valid.repeat_interleave(queries, dim=1)
        memory = torch.cat(
            (self.null_memory.expand(batch, -1, -1),
             (history + self.history_position).flatten(1, 2)),
            dim=1,
        )
        ignore = torch.cat((history_valid.new_zeros(batch, 1), ~history_valid), dim=1)
        query = self.queries.unsqueeze(0).repeat(batch, 1, 1)
        read, _ = self.history_attention(
            self.query_norm(query), memory, memory, key_padding_mask=ignore, need_weights=False
        )
        query = query + read

        scores = query @ self.key(content + position).transpose(1, 2) / math.sqrt(dim)
        seen = F.normalize(self.redundancy_proj(content), dim=-1)
        held = F.normalize(self.redundancy_proj(flat_history), dim=-1)
        similarity = (seen @ held.transpose(1, 2)).masked_fill(~history_valid[:, None], -1.0)
        redundancy = similarity.max(dim=-1).values.clamp(min=0.0)
        bias = F.softplus(self.transition_gain) * self.transition(content) - F.softplus(
            self.redundancy_gain
        ) * redundancy
        # Slot-style competition: split each token among the queries, then normalise per query.
        weights = (scores.log_softmax(dim=1) + bias[:, None, :]).softmax(dim=-1)
        # The time stamp bypasses the value projection: it stays in the space both modalities
        # share, so the picks of the two modalities carry comparable "when".
        values = self.value(content) + position
        picks = weights @ values - values.mean(dim=1, keepdim=True)
        return self.out_norm(self.out(picks)), weights


class ContrastiveHead(nn.Module):
    """K picks (..., K, D) -> one L2-normalised embedding (..., P): a per-pick MLP, then the mean.

    Permutation-invariant over the picks (which query took which moment differs from window to
    window and between modalities), and the mean of per-pick features makes the dot product of
    two embeddings a sum over pairs of picks, i.e. a match between two sets of moments.
    """

    def __init__(self, dim: int, features: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, dim)
        self.fc2 = nn.Linear(dim, features)

    def forward(self, picks: torch.Tensor) -> torch.Tensor:
        embedded = self.fc2(F.gelu(self.fc1(picks))).mean(dim=-2)
        return F.normalize(embedded.float(), dim=-1)


class ASSynchformer(StreamingModel):
    uses_contrastive_audio = True

    def __init__(self, config: AssynchConfig) -> None:
        super().__init__(config)
        model = config.model
        dim, classes = self.snapshot.dim, self.num_classes
        self.tokens_per_window = tokens = model.streaming_tokens
        self.history_windows = history = model.history_windows
        if model.streaming.dim % model.streaming.heads:
            raise ConfigError(
                f"model.streaming.dim ({model.streaming.dim}) must be divisible by "
                f"model.streaming.heads ({model.streaming.heads})"
            )
        time = config.time
        self.overlapping_windows = (time.window_frames - 1) // int(
            round(time.stream_hop_sec * time.fps)
        )
        # The stage-1 temperature is not used here (the contrastive loss has its own): frozen,
        # so DDP finds no unused parameter. Unfreeze it to run stage 1 on this model's snapshot.
        self.snapshot.segment_logit_scale.requires_grad_(False)
        dropout = model.sync_dropout

        # Time stamps of the dense tokens, shared by both modalities.
        visual_times, audio_times = token_times(config)
        self.register_buffer("visual_time", time_features(visual_times), persistent=False)
        self.register_buffer("audio_time", time_features(audio_times), persistent=False)
        self.time_embed = nn.Linear(2 * TIME_FREQUENCIES, dim)

        # History-aware selection, one selector per modality.
        heads = model.sync.heads
        self.visual_selector = ModalitySelector(
            dim, tokens, model.visual_encoder.out_tokens, heads, history, dropout
        )
        self.audio_selector = ModalitySelector(
            dim, tokens, model.audio_encoder.out_tokens, heads, history, dropout
        )
        self.fuse_visual = nn.Linear(dim, dim)
        self.fuse_audio = nn.Linear(dim, dim)
        self.fuse_norm = nn.LayerNorm(dim)

        # History into the snapshot module's sync transformer.
        self.history_in = nn.Linear(dim, dim)
        self.history_in_norm = nn.LayerNorm(dim)
        self.history_token_position = nn.Parameter(torch.zeros(1, history, tokens + 1, dim))
        self.summary = nn.Linear(dim, dim)
        self.belief_embed = nn.Linear(classes, dim)
        self.summary_norm = nn.LayerNorm(dim)

        # Contrastive heads (one per modality) and their own temperature.
        # One head for both modalities: the picks share a space (the sync width, the shared time
        # stamps), and a shared head keeps "the same moment" at the same place in both.
        self.contrastive_head = ContrastiveHead(dim, model.contrastive_dim)
        self.contrastive_logit_scale = nn.Parameter(
            logit_scale_parameter(model.contrastive_temperature)
        )

        # Streaming module.
        stream = model.streaming
        self.stream_in = nn.Linear(dim, stream.dim)
        self.stream_cls = nn.Parameter(torch.zeros(1, 1, stream.dim))
        self.stream_position = nn.Parameter(torch.zeros(1, history, tokens + 1, stream.dim))
        self.stream_blocks = nn.ModuleList(
            encoder_layer(stream.dim, stream.heads, stream.mlp_ratio, dropout)
            for _ in range(stream.depth)
        )
        self.stream_norm = nn.LayerNorm(stream.dim)
        self.stream_head = nn.Linear(stream.dim, classes)

        for child_name, child in self.named_children():
            if child_name != "snapshot":
                child.apply(init_vit_weights)
        for parameter in (
            self.history_token_position, self.stream_cls, self.stream_position,
        ):
            nn.init.normal_(parameter, std=0.02)
        for linear in (self.time_embed, self.fuse_visual, self.fuse_audio):
            _unit_gain(linear)
        self.visual_selector.reset_selection_parameters()
        self.audio_selector.reset_selection_parameters()
        # How sharp the accumulated belief should be, given the ring: the log of an inverse
        # temperature, bounded to +-SHARPNESS_BOUND (docs/MODELS.md, step 5). Zero: sharpness
        # 1, the plain mean. Made last and without drawing random numbers, so every other
        # layer's seeded init and the dropout masks of a seeded run are as without it.
        like = self.stream_head.weight  # its device: under `torch.device("meta")` too
        self.stream_sharpness = skip_init(
            nn.Linear, stream.dim, 1, device=like.device, dtype=like.dtype
        )
        nn.init.zeros_(self.stream_sharpness.weight)
        nn.init.zeros_(self.stream_sharpness.bias)

    # -- state ---------------------------------------------------------------------------------

    def init_state(self, batch_size: int) -> StreamState:
        like = self._like()
        dim = like.shape[-1]
        ring = (batch_size, self.history_windows, self.tokens_per_window, dim)
        return {
            "tokens": like.new_zeros(ring),
            "visual": like.new_zeros(ring),
            "audio": like.new_zeros(ring),
            "summary": like.new_zeros(batch_size, self.history_windows, dim),
            "valid": torch.zeros(
                batch_size, self.history_windows, dtype=torch.bool, device=like.device
            ),
            # float32 whatever the model's dtype (a bfloat16 count stops at 256)
            "belief_sum": torch.zeros(batch_size, self.num_classes, device=like.device),
            "seen": torch.zeros(batch_size, 1, device=like.device),
        }

    @staticmethod
    def _push(ring: torch.Tensor, entry: torch.Tensor) -> torch.Tensor:
        return torch.cat((ring[:, 1:], entry.unsqueeze(1).to(ring.dtype)), dim=1)

    # -- one window ----------------------------------------------------------------------------

    def _select_visual(
        self, dense: torch.Tensor, state: StreamState
    ) -> tuple[torch.Tensor, torch.Tensor]:
        position = self.time_embed(self.visual_time)
        return self.visual_selector(dense, position, state["visual"], state["valid"])

    def _select_audio(
        self, dense: torch.Tensor, history: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        position = self.time_embed(self.audio_time)
        return self.audio_selector(dense, position, history, valid)

    def _history_tokens(self, state: StreamState) -> tuple[torch.Tensor, torch.Tensor]:
        """The ring as extra tokens for the sync transformer: (B, R*(K+1), D) and validity."""
        ring = torch.cat((state["tokens"], state["summary"].unsqueeze(2)), dim=2)
        extra = self.history_in_norm(self.history_in(ring)) + self.history_token_position
        valid = state["valid"].repeat_interleave(self.tokens_per_window + 1, dim=1)
        return extra.flatten(1, 2), valid

    def _predict(self, state: StreamState) -> tuple[torch.Tensor, torch.Tensor]:
        """The streaming module over the ring -> the sharpness (B, 1) and correction (B, C)."""
        ring = torch.cat((state["tokens"], state["summary"].unsqueeze(2)), dim=2)
        batch = ring.shape[0]
        x = (self.stream_in(ring) + self.stream_position).flatten(1, 2)
        x = torch.cat((self.stream_cls.expand(batch, -1, -1), x), dim=1)
        valid = state["valid"].repeat_interleave(self.tokens_per_window + 1, dim=1)
        ignore = torch.cat((valid.new_zeros(batch, 1), ~valid), dim=1)
        for block in self.stream_blocks:
            x = block(x, src_key_padding_mask=ignore)
        read = self.stream_norm(x[:, 0])
        bound = SHARPNESS_BOUND
        log_sharpness = bound * torch.tanh(self.stream_sharpness(read).float() / bound)
        return log_sharpness.exp(), self.stream_head(read).float()

    def _advance(
        self, visual: torch.Tensor, audio: torch.Tensor, state: StreamState
    ) -> tuple[dict[str, torch.Tensor], StreamState]:
        """Dense tokens of one window (B, Nv, D), (B, Na, D) -> outputs and the new state."""
        visual_picks, _ = self._select_visual(visual, state)
        audio_picks, _ = self._select_audio(audio, state["audio"], state["valid"])
        tokens = self.fuse_norm(self.fuse_visual(visual_picks) + self.fuse_audio(audio_picks))
        extra, extra_valid = self._history_tokens(state)
        hidden, snapshot_logits = self.snapshot.sync.predict(
            visual, audio, extra=extra, extra_valid=extra_valid
        )
        off = hidden[:, 0]
        belief = snapshot_logits.float().softmax(dim=-1)  # the snapshot's offset belief
        summary = self.summary_norm(self.summary(off) + self.belief_embed(belief.to(off.dtype)))
        valid = state["valid"]
        belief_sum = state["belief_sum"] + belief
        seen = state["seen"] + 1
        state = {
            "tokens": self._push(state["tokens"], tokens),
            "visual": self._push(state["visual"], visual_picks),
            "audio": self._push(state["audio"], audio_picks),
            "summary": self._push(state["summary"], summary),
            "valid": torch.cat((valid[:, 1:], valid.new_ones(valid.shape[0], 1)), dim=1),
            "belief_sum": belief_sum,
            "seen": seen,
        }
        sharpness, correction = self._predict(state)
        outputs = {
            # The streaming module refines the snapshot module's belief so far: its
            # (history-conditioned) per-window probabilities averaged over the windows seen, as
            # APA does (after one window: the window's own prediction), sharpened or flattened
            # by the sharpness the ring supports, plus a correction. A residual (sharpness 1
            # and no correction at init), so AS-Synchformer starts as its accumulated snapshot
            # module and learns as fast (docs/MODELS.md, step 5).
            "logits": sharpness * log_mean_probabilities(belief_sum / seen) + correction,
            "snapshot_logits": snapshot_logits,
            "tokens": tokens,
            "visual": visual_picks,
            "audio": audio_picks,
        }
        return outputs, state

    # -- whole streams -------------------------------------------------------------------------

    def _candidate_audio_picks(
        self, dense: torch.Tensor, valid_per_window: list[torch.Tensor]
    ) -> torch.Tensor:
        """(B, W, N, Na, D) dense tokens of the audio at other offsets -> picks (B, W, N, K, D),
        each candidate stream with its own pick history (so the history cannot tell the in-sync
        one apart)."""
        batch, windows, count = dense.shape[:3]
        dense = dense.transpose(1, 2).flatten(0, 1)  # (B*N, W, Na, D)
        history = self.init_state(batch * count)["audio"]
        picks = []
        for index in range(windows):
            valid = valid_per_window[index].repeat_interleave(count, dim=0)
            pick, _ = self._select_audio(dense[:, index], history, valid)
            history = self._push(history, pick)
            picks.append(pick)
        stacked = torch.stack(picks, dim=1)  # (B*N, W, K, D)
        return stacked.view(batch, count, windows, *stacked.shape[2:]).transpose(1, 2)

    def _forward_tokens(
        self,
        visual: torch.Tensor,
        audible: torch.Tensor,
        contrastive_audio: torch.Tensor | None,
        contrastive_hypotheses: torch.Tensor | None,
    ) -> StreamOutput:
        batch, windows = visual.shape[:2]
        state = self.init_state(batch)
        per_window: dict[str, list[torch.Tensor]] = {}
        valid_before = []
        for index in range(windows):
            valid_before.append(state["valid"])
            outputs, state = self._advance(visual[:, index], audible[:, index], state)
            for name, value in outputs.items():
                per_window.setdefault(name, []).append(value)
        stacked = {name: torch.stack(values, dim=1) for name, values in per_window.items()}
        audio_picks = stacked["audio"].unsqueeze(2)  # (B, W, 1, K, D)
        if contrastive_audio is not None:
            audio_picks = torch.cat(
                (audio_picks, self._candidate_audio_picks(contrastive_audio, valid_before)),
                dim=2,
            )
        visual_embedding = self.contrastive_head(stacked["visual"])
        audio_embedding = self.contrastive_head(audio_picks)
        centre = torch.full(
            (batch, 1), self.num_classes // 2, dtype=torch.long, device=visual.device
        )
        hypotheses = centre if contrastive_hypotheses is None else torch.cat(
            (centre, contrastive_hypotheses.to(visual.device).long()), dim=1
        )
        return StreamOutput(
            logits=stacked["logits"].float(),
            visual_embedding=visual_embedding,
            audio_embedding=audio_embedding,
            logit_scale=bounded_logit_scale(self.contrastive_logit_scale),
            audio_hypotheses=hypotheses,
            streaming_tokens=stacked["tokens"].float(),
            visual_tokens=stacked["visual"].float(),
            audio_tokens=stacked["audio"].float(),
            snapshot_logits=stacked["snapshot_logits"].float(),
            overlapping_windows=self.overlapping_windows,
            history_windows=self.history_windows,
        )
