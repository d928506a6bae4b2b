"""Where and when things happen in a synthetic clip: events, sprite tracks and sound cues.

Audio-visual events are a renewal process: the gap between two onsets is `min_event_gap_sec` plus
an exponential draw, so the mean gap is `event_interval_sec`. Every onset sits on a frame time, so
the picture change and the sound start at the same instant. Distractors are a second process;
one that would overlap an audio-visual event (or another distractor) moves to the next free
gap, so each listed onset stays unambiguous.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from assynch.synth.schema import SoundKind, SynthEvent, SynthSpec

FLASH_FRAMES = 2
FADE_SEC = 0.24
SPAN_MARGIN_SEC = 0.3
EDGE_MARGIN_SEC = 0.3
WHITE = (255, 255, 255)
# At hard, most distractors are silent moving objects like the events' (so a moving object is
# no sign of a sound); the rest are off-screen sounds.
HARD_SILENT_SHARE = 0.7
# At hard, the side of a moving object (events and silent motion alike), as a fraction of the
# centred square's side.
HARD_OBJECT_SIZE = (0.07, 0.12)


@dataclass(frozen=True)
class SpriteTrack:
    """A sprite drawn on frames `frames` at centres (cx, cy) with opacity `alpha`."""

    frames: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    alpha: np.ndarray
    flash: np.ndarray
    width: int
    height: int
    shape: str
    color: tuple[int, int, int]


@dataclass(frozen=True)
class SoundCue:
    time_sec: float
    kind: SoundKind
    amplitude: float
    params: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ClipPlan:
    num_frames: int
    fps: float
    events: list[SynthEvent]
    tracks: list[SpriteTrack]
    sounds: list[SoundCue]


Built = tuple[SynthEvent, list[SpriteTrack], list[SoundCue]]


@dataclass(frozen=True)
class _Draft:
    """One event before it is placed in time: its extent around the onset frame, and how to
    build its track, sounds and description once the onset frame is known."""

    kind: str
    lead_frames: int
    tail_frames: int
    build: Callable[[int], Built]


def clip_rngs(seed: int) -> dict[str, np.random.Generator]:
    """Independent random streams for the parts of a clip, so each part is stable alone."""
    names = ("plan", "scene", "audio")
    children = np.random.SeedSequence(seed).spawn(len(names))
    return {name: np.random.default_rng(child) for name, child in zip(names, children, strict=True)}


def num_frames_for(duration_sec: float, fps: float) -> int:
    return max(1, int(round(duration_sec * fps)))


def plan_clip(duration_sec: float, seed: int, spec: SynthSpec) -> ClipPlan:
    """Place every event of a clip; deterministic for (duration, seed, spec)."""
    rng = clip_rngs(seed)["plan"]
    fps = spec.fps
    num_frames = num_frames_for(duration_sec, fps)
    placed = _place_audio_visual(rng, spec, num_frames)
    if spec.distractors:
        placed += _place_distractors(rng, spec, num_frames, placed)
    placed.sort(key=lambda item: item[0])
    events: list[SynthEvent] = []
    tracks: list[SpriteTrack] = []
    sounds: list[SoundCue] = []
    for _, _, _, (event, event_tracks, event_sounds) in placed:
        events.append(event)
        tracks.extend(event_tracks)
        sounds.extend(event_sounds)
    return ClipPlan(num_frames, fps, events, tracks, sounds)


def plan_events(duration_sec: float, seed: int, spec: SynthSpec) -> list[SynthEvent]:
    """The events `generate_clip` would write for these arguments, without rendering anything."""
    return plan_clip(duration_sec, seed, spec).events


Placed = tuple[int, int, int, Built]


def _place_audio_visual(rng: np.random.Generator, spec: SynthSpec, num_frames: int) -> list[Placed]:
    fps = spec.fps
    extra_mean = spec.event_interval_sec - spec.min_event_gap_sec
    edge = math.ceil(EDGE_MARGIN_SEC * fps)
    gap_frames = math.ceil(SPAN_MARGIN_SEC * fps)
    placed: list[Placed] = []
    busy_until = -gap_frames
    wanted = EDGE_MARGIN_SEC + rng.exponential(extra_mean)
    while True:
        kind = str(rng.choice(list(spec.event_kinds)))
        draft = _DRAFTERS[kind](rng, spec)
        onset = max(
            math.ceil(wanted * fps - 1e-9),
            busy_until + gap_frames + draft.lead_frames,
            edge + draft.lead_frames,
        )
        if onset + draft.tail_frames > num_frames - edge:
            return placed
        placed.append(
            (onset - draft.lead_frames, onset, onset + draft.tail_frames, draft.build(onset))
        )
        busy_until = onset + draft.tail_frames
        wanted = onset / fps + spec.min_event_gap_sec + rng.exponential(extra_mean)


def _place_distractors(
    rng: np.random.Generator, spec: SynthSpec, num_frames: int, taken: list[Placed]
) -> list[Placed]:
    fps = spec.fps
    edge = math.ceil(EDGE_MARGIN_SEC * fps)
    gap_frames = math.ceil(SPAN_MARGIN_SEC * fps)
    spans = [(start, end) for start, _, end, _ in taken]
    placed: list[Placed] = []
    silent_share = HARD_SILENT_SHARE if spec.difficulty == "hard" else 0.5
    t = rng.exponential(spec.distractor_interval_sec)
    while t * fps < num_frames:
        kind = "silent_motion" if rng.random() < silent_share else "offscreen_sound"
        drafter = _draft_silent_motion_hard if (
            kind == "silent_motion" and spec.difficulty == "hard"
        ) else _DRAFTERS[kind]
        draft = drafter(rng, spec)
        wanted = max(math.ceil(t * fps - 1e-9) - draft.lead_frames, edge)
        t += rng.exponential(spec.distractor_interval_sec)
        start = _first_free_start(wanted, draft.lead_frames + draft.tail_frames, spans, gap_frames)
        onset = start + draft.lead_frames
        end = onset + draft.tail_frames
        if end > num_frames - edge:
            continue
        spans.append((start, end))
        placed.append((start, onset, end, draft.build(onset)))
    return placed


def _first_free_start(wanted: int, length: int, spans: list[tuple[int, int]], gap: int) -> int:
    """The earliest start >= wanted where [start, start + length) keeps `gap` frames from
    every span."""
    start = wanted
    for span_start, span_end in sorted(spans):
        if start + length + gap <= span_start:
            break
        if start < span_end + gap:
            start = span_end + gap
    return start


# ---------------------------------------------------------------------------------------------
# Event kinds


def _frames(seconds: float, fps: float, minimum: int = 1) -> int:
    return max(minimum, int(round(seconds * fps)))


def _dark_color(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(8, 70, size=3))  # type: ignore[return-value]


def _bright_color(rng: np.random.Generator) -> tuple[int, int, int]:
    hue = rng.random(3)
    color = 185 + 70 * hue / hue.max()
    return tuple(int(c) for c in np.clip(color, 0, 255))  # type: ignore[return-value]


def _box(cx: float, cy: float, w: int, h: int, spec: SynthSpec) -> tuple[int, int, int, int]:
    x0 = max(0, int(round(cx - w / 2)))
    y0 = max(0, int(round(cy - h / 2)))
    x1 = min(spec.width, int(round(cx + w / 2)))
    y1 = min(spec.height, int(round(cy + h / 2)))
    return x0, y0, x1 - x0, y1 - y0


def _centre_square(spec: SynthSpec) -> tuple[float, float, int]:
    """Left, top and side of the centred square of side min(width, height): the part of the
    frame a square centre crop (the default video features) keeps. Audio-visual events happen
    inside it."""
    side = min(spec.width, spec.height)
    return (spec.width - side) / 2, (spec.height - side) / 2, side


def _fade_out(rest: int, fade: int) -> np.ndarray:
    return np.concatenate([np.ones(rest), np.linspace(1.0, 0.0, fade + 2)[1:-1]])


def _draft_impact(rng: np.random.Generator, spec: SynthSpec) -> _Draft:
    fps = spec.fps
    left, top, side = _centre_square(spec)
    size = max(6, int(round(rng.uniform(0.12, 0.18) * side)))
    shape = "disc" if rng.random() < 0.5 else "box"
    rest_x = left + rng.uniform(0.6 * size, side - 0.6 * size)
    rest_y = top + rng.uniform(0.45 * side, side - 0.6 * size)
    approach = _frames(rng.uniform(0.2, 0.36), fps, minimum=3)
    falling = rng.random() < 0.6
    if falling:
        start_x, start_y = rest_x + rng.uniform(-0.25, 0.25) * side, -float(size)
    else:
        start_x = -float(size) if rng.random() < 0.5 else float(spec.width + size)
        start_y = rest_y - rng.uniform(0.0, 0.3) * side
    rest = FLASH_FRAMES + _frames(rng.uniform(0.4, 0.9), fps)
    fade = _frames(FADE_SEC, fps)
    color = _dark_color(rng)
    sound = {
        "thump_hz": rng.uniform(60, 180),
        "thump_decay": rng.uniform(0.04, 0.12),
        "noise_decay": rng.uniform(0.008, 0.03),
        "brightness": rng.uniform(0.2, 0.8),
    }
    amplitude = rng.uniform(0.35, 0.6)

    def build(onset: int) -> Built:
        tau = np.arange(approach) / approach
        progress = tau**2 if falling else tau
        cx = np.concatenate([start_x + (rest_x - start_x) * progress, np.full(rest + fade, rest_x)])
        cy = np.concatenate([start_y + (rest_y - start_y) * progress, np.full(rest + fade, rest_y)])
        alpha = np.concatenate([np.ones(approach), _fade_out(rest, fade)])
        flash = np.zeros(alpha.size, dtype=bool)
        flash[approach : approach + FLASH_FRAMES] = True
        frames = np.arange(onset - approach, onset + rest + fade)
        track = SpriteTrack(frames, cx, cy, alpha, flash, size, size, shape, color)
        time = onset / fps
        event = SynthEvent(
            kind="impact",
            audio_visual=True,
            time_sec=time,
            frame=onset,
            duration_sec=(rest + fade) / fps,
            onsets_sec=(time,),
            box=_box(rest_x, rest_y, size, size, spec),
            sound="knock",
            visual=shape,
            color=color,
        )
        return event, [track], [SoundCue(time, "knock", amplitude, sound)]

    return _Draft("impact", approach, rest + fade, build)


def _draft_appear(rng: np.random.Generator, spec: SynthSpec) -> _Draft:
    fps = spec.fps
    left, top, side = _centre_square(spec)
    size = max(8, int(round(rng.uniform(0.16, 0.26) * side)))
    shape = "disc" if rng.random() < 0.5 else "box"
    cx = left + rng.uniform(0.6 * size, side - 0.6 * size)
    cy = top + rng.uniform(0.6 * size, side - 0.6 * size)
    rest = FLASH_FRAMES + _frames(rng.uniform(0.4, 0.9), fps)
    fade = _frames(FADE_SEC, fps)
    color = _bright_color(rng)
    tone = {"freq_hz": rng.uniform(400, 1600), "length_sec": rng.uniform(0.12, 0.3)}
    amplitude = rng.uniform(0.2, 0.35)

    def build(onset: int) -> Built:
        alpha = _fade_out(rest, fade)
        flash = np.zeros(alpha.size, dtype=bool)
        flash[:FLASH_FRAMES] = True
        frames = np.arange(onset, onset + alpha.size)
        track = SpriteTrack(
            frames,
            np.full(alpha.size, cx),
            np.full(alpha.size, cy),
            alpha,
            flash,
            size,
            size,
            shape,
            color,
        )
        time = onset / fps
        event = SynthEvent(
            kind="appear",
            audio_visual=True,
            time_sec=time,
            frame=onset,
            duration_sec=alpha.size / fps,
            onsets_sec=(time,),
            box=_box(cx, cy, size, size, spec),
            sound="tone",
            visual=shape,
            color=color,
        )
        return event, [track], [SoundCue(time, "tone", amplitude, tone)]

    return _Draft("appear", 0, rest + fade, build)


def _draft_rhythm(rng: np.random.Generator, spec: SynthSpec) -> _Draft:
    fps = spec.fps
    left, top, side = _centre_square(spec)
    taps = int(rng.integers(3, 7))
    period = _frames(rng.uniform(0.26, 0.4), fps, minimum=4)
    size = max(6, int(round(rng.uniform(0.1, 0.15) * side)))
    lift = rng.uniform(1.2, 2.0) * size
    cx = left + rng.uniform(0.6 * size, side - 0.6 * size)
    cy = top + rng.uniform(0.35 * side + lift, side - 0.6 * size)
    fade = _frames(FADE_SEC, fps)
    hold = _frames(0.3, fps)
    descent = period // 2
    color = _dark_color(rng)
    click = {"ping_hz": rng.uniform(900, 3000), "decay": rng.uniform(0.008, 0.02)}
    amplitude = rng.uniform(0.3, 0.45)
    lead = fade + descent
    tail = (taps - 1) * period + hold + fade

    def build(onset: int) -> Built:
        frames = np.arange(onset - lead, onset + tail)
        phase = (frames - onset) / period
        height = lift * np.abs(np.sin(np.pi * phase))
        height[frames < onset - descent] = lift
        height[frames > onset + (taps - 1) * period] = 0.0
        alpha = np.concatenate(
            [
                np.linspace(0.0, 1.0, fade + 1)[1:],
                np.ones(descent),
                _fade_out((taps - 1) * period + hold, fade),
            ]
        )
        tap_frames = onset + period * np.arange(taps)
        flash = np.isin(frames, tap_frames) | np.isin(frames, tap_frames + 1)
        track = SpriteTrack(
            frames, np.full(frames.size, cx), cy - height, alpha, flash, size, size, "box", color
        )
        times = tuple(float(f) / fps for f in tap_frames)
        cues = [
            SoundCue(t, "click", amplitude * scale, click)
            for t, scale in zip(times, np.linspace(1.0, 0.8, taps), strict=True)
        ]
        event = SynthEvent(
            kind="rhythm",
            audio_visual=True,
            time_sec=times[0],
            frame=onset,
            duration_sec=tail / fps,
            onsets_sec=times,
            box=_box(cx, cy, size, size, spec),
            sound="click",
            visual="box",
            color=color,
        )
        return event, [track], cues

    return _Draft("rhythm", lead, tail, build)


def _draft_silent_motion(rng: np.random.Generator, spec: SynthSpec) -> _Draft:
    fps, w_px, h_px = spec.fps, spec.width, spec.height
    size = max(6, int(round(rng.uniform(0.08, 0.2) * h_px)))
    shape = "disc" if rng.random() < 0.5 else "box"
    length = _frames(rng.uniform(1.0, 2.5), fps, minimum=4)
    left_to_right = rng.random() < 0.5
    x_from, x_to = -float(size), float(w_px + size)
    if not left_to_right:
        x_from, x_to = x_to, x_from
    y_from, y_to = rng.uniform(0.2, 0.8, size=2) * h_px
    bend = rng.uniform(-0.15, 0.15) * h_px
    color = tuple(int(c) for c in rng.integers(30, 230, size=3))

    def build(onset: int) -> Built:
        tau = np.arange(length) / (length - 1)
        cx = x_from + (x_to - x_from) * tau
        cy = y_from + (y_to - y_from) * tau + bend * np.sin(np.pi * tau)
        frames = np.arange(onset, onset + length)
        track = SpriteTrack(
            frames, cx, cy, np.ones(length), np.zeros(length, dtype=bool), size, size, shape, color
        )  # type: ignore[arg-type]
        event = SynthEvent(
            kind="silent_motion",
            audio_visual=False,
            time_sec=onset / fps,
            frame=onset,
            duration_sec=length / fps,
            onsets_sec=(),
            box=None,
            sound=None,
            visual=shape,
            color=color,  # type: ignore[arg-type]
        )
        return event, [track], []

    return _Draft("silent_motion", 0, length, build)


def _draft_offscreen_sound(rng: np.random.Generator, spec: SynthSpec) -> _Draft:
    fps = spec.fps
    kind: SoundKind = ("knock", "tone", "click")[int(rng.integers(3))]  # type: ignore[assignment]
    if kind == "knock":
        params = {
            "thump_hz": rng.uniform(60, 180),
            "thump_decay": rng.uniform(0.04, 0.12),
            "noise_decay": rng.uniform(0.008, 0.03),
            "brightness": rng.uniform(0.2, 0.8),
        }
        amplitude = rng.uniform(0.3, 0.55)
    elif kind == "tone":
        params = {"freq_hz": rng.uniform(300, 2000), "length_sec": rng.uniform(0.1, 0.35)}
        amplitude = rng.uniform(0.15, 0.3)
    else:
        params = {"ping_hz": rng.uniform(900, 3000), "decay": rng.uniform(0.008, 0.02)}
        amplitude = rng.uniform(0.25, 0.4)
    length = _frames(0.4, fps)

    def build(onset: int) -> Built:
        time = onset / fps
        event = SynthEvent(
            kind="offscreen_sound",
            audio_visual=False,
            time_sec=time,
            frame=onset,
            duration_sec=length / fps,
            onsets_sec=(time,),
            box=None,
            sound=kind,
        )
        return event, [], [SoundCue(time, kind, amplitude, params)]

    return _Draft("offscreen_sound", 0, length, build)


# ---------------------------------------------------------------------------------------------
# Hard kinds: the moment is a contact or a reversal of a small object's motion. No flash, no
# appearance at the onset: objects fade in and out slowly and keep moving through the contact,
# so the only cue is where the object is and which way it goes.

SURFACE_FADE_SEC = 0.3


def _saturated_color(rng: np.random.Generator) -> tuple[int, int, int]:
    """A strongly coloured object (one channel high, one low), unlike the greyish scene."""
    channels = [rng.uniform(190, 255), rng.uniform(10, 60), rng.uniform(10, 255)]
    order = rng.permutation(3)
    return tuple(int(channels[i]) for i in order)  # type: ignore[return-value]


def _ramp(count: int, rising: bool) -> np.ndarray:
    """`count` opacities strictly between 0 and 1, rising or falling linearly."""
    ramp = np.linspace(0.0, 1.0, count + 2)[1:-1]
    return ramp if rising else ramp[::-1]


def _surface_track(
    first: int, last: int, cx: float, cy: float, width: int, height: int, color: tuple[int, ...],
    fps: float,
) -> SpriteTrack:
    """A static bar seen from frame `first` to `last` (inclusive), fading in before and out
    after."""
    fade = _frames(SURFACE_FADE_SEC, fps)
    frames = np.arange(first - fade, last + fade + 1)
    alpha = np.concatenate([_ramp(fade, True), np.ones(last - first + 1), _ramp(fade, False)])
    count = frames.size
    return SpriteTrack(
        frames, np.full(count, cx), np.full(count, cy), alpha, np.zeros(count, dtype=bool),
        width, height, "box", color,  # type: ignore[arg-type]
    )


def _object_box(cx: float, cy: float, size: int, spec: SynthSpec) -> tuple[int, int, int, int]:
    return _box(cx, cy, size, size, spec)


def _union(boxes: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
    x0 = min(b[0] for b in boxes)
    y0 = min(b[1] for b in boxes)
    x1 = max(b[0] + b[2] for b in boxes)
    y1 = max(b[1] + b[3] for b in boxes)
    return x0, y0, x1 - x0, y1 - y0


def _draft_bounce(rng: np.random.Generator, spec: SynthSpec) -> _Draft:
    """A ball falls onto a floor bar and bounces 0-2 more times (each contact a knock), then
    lands and rolls on, fading out. Gravity and restitution are physical, so the ball is
    fastest at each contact and its vertical motion reverses there."""
    fps = spec.fps
    left, top, side = _centre_square(spec)
    size = max(6, int(round(rng.uniform(*HARD_OBJECT_SIZE) * side)))
    contacts_wanted = int(rng.choice([1, 2, 3], p=[0.35, 0.35, 0.3]))
    restitution = rng.uniform(0.55, 0.8)
    fall = _frames(rng.uniform(0.35, 0.55), fps, minimum=4)
    floor_y = top + rng.uniform(0.62, 0.9) * side
    drop = rng.uniform(0.35, 0.7) * side
    gravity = 2.0 * drop / (fall / fps) ** 2
    speed = gravity * fall / fps
    flights: list[int] = []
    for _ in range(contacts_wanted - 1):
        speed *= restitution
        flight = int(round(2.0 * speed / gravity * fps))
        if flight < 5:
            break
        flights.append(flight)
    roll = _frames(rng.uniform(0.4, 0.7), fps, minimum=3)
    span = fall + sum(flights) + roll
    room = side - 1.5 * size
    vx = rng.uniform(0.15, 0.45) * side * (1.0 if rng.random() < 0.5 else -1.0)
    vx = float(np.clip(vx, -room * fps / span, room * fps / span))
    travel = abs(vx) * span / fps
    x_low = left + 0.75 * size + rng.uniform(0.0, max(room - travel, 0.0))
    x_start = x_low if vx > 0 else x_low + travel
    color = _saturated_color(rng)
    surface_color = _dark_color(rng)
    thickness = max(2, size // 4)
    amplitude = rng.uniform(0.35, 0.6)
    knock = {
        "thump_hz": rng.uniform(60, 180),
        "thump_decay": rng.uniform(0.04, 0.12),
        "noise_decay": rng.uniform(0.008, 0.03),
        "brightness": rng.uniform(0.2, 0.8),
    }
    fade_in = max(2, min(fall // 2, _frames(0.3, fps)))
    tail = sum(flights) + roll + _frames(SURFACE_FADE_SEC, fps)
    lead = fall + _frames(SURFACE_FADE_SEC, fps)  # the floor fades in before the fall

    def build(onset: int) -> Built:
        steps = np.arange(-fall, span - fall + 1)  # frames relative to the first contact
        cx = x_start + vx * (steps + fall) / fps
        cy = np.empty(steps.size)
        tau = (steps[: fall + 1] + fall) / fps
        cy[: fall + 1] = floor_y - drop + 0.5 * gravity * tau**2
        contact_steps = [0]
        at = fall + 1
        for flight in flights:
            tau = np.arange(1, flight + 1) / fps
            cy[at : at + flight] = floor_y - 0.5 * gravity * tau * (flight / fps - tau)
            at += flight
            contact_steps.append(contact_steps[-1] + flight)
        cy[at:] = floor_y
        alpha = np.ones(steps.size)
        alpha[:fade_in] = _ramp(fade_in, True)
        alpha[-roll:] = _ramp(roll, False)
        ball = SpriteTrack(
            onset + steps, cx, cy, alpha, np.zeros(steps.size, dtype=bool), size, size, "disc",
            color,
        )
        x0, x1 = float(cx.min()), float(cx.max())
        surface = _surface_track(
            onset - fall, onset + span - fall, (x0 + x1) / 2, floor_y + size / 2 + thickness / 2,
            int(round(x1 - x0 + 2.5 * size)), thickness, surface_color, fps,
        )
        boxes = [_object_box(cx[fall + k], floor_y, size, spec) for k in contact_steps]
        times = tuple((onset + k) / fps for k in contact_steps)
        cues = [
            SoundCue(t, "knock", amplitude * max(0.5, restitution**i), knock)
            for i, t in enumerate(times)
        ]
        event = SynthEvent(
            kind="bounce",
            audio_visual=True,
            time_sec=times[0],
            frame=onset,
            duration_sec=(span - fall) / fps,
            onsets_sec=times,
            box=_union(boxes),
            sound="knock",
            visual="disc",
            color=color,
            onset_boxes=tuple(boxes),
        )
        return event, [surface, ball], cues

    return _Draft("bounce", lead, tail, build)


def _draft_reverse(rng: np.random.Generator, spec: SynthSpec) -> _Draft:
    """A block slides at constant speed, hits a wall bar and slides back (each hit a tap),
    1-3 times between two walls, then slides away fading out. Its speed does not change at a
    hit, only its direction."""
    fps = spec.fps
    left, top, side = _centre_square(spec)
    size = max(6, int(round(rng.uniform(*HARD_OBJECT_SIZE) * side)))
    horizontal = rng.random() < 0.5
    contacts = int(rng.choice([1, 2, 3], p=[0.35, 0.35, 0.3]))
    speed = rng.uniform(0.35, 0.7) * side  # pixels per second
    distance = speed * rng.uniform(0.35, 0.8)  # between the two walls
    leg_speeds = speed * rng.uniform(0.8, 1.25, size=contacts + 1)
    legs = [max(4, int(round(distance / s * fps))) for s in leg_speeds[1:contacts]]
    lead = _frames(rng.uniform(0.4, 0.8), fps, minimum=4)
    tail_move = _frames(rng.uniform(0.4, 0.8), fps, minimum=4)
    if contacts > 1:
        lead = max(4, min(lead, int(0.9 * distance / leg_speeds[0] * fps)))
        tail_move = max(4, min(tail_move, int(0.9 * distance / leg_speeds[-1] * fps)))
    direction = 1.0 if rng.random() < 0.5 else -1.0  # of the approach to the first wall
    thickness = max(2, size // 4)
    reach = max(distance if contacts > 1 else 0.0, leg_speeds[0] * lead / fps,
                leg_speeds[-1] * tail_move / fps)
    along_room = side - size - 2 * thickness - reach
    cross = rng.uniform(1.3 * size, side - 1.3 * size)
    # Wall A (first contact) sits at u = 0 in the object's centre coordinate.
    if direction > 0:
        wall_a = size / 2 + thickness + reach + rng.uniform(0, max(along_room, 0.0))
    else:
        wall_a = size / 2 + thickness + rng.uniform(0, max(along_room, 0.0))
    color = _saturated_color(rng)
    surface_color = _dark_color(rng)
    sound_kind: SoundKind = "click" if rng.random() < 0.5 else "knock"
    if sound_kind == "click":
        params = {"ping_hz": rng.uniform(900, 3000), "decay": rng.uniform(0.008, 0.02)}
        amplitude = rng.uniform(0.3, 0.45)
    else:
        params = {
            "thump_hz": rng.uniform(80, 200),
            "thump_decay": rng.uniform(0.03, 0.08),
            "noise_decay": rng.uniform(0.008, 0.02),
            "brightness": rng.uniform(0.4, 0.9),
        }
        amplitude = rng.uniform(0.35, 0.55)
    fade_in = max(2, lead // 2)
    span = sum(legs) + tail_move
    tail = span + _frames(SURFACE_FADE_SEC, fps)
    lead_extent = lead + _frames(SURFACE_FADE_SEC, fps)  # the walls fade in first

    def build(onset: int) -> Built:
        u = [wall_a - direction * leg_speeds[0] * np.arange(lead, 0, -1) / fps, [wall_a]]
        position, heading = wall_a, -direction  # after the first hit it moves back
        contact_steps = [0]
        for leg in legs:
            target = position + heading * distance
            u.append(position + (target - position) * np.arange(1, leg + 1) / leg)
            position, heading = target, -heading
            contact_steps.append(contact_steps[-1] + leg)
        u.append(position + heading * leg_speeds[-1] * np.arange(1, tail_move + 1) / fps)
        along = np.concatenate(u)
        steps = np.arange(-lead, span + 1)
        alpha = np.ones(steps.size)
        alpha[:fade_in] = _ramp(fade_in, True)
        alpha[-tail_move:] = _ramp(tail_move, False)
        if horizontal:
            cx, cy = left + along, np.full(steps.size, top + cross)
        else:
            cx, cy = np.full(steps.size, left + cross), top + along
        block = SpriteTrack(
            onset + steps, cx, cy, alpha, np.zeros(steps.size, dtype=bool), size, size, "box",
            color,
        )
        walls = [wall_a]
        if contacts > 1:
            walls.append(wall_a - direction * distance)
        surfaces = []
        for index, wall in enumerate(walls):
            outward = direction if index == 0 else -direction
            at = wall + outward * (size / 2 + thickness / 2)
            length = int(round(2.2 * size))
            if horizontal:
                centre, shape = (left + at, top + cross), (thickness, length)
            else:
                centre, shape = (left + cross, top + at), (length, thickness)
            surfaces.append(
                _surface_track(onset - lead, onset + span, *centre, *shape, surface_color, fps)
            )
        boxes = [_object_box(cx[lead + k], cy[lead + k], size, spec) for k in contact_steps]
        times = tuple((onset + k) / fps for k in contact_steps)
        cues = [
            SoundCue(t, sound_kind, amplitude * scale, params)
            for t, scale in zip(times, np.linspace(1.0, 0.85, len(times)), strict=True)
        ]
        event = SynthEvent(
            kind="reverse",
            audio_visual=True,
            time_sec=times[0],
            frame=onset,
            duration_sec=span / fps,
            onsets_sec=times,
            box=_union(boxes),
            sound=sound_kind,
            visual="box",
            color=color,
            onset_boxes=tuple(boxes),
        )
        return event, [*surfaces, block], cues

    return _Draft("reverse", lead_extent, tail, build)


def _draft_silent_motion_hard(rng: np.random.Generator, spec: SynthSpec) -> _Draft:
    """An object like the hard events' (size, colour, speed) moving through the view without a
    sound or a contact: fades in, glides on a gently bent path, fades out."""
    fps, w_px, h_px = spec.fps, spec.width, spec.height
    side = min(w_px, h_px)
    size = max(6, int(round(rng.uniform(*HARD_OBJECT_SIZE) * side)))
    shape = "disc" if rng.random() < 0.5 else "box"
    length = _frames(rng.uniform(1.0, 2.5), fps, minimum=8)
    speed = rng.uniform(0.3, 0.7) * side
    angle = rng.uniform(0, 2 * np.pi)
    x0, y0 = rng.uniform(0.15, 0.85) * w_px, rng.uniform(0.15, 0.85) * h_px
    bend = rng.uniform(-0.1, 0.1) * side
    color = _saturated_color(rng)
    fade = max(2, min(length // 3, _frames(0.3, fps)))

    def build(onset: int) -> Built:
        tau = np.arange(length) / fps
        along = speed * tau
        wobble = bend * np.sin(np.pi * tau / tau[-1])
        cx = x0 + along * np.cos(angle) - wobble * np.sin(angle)
        cy = y0 + along * np.sin(angle) + wobble * np.cos(angle)
        alpha = np.ones(length)
        alpha[:fade] = _ramp(fade, True)
        alpha[-fade:] = _ramp(fade, False)
        frames = np.arange(onset, onset + length)
        track = SpriteTrack(
            frames, cx, cy, alpha, np.zeros(length, dtype=bool), size, size, shape, color
        )
        event = SynthEvent(
            kind="silent_motion",
            audio_visual=False,
            time_sec=onset / fps,
            frame=onset,
            duration_sec=length / fps,
            onsets_sec=(),
            box=None,
            sound=None,
            visual=shape,
            color=color,
        )
        return event, [track], []

    return _Draft("silent_motion", 0, length, build)


_DRAFTERS = {
    "impact": _draft_impact,
    "appear": _draft_appear,
    "rhythm": _draft_rhythm,
    "bounce": _draft_bounce,
    "reverse": _draft_reverse,
    "silent_motion": _draft_silent_motion,
    "offscreen_sound": _draft_offscreen_sound,
}
