"""The soundtrack of a synthetic clip, rendered as one numpy array.

Each sound starts exactly at its cue's sample (a 1 ms attack ramp avoids a click before it), so
an audio-visual event's sound onset is its frame time. Ambient noise is a blend of a dark (low
passed) and a bright (pink-ish) noise whose mix and level drift slowly.
"""

from __future__ import annotations

import numpy as np

from assynch.synth.noise import shaped_noise_1d, smooth_curve
from assynch.synth.plan import SoundCue
from assynch.synth.schema import AmbientInfo

AMBIENT_RMS_MIN = 0.004
AMBIENT_RMS_MAX = 0.03
ATTACK_SEC = 0.001
HEADROOM = 0.98
# The drifting level and blend are computed every this many samples and interpolated between.
CONTROL_DECIMATION = 64


def ambient_info() -> AmbientInfo:
    return AmbientInfo(
        rms_min=AMBIENT_RMS_MIN,
        rms_max=AMBIENT_RMS_MAX,
        description="blend of low-passed and pink noise; blend and level drift at 0.02-0.2 Hz",
    )


def render_audio(
    cues: list[SoundCue],
    num_samples: int,
    sample_rate: int,
    rng: np.random.Generator,
    ambient: bool,
) -> np.ndarray:
    """Mono float32 audio in [-1, 1] holding every cue (and ambient noise if asked)."""
    audio = np.zeros(num_samples, dtype=np.float64)
    if ambient:
        audio += ambient_noise(num_samples, sample_rate, rng)
    for cue in cues:
        sound = render_sound(cue, sample_rate, rng)
        start = int(round(cue.time_sec * sample_rate))
        end = min(num_samples, start + sound.size)
        if start < end:
            audio[start:end] += sound[: end - start]
    return np.clip(audio, -HEADROOM, HEADROOM).astype(np.float32)


def ambient_noise(num_samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    def dark(freqs: np.ndarray) -> np.ndarray:
        return 1.0 / np.sqrt(1.0 + (freqs / 250.0) ** 2)

    def bright(freqs: np.ndarray) -> np.ndarray:
        return 1.0 / np.sqrt(np.maximum(freqs, 50.0))

    low = shaped_noise_1d(rng, num_samples, sample_rate, dark)
    high = shaped_noise_1d(rng, num_samples, sample_rate, bright)
    control_count = num_samples // CONTROL_DECIMATION + 2
    control_rate = sample_rate / CONTROL_DECIMATION
    at_samples = np.arange(num_samples) / CONTROL_DECIMATION
    control_points = np.arange(control_count)
    blend = 0.5 + 0.5 * np.interp(
        at_samples, control_points, smooth_curve(rng, control_count, control_rate, 0.02, 0.2)
    )
    level = 0.5 + 0.5 * np.interp(
        at_samples, control_points, smooth_curve(rng, control_count, control_rate, 0.02, 0.2)
    )
    log_rms = np.log(AMBIENT_RMS_MIN) + level * np.log(AMBIENT_RMS_MAX / AMBIENT_RMS_MIN)
    return np.exp(log_rms) * (np.sqrt(blend) * low + np.sqrt(1.0 - blend) * high)


def render_sound(cue: SoundCue, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """One sound, peak-normalised to the cue's amplitude, starting at sample 0."""
    if cue.kind == "knock":
        sound = _knock(cue.params, sample_rate, rng)
    elif cue.kind == "tone":
        sound = _tone(cue.params, sample_rate)
    else:
        sound = _click(cue.params, sample_rate, rng)
    attack = max(1, int(ATTACK_SEC * sample_rate))
    sound[:attack] *= np.linspace(0.0, 1.0, attack, endpoint=False)
    return cue.amplitude * sound / (np.abs(sound).max() + 1e-12)


def _knock(params: dict[str, float], sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    length = int(max(0.3, 6 * params["thump_decay"]) * sample_rate)
    t = np.arange(length) / sample_rate
    thump = np.sin(2 * np.pi * params["thump_hz"] * t) * np.exp(-t / params["thump_decay"])
    noise = rng.standard_normal(length)
    bright = np.diff(noise, prepend=0.0) / 2.0
    crack = (params["brightness"] * bright + (1 - params["brightness"]) * noise) * np.exp(
        -t / params["noise_decay"]
    )
    return 0.7 * thump + 0.6 * crack


def _tone(params: dict[str, float], sample_rate: int) -> np.ndarray:
    length = int(params["length_sec"] * sample_rate)
    t = np.arange(length) / sample_rate
    phase = 2 * np.pi * params["freq_hz"] * t
    tone = np.sin(phase) + 0.3 * np.sin(2 * phase) + 0.15 * np.sin(3 * phase)
    release = min(length, int(0.03 * sample_rate))
    envelope = np.exp(-t / (2.0 * params["length_sec"]))
    envelope[length - release :] *= np.linspace(1.0, 0.0, release)
    return tone * envelope


def _click(params: dict[str, float], sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    length = int(0.12 * sample_rate)
    t = np.arange(length) / sample_rate
    noise = rng.standard_normal(length) * np.exp(-t / params["decay"])
    ping = np.sin(2 * np.pi * params["ping_hz"] * t) * np.exp(-t / 0.04)
    return noise + 1.5 * ping
