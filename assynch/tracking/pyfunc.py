"""The MLflow pyfunc of a trained streaming model: windows in, per-window offset probabilities out.

Logged as a *model from code* (`pyfunc_model_code.py`, which ends with `set_model`): the model
directory holds this code, the weights file written by `assynch.models.save_model_checkpoint`
(tensors only, read with `torch.load(weights_only=True)`) and the resolved config as YAML. Nothing
is pickled, so loading runs no pickled code.

Input (`predict(model_input)`), a dict of two float32 numpy arrays:
    video: (B, W, S, F, 3, H, W) frames normalised as the preprocessing does ((x/255 - mean)/std),
           B streams of W consecutive windows, S segments of F frames each.
    audio: (B, W, S, n_mels, T) normalised log-mel per segment.
Output: float32 (B, W, C), the offset probabilities after each window (softmax over the C offset
classes; class k <-> (k - C//2) * time.offset_step_sec seconds). Window w sees windows 0..w only.
Frames of another size than video.crop are resized to it (bilinear, antialiased): that keeps the
input example small; for the numbers the model was validated on, pass frames at video.crop.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import numpy as np
import torch
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from assynch.config import AssynchConfig
from assynch.models import load_model_checkpoint
from assynch.models.streaming import StreamingModel, Window

WEIGHTS_ARTIFACT = "weights"
CONFIG_ARTIFACT = "config"
EXAMPLE_FRAME_SIZE = 8  # pixels; the example is resized up to video.crop inside predict


def model_signature(config: AssynchConfig) -> ModelSignature:
    """Tensor specs of `predict`: -1 marks the free dims (batch, windows, frame height/width)."""
    time, audio = config.time, config.audio
    inputs = Schema([
        TensorSpec(np.dtype(np.float32),
                   (-1, -1, time.segments_per_window, time.segment_frames, 3, -1, -1), "video"),
        TensorSpec(np.dtype(np.float32),
                   (-1, -1, time.segments_per_window, audio.n_mels, audio.segment_mel_frames),
                   "audio"),
    ])
    outputs = Schema([TensorSpec(np.dtype(np.float32), (-1, -1, time.num_offset_classes))])
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example(config: AssynchConfig, windows: int = 1) -> dict[str, np.ndarray]:
    """One stream of `windows` windows: mid-grey 8x8 frames, silent-level mel (small as JSON)."""
    time, audio = config.time, config.audio
    video = np.zeros(
        (1, windows, time.segments_per_window, time.segment_frames, 3,
         EXAMPLE_FRAME_SIZE, EXAMPLE_FRAME_SIZE), np.float32,
    )
    mel = np.zeros(
        (1, windows, time.segments_per_window, audio.n_mels, audio.segment_mel_frames), np.float32
    )
    return {"video": video, "audio": mel}


def _device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def resize_frames(video: torch.Tensor, size: int) -> torch.Tensor:
    """(..., 3, H, W) -> (..., 3, size, size), bilinear with antialiasing; unchanged if equal."""
    if video.shape[-2:] == (size, size):
        return video
    lead = video.shape[:-3]
    flat = video.reshape(-1, *video.shape[-3:])
    resized = torch.nn.functional.interpolate(
        flat, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return resized.reshape(*lead, 3, size, size)


def predict_probabilities(model: StreamingModel, video: torch.Tensor,
                          audio: torch.Tensor) -> torch.Tensor:
    """(B, W, ...) -> (B, W, C) probabilities, one window at a time through `step` (memory stays
    that of one window however long the stream)."""
    state = model.init_state(video.shape[0])
    out = []
    for index in range(video.shape[1]):
        logits, state = model.step(Window(video[:, index], audio[:, index]), state)
        out.append(logits.float().softmax(dim=-1))
    return torch.stack(out, dim=1)


class StreamingOffsetModel(mlflow.pyfunc.PythonModel):
    """`predict({"video": ..., "audio": ...})` -> (B, W, C) offset probabilities (see module)."""

    # Inputs are checked against the logged tensor signature; MLflow's type-hint validation of
    # `predict` (which expects list inputs and warns without hints) is switched off.
    _skip_type_hint_validation = True

    model: StreamingModel
    config: AssynchConfig
    device: torch.device

    def load_context(self, context: Any) -> None:
        settings = dict(getattr(context, "model_config", None) or {})
        self.device = _device(str(settings.get("device", "auto")))
        self.model, self.config = load_model_checkpoint(
            context.artifacts[WEIGHTS_ARTIFACT], map_location=self.device
        )
        self.model.eval()

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        if not isinstance(model_input, dict) or not {"video", "audio"} <= set(model_input):
            raise ValueError(
                "model input must be a dict with 'video' (B, W, S, F, 3, H, W) and 'audio' "
                "(B, W, S, n_mels, T) float32 arrays"
            )
        video = torch.as_tensor(np.asarray(model_input["video"], np.float32), device=self.device)
        audio = torch.as_tensor(np.asarray(model_input["audio"], np.float32), device=self.device)
        if video.dim() != 7 or audio.dim() != 5:
            raise ValueError(
                f"video must have 7 dims (B, W, S, F, 3, H, W) and audio 5 (B, W, S, n_mels, T); "
                f"got {tuple(video.shape)} and {tuple(audio.shape)}"
            )
        with torch.inference_mode():
            video = resize_frames(video, self.config.video.crop)
            probabilities = predict_probabilities(self.model, video, audio)
        return probabilities.cpu().numpy().astype(np.float32)
