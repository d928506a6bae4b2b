"""`assynch detect` with a tiny model trained in this session (tiny_detector.py) on synthetic
`easy` clips: a clip whose audio the test shifts by a known offset, and one that drifts halfway.

Checked: the offset within one class (0.2 s); the drift point within one window; `--fix` output
with its events back in sync within one frame of the applied shift and its video packets
bit-identical; the fixed copy reads as in sync; `--plot` writes a PNG; `--json` validates against
the documented schema.

The model must first show, on a held-out clip, that it detects offsets (ACC@1±1 per window of
at least `QUALITY_GATE`); otherwise these tests are xfailed with the accuracy it reached, the
steps it took and the time they took (docs/DETECT.md, Tests). Either way the session's summary
ends with those numbers. `ASSYNCH_DETECT_TRAIN_STEPS` sets the training steps (default 400,
about 30 s on one quiet core) and `ASSYNCH_DETECT_TRAIN_SECONDS` caps their wall time (default
120 s; a heavily loaded machine may stop short of the steps).
"""

from __future__ import annotations

import json
import os
import time as clock
from collections.abc import Callable
from pathlib import Path

import av
import jsonschema
import numpy as np
import pytest
import torch
from detect_media import shifted_copy
from tiny_detector import (
    SUMMARY,
    build_tiny_detector,
    clip_features,
    synth_clip,
    train_tiny_detector,
    window_accuracy,
)
from typer.testing import CliRunner

from assynch.cli import app
from assynch.config import load_config
from assynch.detect.report import REPORT_SCHEMA
from assynch.media.decode import decode_all
from assynch.media.features import log_mel
from assynch.models import save_model_checkpoint
from assynch.synth.check import flux_peaks, spectral_flux
from assynch.synth.clips import load_events

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = [
    "time.windows_per_sample=1", "model.kind=snapshot", "model.encoder_regime=frozen",
    "model.sync.dim=32", "model.sync.heads=2", "model.sync_dropout=0.0",
]
FRAME_SEC = 0.04
WINDOW_SEC = 4.8
TRAINING_STEPS = int(os.environ.get("ASSYNCH_DETECT_TRAIN_STEPS", "400"))
TRAINING_SECONDS = float(os.environ.get("ASSYNCH_DETECT_TRAIN_SECONDS", "120"))
TRAINING_CLIPS, CLIP_SECONDS = 6, 30.0
QUALITY_GATE = 0.6  # held-out per-window ACC@1±1 before the detect checks mean anything


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Train the tiny detector; its checkpoint and how well it did on a held-out clip."""
    folder = tmp_path_factory.mktemp("tiny_detector")
    started = clock.monotonic()
    config = load_config(CONFIGS / "tiny.yaml", TINY)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on two shared cores were several times slower
    try:
        model = build_tiny_detector(config)
        clips = [synth_clip(folder / f"train{i}.mp4", CLIP_SECONDS, seed=100 + i)
                 for i in range(TRAINING_CLIPS)]
        held_out = synth_clip(folder / "held_out.mp4", CLIP_SECONDS, seed=99)
        features = [clip_features(model, clip, config) for clip in clips]
        prepared = clock.monotonic() - started
        run = train_tiny_detector(features, model, config, steps=TRAINING_STEPS,
                                  max_seconds=TRAINING_SECONDS)
        acc1, acc1_pm1 = window_accuracy(model, [clip_features(model, held_out, config)], config)
    finally:
        torch.set_num_threads(threads)
    checkpoint = save_model_checkpoint(model, config, folder / "tiny_detector.pt")
    SUMMARY.append(
        f"tiny detector: held-out per-window ACC@1 {acc1:.3f}, ACC@1±1 {acc1_pm1:.3f} (gate "
        f"{QUALITY_GATE}) after {run['steps']} steps in {run['seconds']} s (final loss "
        f"{run['final_loss']}; clips and features {prepared:.1f} s)"
    )
    return {"checkpoint": checkpoint, "acc1": acc1, "acc1_pm1": acc1_pm1,
            "prepare_sec": round(prepared, 1), **run}


@pytest.fixture
def checkpoint(trained: dict) -> Path:
    if trained["acc1_pm1"] < QUALITY_GATE:
        pytest.xfail(
            f"the session-trained tiny detector does not detect offsets yet: held-out per-window "
            f"ACC@1 {trained['acc1']:.3f}, ACC@1±1 {trained['acc1_pm1']:.3f} (chance 0.048 / "
            f"0.14; gate {QUALITY_GATE}) after {trained['steps']} steps in {trained['seconds']} s "
            f"(final loss {trained['final_loss']}); see docs/DETECT.md, Tests"
        )
    return trained["checkpoint"]


def detect(*args: str) -> tuple[int, list[dict]]:
    result = CliRunner().invoke(app, ["detect", *args, "--json"])
    assert "Traceback" not in result.stderr, result.stderr
    documents = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    for document in documents:
        jsonschema.validate(document, REPORT_SCHEMA)
    return result.exit_code, documents


def video_packets(path: Path) -> list[tuple[bytes, int | None, int | None]]:
    with av.open(str(path)) as container:
        return [(bytes(packet), packet.pts, packet.dts)
                for packet in container.demux(container.streams.video[0]) if packet.size]


def sound_onsets_sec(path: Path) -> np.ndarray:
    """Sound onsets of the decoded file (spectral-flux peaks of the log-mel)."""
    config = load_config(CONFIGS / "tiny.yaml")
    media = decode_all(str(path), time=config.time, video=config.video)
    flux = spectral_flux(log_mel(media.audio, config.audio, config.time.sample_rate).numpy())
    hop = config.audio.hop_length / config.time.sample_rate
    return np.asarray([t for t, _ in flux_peaks(flux, hop, threshold=4 * float(np.median(flux))
                                                + 0.05)])


def onset_errors(fixed: Path, onsets: list[float], residual: Callable[[float], float]
                 ) -> list[float]:
    """For each listed onset t (video time), how far the nearest sound onset of `fixed` is from
    t + residual(t), where residual is what the applied shift leaves of the true offset."""
    heard = sound_onsets_sec(fixed)
    return [float(np.min(np.abs(heard - t - residual(t)))) for t in onsets]


def test_a_known_offset_is_found_and_fixed(checkpoint: Path, tmp_path: Path) -> None:
    source = synth_clip(tmp_path / "source.mp4", 30.0, seed=7)
    onsets = load_events(source.with_suffix(".json")).audio_visual_onsets_sec()
    clip = shifted_copy(source, tmp_path / "early.mp4", 0.6)
    fixed, plot = tmp_path / "fixed.mp4", tmp_path / "timeline.png"
    code, (report,) = detect(str(clip), "--checkpoint", str(checkpoint), "--plot", str(plot),
                             "--fix", str(fixed))
    assert abs(report["offset_sec"] - 0.6) <= 0.2 + 1e-9, report["probabilities"]
    assert report["verdict"] == "audio_early" and code == 3, report["reason"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 5000
    assert report["fix"]["video_reencoded"] is False
    assert video_packets(fixed) == video_packets(clip)
    shift = report["fix"]["shifts"][0]["shift_sec"]
    inner = [t for t in onsets if 1.0 < t < 29.0]  # the first sounds may sit before 0 s
    errors = onset_errors(fixed, inner, lambda _t: shift - 0.6)
    assert inner and max(errors) <= FRAME_SEC + 0.011, errors
    code, (again,) = detect(str(fixed), "--checkpoint", str(checkpoint))
    assert again["verdict"] == "in_sync" and code == 0, again["probabilities"]


def test_a_drift_halfway_is_found_and_fixed_per_segment(checkpoint: Path, tmp_path: Path) -> None:
    change = 20.0
    source = synth_clip(tmp_path / "source.mp4", 40.0, seed=11)
    onsets = load_events(source.with_suffix(".json")).audio_visual_onsets_sec()
    clip = shifted_copy(source, tmp_path / "drift.mp4", lambda t: 0.0 if t < change else 0.8)
    fixed = tmp_path / "fixed.mp4"
    code, (report,) = detect(str(clip), "--checkpoint", str(checkpoint), "--fix", str(fixed))
    decided = [s for s in report["segments"] if s["evidence_windows"]]
    assert report["verdict"] == "drifting" and code == 3, decided
    assert len(decided) == 2, decided
    first, second = decided
    assert abs(first["offset_sec"] - 0.0) <= 0.2 + 1e-9
    assert abs(second["offset_sec"] - 0.8) <= 0.2 + 1e-9
    assert abs(second["start_sec"] - change) <= WINDOW_SEC, decided
    assert report["fix"]["audio_reencoded"] is True
    assert video_packets(fixed) == video_packets(clip)
    boundary = second["start_sec"]

    def residual(t: float) -> float:  # applied shift minus true offset at t
        return (first if t < boundary else second)["offset_sec"] - (0.0 if t < change else 0.8)

    away = [t for t in onsets if min(abs(t - change), abs(t - boundary)) > 1.0 and t > 1.0]
    errors = onset_errors(fixed, away, residual)
    assert len(away) >= 6 and max(errors) <= FRAME_SEC + 0.011, errors
