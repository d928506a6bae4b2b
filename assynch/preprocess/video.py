"""Preprocess one video: probe, plan its stream samples, decode it once (streaming), cut the
samples, and write them as one Parquet part that appears only when complete.

`process_video` does the work and checks its deadline between decoded chunks. Run as
`python -m assynch.preprocess.video FD` this module is the decoding child process of
`assynch.preprocess.worker.VideoWorker` (see there for the protocol and the hard time limit).
Failures come back as a `VideoResult` with the stage and the reason.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import sys
import threading
import time as wall_time
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from assynch.config import AssynchConfig
from assynch.errors import AssynchError
from assynch.media.decode import DecodedChunk, DecodeError, MediaInfo, iter_decode, probe
from assynch.preprocess.plan import (
    DURATION_KEY,
    RESULT_KEY,
    VideoResult,
    VideoTask,
    preprocess_config_hash,
)
from assynch.samples.cutter import CutSample, StreamSampleCutter
from assynch.samples.plan import SamplePlan, plan_stream_samples, sample_frames
from assynch.shards.format import SampleRow, shard_layout, shard_schema
from assynch.shards.writer import ShardWriter
from assynch.storage import filesystem, storage_options

log = logging.getLogger(__name__)

PART_COMPRESSION = "lz4"


class VideoTimeout(AssynchError):
    """The video took longer than `preprocess.video_timeout_sec`."""


def usable_duration_sec(info: MediaInfo) -> float | None:
    """Seconds from the first video frame to the end of the shorter of video and audio."""
    video_start = info.first_video_pts_sec or 0.0
    video = info.video_duration_sec or info.container_duration_sec
    if video is None:
        return None
    if info.video_duration_sec is None and info.first_video_pts_sec:
        video -= info.first_video_pts_sec
    ends = [video]
    if info.audio_duration_sec is not None:
        audio_start = info.first_audio_pts_sec or 0.0
        ends.append(audio_start + info.audio_duration_sec - video_start)
    return max(0.0, min(ends))


def _row(sample: CutSample, task: VideoTask, config: AssynchConfig, config_hash: str) -> SampleRow:
    plan = sample.plan
    return SampleRow(
        video_uid=task.video_uid,
        sample_id=plan.sample_id,
        split=task.split,
        offset_sec=plan.offset_sec,
        offset_class=plan.offset_class,
        start_sec=plan.start_sec,
        window_starts_sec=sample.window_starts_sec,
        audio_start_sec=sample.audio_start_sec,
        audio_margin_sec=config.preprocess.audio_margin_sec,
        frames=sample.frames,
        mel=sample.mel,
        config_hash=config_hash,
    )


class _StageFailure(Exception):
    """A video that cannot become samples at one stage (probe, plan, decode), with the reason."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(reason)
        self.stage = stage
        self.reason = reason


@contextlib.contextmanager
def _stage(name: str) -> Iterator[None]:
    """Bad media or an unreadable file inside this block fails the video at stage `name`."""
    try:
        yield
    except DecodeError as exc:
        raise _StageFailure(name, exc.reason) from None
    except OSError as exc:
        raise _StageFailure(name, f"{type(exc).__name__}: {exc}") from None


def process_video(
    task: VideoTask,
    config: AssynchConfig,
    *,
    deadline: float | None = None,
    part_temp_path: str | None = None,
    decoder_threads: int = 0,
) -> VideoResult:
    """Turn one video into its part file, or into a failure result. Never raises for bad
    media; `deadline` is a `time.monotonic()` value checked between decoded chunks."""
    started = wall_time.monotonic()
    options = storage_options(task.url, config.storage)
    try:
        with _stage("probe"):
            duration = _duration_with_audio(task, options)
        with _stage("plan"):
            plans = _plan_samples(task, config, duration)
        with _stage("decode"):
            return _decode_into_part(
                task, config, plans, duration, options, started=started, deadline=deadline,
                part_temp_path=part_temp_path, decoder_threads=decoder_threads,
            )
    except _StageFailure as exc:
        stage, reason = exc.stage, exc.reason
    except VideoTimeout:
        stage, reason = "timeout", (
            f"took longer than preprocess.video_timeout_sec "
            f"({config.preprocess.video_timeout_sec:g} s); raise it for very long videos"
        )
    return VideoResult.failure(task, stage, reason,
                               wall_sec=round(wall_time.monotonic() - started, 3))


def _duration_with_audio(task: VideoTask, options: dict[str, Any]) -> float:
    info = probe(task.url, options)
    if not info.has_audio:
        raise _StageFailure("probe", "no audio stream; sync detection needs sound")
    duration = usable_duration_sec(info)
    if duration is None:
        raise _StageFailure("probe", "the container states no duration; re-mux the file")
    return duration


def _plan_samples(task: VideoTask, config: AssynchConfig, duration: float) -> list[SamplePlan]:
    pre, time = config.preprocess, config.time
    plans = plan_stream_samples(
        task.video_uid, duration, time=time, samples=pre.samples_per_video, seed=pre.seed,
        audio_margin_sec=pre.audio_margin_sec,
    )
    if not plans:
        needed = sample_frames(time) / time.fps + 2 * pre.audio_margin_sec
        raise _StageFailure(
            "plan",
            f"too short: {duration:.2f} s of video with audio, one stream sample needs "
            f"{needed:.2f} s ({time.windows_per_sample} windows + "
            f"{pre.audio_margin_sec} s audio margin on each side)",
        )
    return plans


def _decoded_chunks(
    task: VideoTask,
    config: AssynchConfig,
    cutter: StreamSampleCutter,
    options: dict[str, Any],
    *,
    deadline: float | None,
    decoder_threads: int,
) -> Iterator[DecodedChunk]:
    """The chunks of the spans the planned samples need, until the cutter has them all."""
    for span_start, span_end in cutter.decode_spans_sec():
        for chunk in iter_decode(
            task.url, time=config.time, video=config.video, start_sec=span_start,
            end_sec=span_end, storage_options=options, decoder_threads=decoder_threads,
        ):
            if deadline is not None and wall_time.monotonic() > deadline:
                raise VideoTimeout()
            yield chunk
            if cutter.done:
                break


def _decode_into_part(
    task: VideoTask,
    config: AssynchConfig,
    plans: list[SamplePlan],
    duration: float,
    options: dict[str, Any],
    *,
    started: float,
    deadline: float | None,
    part_temp_path: str | None,
    decoder_threads: int,
) -> VideoResult:
    """Decode once, cut the planned samples, and write them as the video's part file."""
    pre = config.preprocess
    cutter = StreamSampleCutter(
        plans, time=config.time, audio=config.audio, audio_margin_sec=pre.audio_margin_sec
    )
    fs, part_path = filesystem(task.part_path, config.storage)
    layout = shard_layout(config)
    config_hash = preprocess_config_hash(config)
    schema = shard_schema(layout, {"assynch.config_hash": config_hash,
                                   DURATION_KEY: f"{duration:.6f}"})
    offset_classes: list[int] = []
    # Parts are read once more by the compaction: a fast codec; shards get zstd.
    with ShardWriter(fs, part_path, schema, layout, pre.rows_per_row_group,
                     temp_path=part_temp_path, compression=PART_COMPRESSION) as writer:

        def write(samples: Iterable[CutSample]) -> None:
            for sample in samples:
                writer.write_row(_row(sample, task, config, config_hash))
                offset_classes.append(sample.plan.offset_class)

        for chunk in _decoded_chunks(task, config, cutter, options, deadline=deadline,
                                     decoder_threads=decoder_threads):
            write(cutter.push(chunk))
        write(cutter.finish())
        if not offset_classes:
            raise DecodeError(
                task.url,
                f"too short: the decoded media ends before any of the {len(plans)} "
                f"planned samples does (header says {duration:.2f} s; file cut off?)",
            )
        result = VideoResult(
            task.video_uid, task.url, task.split, True, samples=len(offset_classes),
            offset_classes=offset_classes, duration_sec=round(duration, 3),
            part_path=task.part_path, wall_sec=round(wall_time.monotonic() - started, 3),
            peak_rss_mb=_peak_rss_mb(),
        )
        writer.add_metadata({RESULT_KEY: result.to_json()})
    return result


def _peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss over
    from the parent through fork and exec, so a child would report its parent's peak."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


#


# ---------------------------------------------------------------------------------------------
# The decoding child process (protocol: assynch/preprocess/worker.py)


def serve(result_fd: int) -> None:
    """The child's loop: read the config, then process tasks until stdin closes."""
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s[video worker]: %(message)s",
    )
    _exit_with_parent()
    results = os.fdopen(result_fd, "w", encoding="utf-8")
    header = json.loads(sys.stdin.readline())
    config = AssynchConfig.model_validate(header["config"])
    threads = int(header["threads"])
    torch.set_num_threads(threads)
    for line in sys.stdin:
        request = json.loads(line)
        task = VideoTask.from_json(request["task"])
        try:
            result = process_video(
                task, config, deadline=wall_time.monotonic() + float(request["timeout"]),
                part_temp_path=request["temp_path"] or None, decoder_threads=threads,
            )
        except Exception as exc:  # a bug or an unexpected library error: report, don't hang
            log.exception("video %s failed unexpectedly", task.video_uid)
            result = VideoResult.failure(task, "internal", f"{type(exc).__name__}: {exc}")
        results.write(result.to_json() + "\n")
        results.flush()


def _exit_with_parent(poll_sec: float = 1.0) -> None:
    """End this process as soon as its parent is gone (a killed job must not leave decoders
    running and writing parts)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            wall_time.sleep(poll_sec)
        os._exit(3)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


if __name__ == "__main__":
    serve(int(sys.argv[1]))
