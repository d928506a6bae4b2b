"""Random signals shared by the synthetic picture and sound: slow curves and coloured noise."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def smooth_curve(
    rng: np.random.Generator,
    count: int,
    rate: float,
    low_hz: float,
    high_hz: float,
    components: int = 4,
) -> np.ndarray:
    """A smooth random curve in [-1, 1] sampled `count` times at `rate` Hz: a few sinusoids with
    frequencies between low_hz and high_hz and random phases."""
    t = np.arange(count) / rate
    freqs = rng.uniform(low_hz, high_hz, size=components)
    phases = rng.uniform(0, 2 * np.pi, size=components)
    weights = rng.uniform(0.5, 1.0, size=components)
    curve = (weights[:, None] * np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None])).sum(0)
    return curve / weights.sum()


def fractal_noise_2d(
    rng: np.random.Generator, height: int, width: int, exponent: float
) -> np.ndarray:
    """Zero-mean, unit-std 2-D noise whose amplitude spectrum falls as 1/f**exponent."""
    white = rng.standard_normal((height, width))
    spectrum = np.fft.rfft2(white)
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    radius = np.sqrt(fx**2 + fy**2)
    radius[0, 0] = 1.0
    spectrum *= radius**-exponent
    spectrum[0, 0] = 0.0
    noise = np.fft.irfft2(spectrum, s=(height, width))
    return noise / (noise.std() + 1e-12)


def shaped_noise_1d(
    rng: np.random.Generator,
    count: int,
    rate: float,
    gain_at: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """Unit-rms noise of `count` samples whose amplitude spectrum is `gain_at(freqs_hz)`."""
    spectrum = np.fft.rfft(rng.standard_normal(count))
    spectrum *= gain_at(np.fft.rfftfreq(count, d=1.0 / rate))
    noise = np.fft.irfft(spectrum, n=count)
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)
