"""The streaming interface and its two baselines (plus the memoryless snapshot).

Every streaming model offers

    state = model.init_state(batch_size)
    logits, state = model.step(Window(video, audio), state)   # one window: (B, S, ...)
    output = model(video, audio)                               # whole streams: (B, W, S, ...)

`output.logits[:, k]` is the prediction after window k and depends on windows 0..k only; `step`
window by window gives the same logits as `forward`. The state has a fixed size, so the cost of a
step does not grow with the number of windows seen.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from assynch.config import AssynchConfig
from assynch.models.snapshot import SnapshotModel

StreamState = dict[str, torch.Tensor]


class Window(NamedTuple):
    """One window for every stream in a batch: video (B, S, 16, 3, H, W), audio (B, S, M, T)."""

    video: torch.Tensor
    audio: torch.Tensor


@dataclass
class StreamOutput:
    """What `forward` returns for a batch of streams.

    logits: (B, W, C), the offset prediction after each window.
    AS-Synchformer only (None otherwise):
    visual_embedding: (B, W, P) L2-normalised contrastive embedding of each window's visual
        streaming tokens (a path that never sees audio).
    audio_embedding: (B, W, A, P) L2-normalised contrastive embeddings of A audio candidates per
        window (a path that never sees video): candidate 0 is the model's input audio, 1..N the
        `contrastive_audio` given to forward.
    audio_hypotheses: (B, A) the offset class under which each audio candidate is in sync with
        the video (candidate 0: the centre class, 0 s).
    logit_scale: the contrastive inverse temperature.
    streaming_tokens: (B, W, K, D) the K streaming tokens emitted after each window.
    visual_tokens / audio_tokens: (B, W, K, D) the K per-modality picks they are fused from.
    snapshot_logits: (B, W, C) the history-conditioned snapshot module's own prediction.
    overlapping_windows: windows up to this index distance apart overlap in time.
    """

    logits: torch.Tensor
    visual_embedding: torch.Tensor | None = None
    audio_embedding: torch.Tensor | None = None
    logit_scale: torch.Tensor | None = None
    audio_hypotheses: torch.Tensor | None = None
    streaming_tokens: torch.Tensor | None = None
    visual_tokens: torch.Tensor | None = None
    audio_tokens: torch.Tensor | None = None
    snapshot_logits: torch.Tensor | None = None
    overlapping_windows: int = 1


class StreamingModel(nn.Module, ABC):
    """A snapshot model plus a bounded memory across windows."""

    def __init__(self, config: AssynchConfig) -> None:
        super().__init__()
        self.snapshot = SnapshotModel(config)
        self.num_classes = config.time.num_offset_classes
        self.autocast_bf16 = config.model.autocast_bf16

    def _like(self) -> torch.Tensor:
        return self.snapshot.sync.off_token

    def autocast(self, like: torch.Tensor) -> AbstractContextManager[object]:
        """bf16 autocast on `like`'s device when `model.autocast_bf16` (else a no-op context)."""
        if not self.autocast_bf16 or not torch.amp.is_autocast_available(like.device.type):
            return nullcontext()  # e.g. the meta device (FLOP counting)
        return torch.autocast(device_type=like.device.type, dtype=torch.bfloat16)

    @abstractmethod
    def init_state(self, batch_size: int) -> StreamState:
        """The state before the first window."""

    @abstractmethod
    def step(self, window: Window, state: StreamState) -> tuple[torch.Tensor, StreamState]:
        """Consume one window (B, S, ...); return the logits (B, C) after it and the new state."""

    @abstractmethod
    def forward(
        self,
        video: torch.Tensor,
        audio: torch.Tensor,
        contrastive_audio: torch.Tensor | None = None,
        contrastive_hypotheses: torch.Tensor | None = None,
    ) -> StreamOutput:
        """Whole streams (B, W, S, ...) -> per-window logits (B, W, C) and loss inputs.

        `contrastive_audio` (B, W, N, S, n_mels, T): the same windows' audio cut at N other
        offsets, with `contrastive_hypotheses` (B, N) the label under which each is in sync;
        used by AS-Synchformer's contrastive loss only (the baselines ignore it).
        """

    def _stream_dense_tokens(
        self, video: torch.Tensor, audio: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, W, S, ...) -> dense tokens of every window (B, W, Nv, D), (B, W, Na, D).

        Windows are encoded independently, so all of them go through the encoders at once.
        """
        self.snapshot.check_inputs(video, audio, leading=2)
        batch, windows = video.shape[:2]
        visual, audible = self.snapshot.dense_tokens(video.flatten(0, 1), audio.flatten(0, 1))
        return (
            visual.view(batch, windows, *visual.shape[1:]),
            audible.view(batch, windows, *audible.shape[1:]),
        )

    def _window_dense_tokens(self, window: Window) -> tuple[torch.Tensor, torch.Tensor]:
        video, audio = window
        self.snapshot.check_inputs(video, audio, leading=1)
        return self.snapshot.dense_tokens(video, audio)


class SnapshotStream(StreamingModel):
    """No memory: the prediction after window k is the snapshot's prediction for window k."""

    def init_state(self, batch_size: int) -> StreamState:
        return {}

    def step(self, window: Window, state: StreamState) -> tuple[torch.Tensor, StreamState]:
        with self.autocast(window.video):
            logits = self.snapshot(*window)
        return logits.float(), state

    def forward(
        self,
        video: torch.Tensor,
        audio: torch.Tensor,
        contrastive_audio: torch.Tensor | None = None,
        contrastive_hypotheses: torch.Tensor | None = None,
    ) -> StreamOutput:
        with self.autocast(video):
            visual, audible = self._stream_dense_tokens(video, audio)
            batch, windows = visual.shape[:2]
            hidden = self.snapshot.sync(visual.flatten(0, 1), audible.flatten(0, 1))
            logits = self.snapshot.sync.off_head(hidden[:, 0])
        return StreamOutput(logits=logits.float().view(batch, windows, -1))


class AveragedPredictionStream(SnapshotStream):
    """APA: the windows' snapshot predictions averaged over the windows seen so far.

    `model.apa_average: probabilities` (default) averages the softmax outputs and returns the
    log of the mean probabilities as logits (so softmax(logits) is the averaged distribution);
    `logits` averages the raw logits. State: a float32 running sum and count.
    """

    def __init__(self, config: AssynchConfig) -> None:
        super().__init__(config)
        self.average_probabilities = config.model.apa_average == "probabilities"

    def _per_window(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        return logits.softmax(dim=-1) if self.average_probabilities else logits

    def _as_logits(self, mean: torch.Tensor) -> torch.Tensor:
        return mean.clamp_min(1e-30).log() if self.average_probabilities else mean

    def init_state(self, batch_size: int) -> StreamState:
        # float32 whatever the model's dtype: a bfloat16 count stops at 256.
        device = self._like().device
        return {
            "logit_sum": torch.zeros(batch_size, self.num_classes, device=device),
            "count": torch.zeros(batch_size, 1, device=device),
        }

    def step(self, window: Window, state: StreamState) -> tuple[torch.Tensor, StreamState]:
        logits, _ = super().step(window, state)
        total = state["logit_sum"] + self._per_window(logits)
        count = state["count"] + 1
        return self._as_logits(total / count), {"logit_sum": total, "count": count}

    def forward(
        self,
        video: torch.Tensor,
        audio: torch.Tensor,
        contrastive_audio: torch.Tensor | None = None,
        contrastive_hypotheses: torch.Tensor | None = None,
    ) -> StreamOutput:
        window_logits = super().forward(video, audio).logits
        seen = torch.arange(1, window_logits.shape[1] + 1, device=window_logits.device)
        averaged = self._per_window(window_logits).cumsum(dim=1) / seen.view(1, -1, 1)
        return StreamOutput(logits=self._as_logits(averaged))


class StreamSync(StreamingModel):
    """StreamSync-style token passing: one latent token carried from window to window.

    The sync transformer reads [OFF, LATENT, visual, MOD, audio]; its output at LATENT (after a
    LayerNorm) is the next window's latent. The first window gets a learned initial latent.
    """

    def __init__(self, config: AssynchConfig) -> None:
        super().__init__(config)
        # The stage-1 temperature is not used here: frozen, so DDP finds no unused parameter.
        self.snapshot.segment_logit_scale.requires_grad_(False)
        dim = self.snapshot.dim
        self.initial_latent = nn.Parameter(torch.zeros(1, dim))
        self.latent_position = nn.Parameter(torch.zeros(1, 1, dim))
        self.latent_norm = nn.LayerNorm(dim)
        nn.init.normal_(self.initial_latent, std=0.02)
        nn.init.normal_(self.latent_position, std=0.02)

    def init_state(self, batch_size: int) -> StreamState:
        return {"latent": self.initial_latent.expand(batch_size, -1)}

    def _advance(
        self, visual: torch.Tensor, audio: torch.Tensor, state: StreamState
    ) -> tuple[torch.Tensor, StreamState]:
        latent = state["latent"].unsqueeze(1) + self.latent_position
        hidden = self.snapshot.sync(visual, audio, extra=latent)
        logits = self.snapshot.sync.off_head(hidden[:, 0])
        return logits, {"latent": self.latent_norm(hidden[:, 1])}

    def step(self, window: Window, state: StreamState) -> tuple[torch.Tensor, StreamState]:
        with self.autocast(window.video):
            logits, state = self._advance(*self._window_dense_tokens(window), state)
        return logits.float(), state

    def forward(
        self,
        video: torch.Tensor,
        audio: torch.Tensor,
        contrastive_audio: torch.Tensor | None = None,
        contrastive_hypotheses: torch.Tensor | None = None,
    ) -> StreamOutput:
        with self.autocast(video):
            visual, audible = self._stream_dense_tokens(video, audio)
            state = self.init_state(visual.shape[0])
            logits = []
            for index in range(visual.shape[1]):
                window_logits, state = self._advance(visual[:, index], audible[:, index], state)
                logits.append(window_logits)
        return StreamOutput(logits=torch.stack(logits, dim=1).float())
