"""Helpers shared by the preprocessing tests: input clips, configs, and shard checks."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from media_files import ClipSpec, beep_onsets_sec, flash_frame_indices, truncate_file, write_clip

from assynch.config import AssynchConfig, StorageConfig, load_config
from assynch.media.decode import decode_all
from assynch.media.features import normalised_log_mel
from assynch.samples.plan import SamplePlan, cut_stream_sample
from assynch.shards.format import SPLITS
from assynch.shards.reader import list_shards
from assynch.storage import filesystem

# Flash + beep pairs, irregularly spaced so that each flash has exactly one matching beep.
EVENTS_SEC = (1.3, 4.1, 7.6, 10.2, 13.9, 16.4, 19.8, 22.3, 25.7, 28.1)
CLIP_SEC = 24.0


def good_clip(path: Path, seed: int, duration_sec: float = CLIP_SEC) -> Path:
    events = tuple(t for t in EVENTS_SEC if t < duration_sec - 0.5)
    return write_clip(path, ClipSpec(
        duration_sec=duration_sec, fps=Fraction(25), width=96, height=72, seed=seed,
        flash_times=events, beep_times=events,
    ))


def write_inputs(folder: Path, good: int = 3, bad: bool = True) -> dict[str, str]:
    """`good` decodable clips (2 samples each with `test_config`) and, with `bad`, one of each
    kind of bad input. Returns {video_uid: expected failure stage} for the bad ones."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(good):
        good_clip(folder / f"good{index}.mp4", seed=index)
    if not bad:
        return {}
    write_clip(folder / "silent.mp4", ClipSpec(duration_sec=CLIP_SEC, width=96, height=72,
                                               audio_codec=None))
    good_clip(folder / "short.mp4", seed=9, duration_sec=6.0)
    (folder / "junk.mp4").write_bytes(b"this is not a video file at all" * 10)
    truncate_file(folder / "good0.mp4", folder / "truncated.mp4", 0.25)
    return {"silent": "probe", "short": "plan", "junk": "probe", "truncated": "probe"}


def preprocess_config(input_: str, output: str, **preprocess: Any) -> AssynchConfig:
    """quickstart with 2 windows per sample (7.2 s), so a 24 s clip gives 2 samples."""
    overrides = [
        "time.windows_per_sample=2",
        f"preprocess.input={input_}",
        f"preprocess.output={output}",
        "preprocess.samples_per_video=2",
        "preprocess.rows_per_shard=3",
        "preprocess.rows_per_row_group=2",
        "preprocess.num_workers=2",
        "preprocess.video_timeout_sec=120",
    ] + [f"preprocess.{key}={value}" for key, value in preprocess.items()]
    return load_config("configs/quickstart.yaml", overrides)


def read_split(output: str, split: str, storage: StorageConfig | None = None) -> pa.Table | None:
    storage = storage or StorageConfig()
    files = list_shards(output, split, storage)
    if not files:
        return None
    fs, _ = filesystem(output, storage)
    tables = []
    for path in files:
        with fs.open(path, "rb") as handle:
            tables.append(pq.read_table(handle))
    return pa.concat_tables(tables)


def read_all(output: str, storage: StorageConfig | None = None) -> pa.Table:
    tables = [t for s in SPLITS if (t := read_split(output, s, storage)) is not None]
    return pa.concat_tables(tables)


def check_row_against_decoder(row: dict[str, Any], frames: np.ndarray, mel: np.ndarray,
                              video_path: str, config: AssynchConfig) -> np.ndarray:
    """The stored sample equals what decode_all + cut_stream_sample give for its plan; returns
    the sample's audio (with margins), whose log-mel is the stored mel."""
    margin = config.preprocess.audio_margin_sec
    whole = decode_all(video_path, time=config.time, video=config.video)
    plan = SamplePlan(row["sample_id"], row["start_sec"], row["offset_class"],
                      round(row["offset_sec"], 6))
    expected_frames, expected_audio = cut_stream_sample(
        whole.frames, whole.audio, plan, time=config.time, audio_margin_sec=margin
    )
    assert np.array_equal(frames, expected_frames)
    expected_mel = normalised_log_mel(expected_audio, config.audio, config.time.sample_rate)
    assert np.array_equal(mel, expected_mel.numpy().astype(np.float16))
    return expected_audio


def check_sign(frames: np.ndarray, audio: np.ndarray, row: dict[str, Any],
               config: AssynchConfig) -> int:
    """In a sample labelled d, every flash at video time f has its beep at f - d in the shown
    audio (stored audio minus the margin). Returns how many flashes were checked."""
    fps = config.time.fps
    margin = row["audio_margin_sec"]
    offset = row["offset_sec"]
    flashes = [i / fps for i in flash_frame_indices(frames)]
    onsets = beep_onsets_sec(audio, config.time.sample_rate)
    shown = [t - margin for t in onsets]
    for flash in flashes:
        expected = flash - offset
        assert min(abs(s - expected) for s in shown) < 0.05, (flash, offset, shown)
    return len(flashes)
