"""Synthetic egocentric clips: real H.264 + AAC MP4 files with known, sparse audio-visual events.

`generate_clip` writes one `<name>.mp4` and its sidecar `<name>.json` (a `ClipEvents`);
`generate_clips` writes a numbered set, in parallel. Both are deterministic for a seed and write
atomically: the sidecar appears first and the MP4 last, each renamed from a temporary name, so a
visible MP4 always has a complete sidecar and an interrupted run leaves no half-written clip.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from assynch.synth.audio import ambient_info, render_audio
from assynch.synth.plan import clip_rngs, num_frames_for, plan_clip, plan_events
from assynch.synth.scene import render_frames
from assynch.synth.schema import (
    AUDIO_VISUAL_KINDS,
    DISTRACTOR_KINDS,
    EASY_KINDS,
    HARD_KINDS,
    ClipEvents,
    SynthError,
    SynthEvent,
    SynthSpec,
    load_events,
)

__all__ = [
    "AUDIO_VISUAL_KINDS",
    "DISTRACTOR_KINDS",
    "EASY_KINDS",
    "HARD_KINDS",
    "ClipEvents",
    "SynthError",
    "SynthEvent",
    "SynthSpec",
    "clip_name",
    "clip_seed",
    "generate_clip",
    "generate_clips",
    "list_clips",
    "load_events",
    "plan_events",
    "sidecar_path",
]

log = logging.getLogger(__name__)

AUDIO_FRAME_SAMPLES = 1024
MIN_DURATION_SEC = 1.0
MAX_DURATION_SEC = 3600.0
TEMP_MARKER = ".tmp-"


def sidecar_path(video_path: str | Path) -> Path:
    """The events JSON that belongs to a clip: same name, `.json`."""
    return Path(video_path).with_suffix(".json")


def clip_name(index: int) -> str:
    return f"synth_{index:04d}.mp4"


def clip_seed(set_seed: int, index: int) -> int:
    """The seed of clip `index` of a set generated with `set_seed` (independent streams)."""
    return int(np.random.SeedSequence([set_seed, index]).generate_state(1)[0])


def list_clips(directory: str | Path) -> list[tuple[Path, ClipEvents]]:
    """Every complete clip in `directory` (MP4 plus sidecar), sorted by name."""
    folder = Path(directory)
    if not folder.is_dir():
        raise SynthError(f"clip folder {folder} does not exist; create it with `assynch synth`")
    clips = []
    for video in sorted(folder.glob("*.mp4")):
        if video.name.startswith("."):
            continue
        clips.append((video, load_events(sidecar_path(video))))
    return clips


def _check_request(duration_sec: float, seed: int) -> None:
    if not MIN_DURATION_SEC <= duration_sec <= MAX_DURATION_SEC:
        raise SynthError(
            f"duration {duration_sec} s is out of range; pass a duration between "
            f"{MIN_DURATION_SEC:g} and {MAX_DURATION_SEC:g} seconds"
        )
    if seed < 0:
        raise SynthError(f"seed {seed} is negative; pass a seed >= 0")


def generate_clip(
    path: str | Path,
    *,
    duration_sec: float,
    seed: int,
    spec: SynthSpec | None = None,
    set_seed: int | None = None,
    clip_index: int | None = None,
) -> ClipEvents:
    """Write one clip to `path` (an .mp4) and its sidecar beside it; return the sidecar."""
    spec = spec or SynthSpec()
    path = Path(path)
    _check_request(duration_sec, seed)
    if path.suffix.lower() != ".mp4":
        raise SynthError(f"clip path {path} must end in .mp4")
    path.parent.mkdir(parents=True, exist_ok=True)

    plan = plan_clip(duration_sec, seed, spec)
    rngs = clip_rngs(seed)
    num_samples = int(round(plan.num_frames / spec.fps * spec.sample_rate))
    audio = render_audio(
        plan.sounds, num_samples, spec.sample_rate, rngs["audio"], spec.ambient_noise
    )
    events = ClipEvents(
        video_file=path.name,
        seed=seed,
        set_seed=set_seed,
        clip_index=clip_index,
        duration_sec=plan.num_frames / spec.fps,
        num_frames=plan.num_frames,
        spec=spec,
        av_version=av.__version__,
        ambient=ambient_info() if spec.ambient_noise else None,
        events=tuple(plan.events),
    )
    temp_video = path.with_name(f".{path.name}{TEMP_MARKER}{os.getpid()}")
    json_path = sidecar_path(path)
    temp_json = json_path.with_name(f".{json_path.name}{TEMP_MARKER}{os.getpid()}")
    try:
        _write_mp4(temp_video, render_frames(plan, spec, rngs["scene"]), audio, spec)
        temp_json.write_text(events.model_dump_json(indent=2) + "\n")
        os.replace(temp_json, json_path)
        os.replace(temp_video, path)
    except BaseException:
        temp_video.unlink(missing_ok=True)
        temp_json.unlink(missing_ok=True)
        raise
    log.debug("wrote %s: %d frames, %d events", path, plan.num_frames, len(plan.events))
    return events


def _write_mp4(
    path: Path, frames: Iterable[np.ndarray], audio: np.ndarray, spec: SynthSpec
) -> None:
    rate = Fraction(spec.fps).limit_denominator(1001)
    with av.open(str(path), "w", format="mp4") as container:
        video = container.add_stream(
            "libx264", rate=rate, options={"preset": spec.x264_preset, "crf": str(spec.x264_crf)}
        )
        video.width, video.height, video.pix_fmt = spec.width, spec.height, "yuv420p"
        video.codec_context.time_base = 1 / rate
        # One encoder thread: x264's output is then identical on every machine.
        video.codec_context.thread_count = 1
        sound = container.add_stream("aac", rate=spec.sample_rate, layout="mono")
        sound_time_base = Fraction(1, spec.sample_rate)
        written = 0
        for index, picture in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = index, 1 / rate
            container.mux(video.encode(frame))
            until = min(audio.size, int(round((index + 1) / rate * spec.sample_rate)))
            while written < until:
                block = audio[None, written : written + AUDIO_FRAME_SAMPLES]
                chunk = av.AudioFrame.from_ndarray(block, format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts, chunk.time_base = (
                    spec.sample_rate,
                    written,
                    sound_time_base,
                )
                container.mux(sound.encode(chunk))
                written += block.shape[1]
        container.mux(video.encode(None))
        container.mux(sound.encode(None))


def _is_current(video: Path, seed: int, duration_sec: float, spec: SynthSpec) -> bool:
    json_path = sidecar_path(video)
    if not (video.is_file() and json_path.is_file()):
        return False
    try:
        existing = load_events(json_path)
    except SynthError:
        return False
    wanted_frames = num_frames_for(duration_sec, spec.fps)
    return (existing.seed, existing.num_frames, existing.spec) == (seed, wanted_frames, spec)


def _remove_stale_temporaries(folder: Path) -> None:
    for stale in folder.glob(f".synth_*{TEMP_MARKER}*"):
        log.info("removing %s left by an interrupted run", stale)
        stale.unlink(missing_ok=True)


def _generate_one(job: tuple[Path, float, int, SynthSpec, int, int]) -> Path:
    path, duration_sec, seed, spec, set_seed, index = job
    generate_clip(
        path, duration_sec=duration_sec, seed=seed, spec=spec, set_seed=set_seed, clip_index=index
    )
    return path


def generate_clips(
    out_dir: str | Path,
    *,
    count: int,
    duration_sec: float,
    seed: int,
    spec: SynthSpec | None = None,
    workers: int | None = None,
    skip_existing: bool = True,
    progress: Callable[[Path], None] | None = None,
) -> list[Path]:
    """Write clips `synth_0000.mp4` ... into `out_dir`; return their paths in order.

    Clip i uses `clip_seed(seed, i)`. With `skip_existing`, a clip whose sidecar already records
    the same seed, length and spec is kept as it is. `workers` processes encode in parallel
    (default: one per CPU, at most `count`).
    """
    spec = spec or SynthSpec()
    _check_request(duration_sec, seed)
    if count < 1:
        raise SynthError(f"count {count} must be at least 1")
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise SynthError(f"output {folder} exists and is not a folder; pass a folder path")
    folder.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(folder)

    paths = [folder / clip_name(index) for index in range(count)]
    jobs = []
    for index, path in enumerate(paths):
        this_seed = clip_seed(seed, index)
        if skip_existing and _is_current(path, this_seed, duration_sec, spec):
            log.info("keeping %s (same seed and spec)", path)
            if progress:
                progress(path)
            continue
        jobs.append((path, duration_sec, this_seed, spec, seed, index))

    workers = min(workers or os.cpu_count() or 1, max(len(jobs), 1))
    if workers <= 1:
        for job in jobs:
            done = _generate_one(job)
            if progress:
                progress(done)
        return paths
    # Fork where there is one: spawn would re-import the caller's main module, which breaks
    # scripts without an `if __name__ == "__main__"` guard. Workers only use numpy and PyAV.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        for done in pool.map(_generate_one, jobs):
            if progress:
                progress(done)
    return paths
