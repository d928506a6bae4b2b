"""What a synthetic clip is made of: the generation spec, its events, and the sidecar JSON.

The sidecar `<name>.json` beside each `<name>.mp4` is a `ClipEvents` dumped as JSON; `load_events`
reads and validates it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from assynch.errors import UserError

SIDECAR_SCHEMA_VERSION = 1

AudioVisualKind = Literal["impact", "appear", "rhythm", "bounce", "reverse"]
DistractorKind = Literal["silent_motion", "offscreen_sound"]
EventKind = Literal[
    "impact", "appear", "rhythm", "bounce", "reverse", "silent_motion", "offscreen_sound"
]
SoundKind = Literal["knock", "tone", "click"]
Difficulty = Literal["easy", "hard"]

AAC_SAMPLE_RATES = (16000, 22050, 24000, 32000, 44100, 48000)

# `easy`: onsets a global frame difference finds (flashes, appearances). `hard`: the moment is a
# contact or a reversal of a small object's motion, with no brightness change.
EASY_KINDS: tuple[AudioVisualKind, ...] = ("impact", "appear", "rhythm")
HARD_KINDS: tuple[AudioVisualKind, ...] = ("bounce", "reverse")
AUDIO_VISUAL_KINDS: tuple[AudioVisualKind, ...] = EASY_KINDS + HARD_KINDS
DISTRACTOR_KINDS: tuple[DistractorKind, ...] = ("silent_motion", "offscreen_sound")

# What `difficulty="hard"` changes in the spec's defaults (a field given explicitly wins).
# Events sparser than one per 4.8 s window; distractors twice as often as events.
HARD_DEFAULTS: dict[str, object] = {
    "event_interval_sec": 7.0,
    "min_event_gap_sec": 2.5,
    "event_kinds": HARD_KINDS,
    "distractor_interval_sec": 3.5,
}


class SynthError(UserError, ValueError):
    """A synthetic-data request or sidecar that cannot be used; the message says how to fix it."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SynthSpec(_Frozen):
    """How synthetic clips look and sound. Everything except the seed and the duration.

    `difficulty` picks the camera, the distractors and the defaults of the event fields
    (`HARD_DEFAULTS`); fields passed explicitly keep their values.
    """

    difficulty: Difficulty = Field(
        "easy",
        description="easy: flashes and knocks on a slowly moving view; hard: contacts and "
        "reversals of small objects under strong head motion and exposure changes",
    )
    width: int = Field(320, ge=32, le=4096, description="frame width in pixels (even)")
    height: int = Field(240, ge=32, le=4096, description="frame height in pixels (even)")
    fps: float = Field(25.0, ge=1.0, le=120.0, description="video frames per second")
    sample_rate: int = Field(48000, description="audio samples per second (AAC, mono)")
    event_interval_sec: float = Field(
        5.0, gt=0, description="mean time between audio-visual events"
    )
    min_event_gap_sec: float = Field(
        1.5, ge=0.5, description="smallest time between two audio-visual events"
    )
    event_kinds: tuple[AudioVisualKind, ...] = Field(
        EASY_KINDS, min_length=1, description="audio-visual event kinds to draw from"
    )
    distractors: bool = Field(True, description="add silent motion and off-screen sounds")
    distractor_interval_sec: float = Field(
        6.0, gt=0, description="mean time between distractors (before dropping overlaps)"
    )
    ambient_noise: bool = Field(True, description="filtered noise with drifting level and colour")
    camera_motion: bool = Field(
        True,
        description="pan, hand-held shake and brightness drift (hard: head turns, strong shake "
        "and exposure steps)",
    )
    x264_preset: str = Field("ultrafast", description="libx264 preset")
    x264_crf: int = Field(23, ge=0, le=51, description="libx264 constant rate factor")

    @model_validator(mode="before")
    @classmethod
    def _difficulty_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("difficulty") == "hard":
            return {**HARD_DEFAULTS, **data}
        return data

    @model_validator(mode="after")
    def _check(self) -> SynthSpec:
        problems = []
        if self.width % 2 or self.height % 2:
            problems.append(
                f"width and height must be even for H.264 yuv420p, got {self.width}x{self.height}"
            )
        if self.sample_rate not in AAC_SAMPLE_RATES:
            problems.append(
                f"sample_rate {self.sample_rate} is not one of {AAC_SAMPLE_RATES}; use 48000"
            )
        if self.min_event_gap_sec >= self.event_interval_sec:
            problems.append(
                f"min_event_gap_sec ({self.min_event_gap_sec}) must be smaller than "
                f"event_interval_sec ({self.event_interval_sec})"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self


class SynthEvent(_Frozen):
    """One event of a clip. Times are seconds from the first frame; boxes are pixels."""

    kind: EventKind
    audio_visual: bool = Field(description="a sound and its visible cause start together")
    time_sec: float = Field(description="start: first onset, or the start of a silent motion")
    frame: int = Field(description="index of the frame shown at time_sec")
    duration_sec: float = Field(description="how long the event is seen and/or heard")
    onsets_sec: tuple[float, ...] = Field(
        description="sharp onsets: sound and picture together for audio-visual events, sound "
        "only for offscreen_sound, none for silent_motion"
    )
    box: tuple[int, int, int, int] | None = Field(
        None, description="x, y, width, height of where the visual onsets happen (in frame)"
    )
    sound: SoundKind | None = None
    visual: str | None = Field(None, description="what is drawn: 'disc' or 'box' sprite")
    color: tuple[int, int, int] | None = None
    onset_boxes: tuple[tuple[int, int, int, int], ...] | None = Field(
        None,
        description="hard kinds: the moving object's x, y, width, height at each onset (where "
        "it touches the surface or turns); null for easy kinds and distractors",
    )


class AmbientInfo(_Frozen):
    rms_min: float
    rms_max: float
    description: str


class ClipEvents(_Frozen):
    """The sidecar of one clip: how it was made and what happens in it."""

    schema_version: int = SIDECAR_SCHEMA_VERSION
    generator: str = "assynch.synth.clips"
    video_file: str = Field(description="the MP4 beside this JSON")
    seed: int = Field(description="`generate_clip(seed=...)` that reproduces this clip alone")
    set_seed: int | None = Field(None, description="the --seed of the `generate_clips` set")
    clip_index: int | None = Field(None, description="position in the `generate_clips` set")
    duration_sec: float
    num_frames: int
    spec: SynthSpec
    av_version: str
    ambient: AmbientInfo | None
    events: tuple[SynthEvent, ...]

    def audio_visual_events(self) -> list[SynthEvent]:
        return [event for event in self.events if event.audio_visual]

    def distractor_events(self) -> list[SynthEvent]:
        return [event for event in self.events if not event.audio_visual]

    def audio_visual_onsets_sec(self) -> list[float]:
        """Every moment where a sound and its picture start together, in time order."""
        return sorted(t for event in self.audio_visual_events() for t in event.onsets_sec)


def load_events(json_path: str | Path) -> ClipEvents:
    """Read and validate a clip's sidecar JSON."""
    path = Path(json_path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SynthError(
            f"sidecar {path} does not exist; generate clips with `assynch synth --out DIR`"
        ) from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SynthError(f"sidecar {path} is not valid JSON ({exc}); regenerate the clip") from None
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if version != SIDECAR_SCHEMA_VERSION:
        raise SynthError(
            f"sidecar {path} has schema_version {version!r}, this assynch reads "
            f"{SIDECAR_SCHEMA_VERSION}; regenerate the clip with `assynch synth`"
        )
    try:
        return ClipEvents.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise SynthError(
            f"sidecar {path} is not a valid clip description ({problems}); regenerate the clip"
        ) from None
