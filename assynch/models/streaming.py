"""The streaming interface and its two baselines (plus the memoryless snapshot).

Every streaming model offers

    state = model.init_state(batch_size)
    logits, state = model.step(Window(video, audio), state)   # one window: (B, S, ...)
    # step = advance(encode_window(window), state): the encoders do not depend on the state
    output = model(video, audio)                               # whole streams: (B, W, S, ...)

`output.logits[:, k]` is the prediction after window k and depends on windows 0..k only; `step`
window by window gives the same logits as `forward`. The state has a fixed size, so the cost of a
step does not grow with the number of windows seen.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from assynch.config import AssynchConfig
from assynch.models.snapshot import SnapshotModel

StreamState = dict[str, torch.Tensor]
# What `encode_window` returns: the state-independent result of one window, per model kind.
WindowCode = tuple[torch.Tensor, ...]


class Window(NamedTuple):
    """One window for every stream in a batch: video (B, S, 16, 3, H, W), audio (B, S, M, T)."""

    video: torch.Tensor
    audio: torch.Tensor


@dataclass
class StreamOutput:
    """What `forward` returns for a batch of streams.

    logits: (B, W, C), the offset prediction after each window.
    visual_embedding: (B, W, P) L2-normalised, AS-Synchformer only (contrastive head).
    audio_embedding: (B, W, C, P) L2-normalised, one per offset hypothesis, AS-Synchformer only.
    logit_scale: the contrastive inverse temperature, AS-Synchformer only.
    """

    logits: torch.Tensor
    visual_embedding: torch.Tensor | None = None
    audio_embedding: torch.Tensor | None = None
    logit_scale: torch.Tensor | None = None


class StreamingModel(nn.Module, ABC):
    """A snapshot model plus a bounded memory across windows."""

    def __init__(self, config: AssynchConfig) -> None:
        super().__init__()
        self.snapshot = SnapshotModel(config)
        self.num_classes = config.time.num_offset_classes

    def _like(self) -> torch.Tensor:
        return self.snapshot.sync.off_token

    @abstractmethod
    def init_state(self, batch_size: int) -> StreamState:
        """The state before the first window."""

    @abstractmethod
    def encode_window(self, window: Window) -> WindowCode:
        """The part of a step that does not depend on the state (the encoders, mostly)."""

    @abstractmethod
    def advance(self, code: WindowCode, state: StreamState) -> tuple[torch.Tensor, StreamState]:
        """The part of a step that reads and updates the state: logits (B, C), new state."""

    def step(self, window: Window, state: StreamState) -> tuple[torch.Tensor, StreamState]:
        """Consume one window (B, S, ...); return the logits (B, C) after it and the new state.

        `advance(encode_window(window), state)`: a caller that replays recent windows from a
        fresh state (a sliding context) can keep the codes and skip the encoders.
        """
        return self.advance(self.encode_window(window), state)

    @abstractmethod
    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> StreamOutput:
        """Whole streams (B, W, S, ...) -> per-window logits (B, W, C) and loss inputs."""

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

    def encode_window(self, window: Window) -> WindowCode:
        return (self.snapshot(*window),)

    def advance(self, code: WindowCode, state: StreamState) -> tuple[torch.Tensor, StreamState]:
        return code[0], state

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> StreamOutput:
        visual, audible = self._stream_dense_tokens(video, audio)
        batch, windows = visual.shape[:2]
        hidden = self.snapshot.sync(visual.flatten(0, 1), audible.flatten(0, 1))
        logits = self.snapshot.sync.off_head(hidden[:, 0])
        return StreamOutput(logits=logits.view(batch, windows, -1))


class AveragedPredictionStream(SnapshotStream):
    """APA: the mean of the snapshot logits over the windows seen so far (a running sum + count)."""

    def init_state(self, batch_size: int) -> StreamState:
        # float32 whatever the model's dtype: a bfloat16 count stops at 256.
        device = self._like().device
        return {
            "logit_sum": torch.zeros(batch_size, self.num_classes, device=device),
            "count": torch.zeros(batch_size, 1, device=device),
        }

    def advance(self, code: WindowCode, state: StreamState) -> tuple[torch.Tensor, StreamState]:
        logits = code[0]
        logit_sum = state["logit_sum"] + logits.float()
        count = state["count"] + 1
        return (logit_sum / count).to(logits.dtype), {"logit_sum": logit_sum, "count": count}

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> StreamOutput:
        window_logits = super().forward(video, audio).logits
        seen = torch.arange(1, window_logits.shape[1] + 1, device=window_logits.device)
        averaged = window_logits.float().cumsum(dim=1) / seen.view(1, -1, 1)
        return StreamOutput(logits=averaged.to(window_logits.dtype))


class StreamSync(StreamingModel):
    """StreamSync-style token passing: one latent token carried from window to window.

    The sync transformer reads [OFF, LATENT, visual, MOD, audio]; its output at LATENT (after a
    LayerNorm) is the next window's latent. The first window gets a learned initial latent.
    """

    def __init__(self, config: AssynchConfig) -> None:
        super().__init__(config)
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

    def encode_window(self, window: Window) -> WindowCode:
        return self._window_dense_tokens(window)

    def advance(self, code: WindowCode, state: StreamState) -> tuple[torch.Tensor, StreamState]:
        visual, audio = code
        return self._advance(visual, audio, state)

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> StreamOutput:
        visual, audible = self._stream_dense_tokens(video, audio)
        state = self.init_state(visual.shape[0])
        logits = []
        for index in range(visual.shape[1]):
            window_logits, state = self._advance(visual[:, index], audible[:, index], state)
            logits.append(window_logits)
        return StreamOutput(logits=torch.stack(logits, dim=1))
