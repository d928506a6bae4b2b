"""The streaming interface and its two baselines (plus the memoryless snapshot).

Every streaming model offers

    state = model.init_state(batch_size)
    logits, state = model.step(Window(video, audio), state)   # one window: (B, S, ...)
    output = model(video, audio)                               # whole streams: (B, W, S, ...)

and the same from encoder features (`encode`, `step_features`, `forward_features`), for runs
that cache the features of frozen encoders and for `detect`.

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
from assynch.models.snapshot import SegmentFeatures, SnapshotModel

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
    history_windows: the embeddings' pick history spans this many windows (0: no history), so
        a stream's first windows differ by how full it is (the contrastive loss keeps windows of
        different fill levels apart).
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
    history_windows: int = 0


class StreamingModel(nn.Module, ABC):
    """A snapshot model plus a bounded memory across windows.

    A window goes through two stages: the encoders (`encode`: raw frames and log-mel ->
    `SegmentFeatures`) and the rest (`advance_features`: projections, sync transformer, memory).
    `step` and `forward` run both; `step_features` / `forward_features` start from encoder
    features, which is how a frozen-encoder run reuses cached features and how `detect` keeps
    one window's features at a time. Each kind implements only `init_state`, `_advance` (one
    window's dense tokens -> outputs and the new state) and `_forward_tokens` (whole streams).
    """

    #: whether `forward` uses `contrastive_audio` (the baselines ignore it and do not encode it)
    uses_contrastive_audio = False

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

    # -- what each kind implements -------------------------------------------------------------

    @abstractmethod
    def init_state(self, batch_size: int) -> StreamState:
        """The state before the first window."""

    @abstractmethod
    def _advance(
        self, visual: torch.Tensor, audio: torch.Tensor, state: StreamState
    ) -> tuple[dict[str, torch.Tensor], StreamState]:
        """One window's dense tokens (B, Nv, D), (B, Na, D) -> outputs ("logits" (B, C) and
        kind-specific extras) and the new state."""

    @abstractmethod
    def _forward_tokens(
        self,
        visual: torch.Tensor,
        audio: torch.Tensor,
        contrastive_audio: torch.Tensor | None,
        contrastive_hypotheses: torch.Tensor | None,
    ) -> StreamOutput:
        """Whole streams' dense tokens (B, W, Nv, D), (B, W, Na, D) (and the contrastive
        candidates' (B, W, N, Na, D) when the kind uses them) -> StreamOutput."""

    # -- one window ----------------------------------------------------------------------------

    def encode(self, window: Window) -> SegmentFeatures:
        """One window (B, S, ...) -> its encoder features (B, S, tokens, D)."""
        with self.autocast(window.video):
            return self.snapshot.encode(window.video, window.audio, leading=1)

    def advance_features(
        self, features: SegmentFeatures, state: StreamState
    ) -> tuple[dict[str, torch.Tensor], StreamState]:
        """One window's encoder features -> every per-window output and the new state."""
        self.snapshot.check_features(features, leading=1)
        with self.autocast(features.visual):
            visual = self.snapshot.project_visual(features.visual)
            audio = self.snapshot.project_audio(features.audio)
            return self._advance(visual, audio, state)

    def step_features(
        self, features: SegmentFeatures, state: StreamState
    ) -> tuple[torch.Tensor, StreamState]:
        """`step` from the window's encoder features."""
        outputs, state = self.advance_features(features, state)
        return outputs["logits"].float(), state

    def step(self, window: Window, state: StreamState) -> tuple[torch.Tensor, StreamState]:
        """Consume one window (B, S, ...); return the logits (B, C) after it and the new state."""
        return self.step_features(self.encode(window), state)

    def window_outputs(
        self, window: Window, state: StreamState
    ) -> tuple[dict[str, torch.Tensor], StreamState]:
        """Like `step`, with every per-window output of the kind (AS-Synchformer: logits,
        snapshot_logits, tokens, visual, audio: the streaming tokens and per-modality picks)."""
        return self.advance_features(self.encode(window), state)

    # -- whole streams -------------------------------------------------------------------------

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
        use_candidates = contrastive_audio is not None and self.uses_contrastive_audio
        if use_candidates:
            self._check_candidates(audio, contrastive_audio, contrastive_hypotheses)
        with self.autocast(video):
            features = self.snapshot.encode(video, audio, leading=2)
            candidates = (
                self.snapshot.encode_audio(contrastive_audio, leading=3) if use_candidates else None
            )
        return self.forward_features(features, candidates, contrastive_hypotheses)

    def forward_features(
        self,
        features: SegmentFeatures,
        contrastive_audio: torch.Tensor | None = None,
        contrastive_hypotheses: torch.Tensor | None = None,
    ) -> StreamOutput:
        """`forward` from the streams' encoder features (B, W, S, tokens, D); the contrastive
        candidates as audio encoder features (B, W, N, S, 6, Da)."""
        self.snapshot.check_features(features, leading=2)
        use_candidates = contrastive_audio is not None and self.uses_contrastive_audio
        if use_candidates:
            self._check_candidates(features.audio, contrastive_audio, contrastive_hypotheses)
        with self.autocast(features.visual):
            visual = self.snapshot.project_visual(features.visual)
            audio = self.snapshot.project_audio(features.audio)
            candidates = self.snapshot.project_audio(contrastive_audio) if use_candidates else None
            return self._forward_tokens(
                visual, audio, candidates, contrastive_hypotheses if use_candidates else None
            )

    @staticmethod
    def _check_candidates(
        audio: torch.Tensor,
        contrastive_audio: torch.Tensor,
        hypotheses: torch.Tensor | None,
    ) -> None:
        """Contrastive candidates must be the audio's shape with a candidate dim after (B, W)."""
        batch, windows = audio.shape[:2]
        tail = tuple(audio.shape[2:])
        if contrastive_audio.dim() != audio.dim() + 1 or tuple(
            contrastive_audio.shape[:2]
        ) != (batch, windows) or tuple(contrastive_audio.shape[3:]) != tail:
            raise ValueError(
                f"contrastive_audio must be (B, W, N, ...) = ({batch}, {windows}, N, "
                f"{', '.join(map(str, tail))}) like the audio with N candidates, got "
                f"{tuple(contrastive_audio.shape)}"
            )
        count = contrastive_audio.shape[2]
        if hypotheses is None or tuple(hypotheses.shape) != (batch, count):
            raise ValueError(
                f"contrastive_hypotheses must be (B, N) = ({batch}, {count}): for each "
                f"contrastive audio, the offset class under which it is in sync with the video "
                f"(docs/MODELS.md); got {None if hypotheses is None else tuple(hypotheses.shape)}"
            )


class SnapshotStream(StreamingModel):
    """No memory: the prediction after window k is the snapshot's prediction for window k."""

    def init_state(self, batch_size: int) -> StreamState:
        return {}

    def _window_logits(self, visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        return self.snapshot.sync.predict(visual, audio)[1]

    def _advance(
        self, visual: torch.Tensor, audio: torch.Tensor, state: StreamState
    ) -> tuple[dict[str, torch.Tensor], StreamState]:
        return {"logits": self._window_logits(visual, audio).float()}, state

    def _forward_tokens(
        self,
        visual: torch.Tensor,
        audio: torch.Tensor,
        contrastive_audio: torch.Tensor | None,
        contrastive_hypotheses: torch.Tensor | None,
    ) -> StreamOutput:
        batch, windows = visual.shape[:2]
        logits = self._window_logits(visual.flatten(0, 1), audio.flatten(0, 1))
        return StreamOutput(logits=logits.float().view(batch, windows, -1))


def log_mean_probabilities(mean: torch.Tensor) -> torch.Tensor:
    """Mean probabilities (..., C) as logits whose softmax is that mean (floored at 1e-30, so a
    class no window gave any mass stays finite). APA's and AS-Synchformer's accumulation."""
    return mean.clamp_min(1e-30).log()


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
        return log_mean_probabilities(mean) if self.average_probabilities else mean

    def init_state(self, batch_size: int) -> StreamState:
        # float32 whatever the model's dtype: a bfloat16 count stops at 256.
        device = self._like().device
        return {
            "logit_sum": torch.zeros(batch_size, self.num_classes, device=device),
            "count": torch.zeros(batch_size, 1, device=device),
        }

    def _advance(
        self, visual: torch.Tensor, audio: torch.Tensor, state: StreamState
    ) -> tuple[dict[str, torch.Tensor], StreamState]:
        window_logits = self._window_logits(visual, audio)
        total = state["logit_sum"] + self._per_window(window_logits)
        count = state["count"] + 1
        outputs = {"logits": self._as_logits(total / count), "window_logits": window_logits}
        return outputs, {"logit_sum": total, "count": count}

    def _forward_tokens(
        self,
        visual: torch.Tensor,
        audio: torch.Tensor,
        contrastive_audio: torch.Tensor | None,
        contrastive_hypotheses: torch.Tensor | None,
    ) -> StreamOutput:
        window_logits = super()._forward_tokens(visual, audio, None, None).logits
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
    ) -> tuple[dict[str, torch.Tensor], StreamState]:
        latent = state["latent"].unsqueeze(1) + self.latent_position
        hidden, logits = self.snapshot.sync.predict(visual, audio, extra=latent)
        return {"logits": logits.float()}, {"latent": self.latent_norm(hidden[:, 1])}

    def _forward_tokens(
        self,
        visual: torch.Tensor,
        audio: torch.Tensor,
        contrastive_audio: torch.Tensor | None,
        contrastive_hypotheses: torch.Tensor | None,
    ) -> StreamOutput:
        state = self.init_state(visual.shape[0])
        logits = []
        for index in range(visual.shape[1]):
            outputs, state = self._advance(visual[:, index], audio[:, index], state)
            logits.append(outputs["logits"])
        return StreamOutput(logits=torch.stack(logits, dim=1).float())
