"""Decoding real encoded clips (written by tests/media.py with PyAV): lengths, timing, errors."""

from __future__ import annotations

import json
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import fsspec
import numpy as np
import pytest
from media_files import (
    BEEP_AMPLITUDE,
    ClipSpec,
    beep_onsets_sec,
    flash_frame_indices,
    truncate_file,
    write_clip,
)
from s3_support import MotoS3
from typer.testing import CliRunner

from assynch.cli import app
from assynch.config import TimeBase, VideoFeatures
from assynch.media.decode import (
    CorruptFileError,
    DecodeError,
    EmptyFileError,
    NoAudioError,
    NotAVideoError,
    SourceNotFoundError,
    TruncatedFileError,
    decode_all,
    iter_decode,
    probe,
)

TIME = TimeBase()
SMALL = VideoFeatures(short_side=72, crop=64)
TOLERANCE_SEC = 0.04
X265 = {"preset": "ultrafast", "x265-params": "log-level=error"}


def spec(**changes: object) -> ClipSpec:
    """A 3 s clip with a flash and a beep together at 1.0 s, changed by `changes`."""
    base = ClipSpec(duration_sec=3.0, flash_times=(1.0,), beep_times=(1.0,))
    return replace(base, **changes)  # type: ignore[arg-type]


# name -> (spec, where the flash/beep is on the decoded timeline, video s, audio s from t=0)
KINDS: dict[str, tuple[ClipSpec, float, float, float]] = {
    "h264_aac_30fps": (spec(), 1.0, 3.0, 3.0),
    "ntsc_29.97_odd_size": (
        spec(fps=Fraction(30000, 1001), width=321, height=241, pix_fmt="yuv444p"),
        1.0, 90 * 1.001 / 30, 3.0,
    ),
    "24fps": (spec(fps=Fraction(24)), 1.0, 3.0, 3.0),
    "25fps": (spec(fps=Fraction(25)), 1.0, 3.0, 3.0),
    "hevc": (spec(video_codec="libx265", encoder_options=X265), 1.0, 3.0, 3.0),
    "mp3_in_mp4": (spec(audio_codec="libmp3lame"), 1.0, 3.0, 3.0),
    "aac_5.1": (spec(layout="5.1"), 1.0, 3.0, 3.0),
    "mono_44k1": (spec(layout="mono", sample_rate=44100), 1.0, 3.0, 3.0),
    "audio_starts_late": (spec(audio_start_sec=0.5, audio_duration_sec=2.5), 1.0, 3.0, 3.0),
    "audio_starts_early": (
        spec(video_start_sec=0.5, flash_times=(1.5,), beep_times=(1.5,)), 1.0, 3.0, 2.5,
    ),
    "variable_frame_rate": (
        spec(frame_times=tuple(i * 0.03 + (0.012 if i % 3 else 0.0) for i in range(100))),
        1.0, 3.0, 3.0,
    ),
    "matroska_ms_timestamps": (spec(container_format="matroska"), 1.0, 3.0, 3.0),
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    written = {}
    for name, (clip_spec, *_rest) in KINDS.items():
        suffix = ".mkv" if clip_spec.container_format == "matroska" else ".mp4"
        written[name] = write_clip(folder / f"{name}{suffix}", clip_spec)
    return written


@pytest.mark.parametrize("kind", list(KINDS))
def test_decoded_lengths_and_av_timing(kind: str, clips: dict[str, Path]) -> None:
    _, event_sec, video_sec, audio_sec = KINDS[kind]
    decoded = decode_all(str(clips[kind]), time=TIME, video=SMALL)
    common = min(video_sec, audio_sec)
    assert decoded.frames.dtype == np.uint8 and decoded.frames.shape[1:] == (64, 64, 3)
    assert decoded.audio.dtype == np.float32 and decoded.audio.ndim == 1
    assert abs(decoded.frames.shape[0] - common * TIME.fps) <= 1
    assert abs(decoded.audio.shape[0] - common * TIME.sample_rate) <= TIME.sample_rate / TIME.fps
    # Trimmed to exactly the same duration.
    assert decoded.audio.shape[0] * TIME.fps == decoded.frames.shape[0] * TIME.sample_rate
    flashes = flash_frame_indices(decoded.frames)
    assert flashes, "the flash frame was not found"
    assert abs(flashes[0] / TIME.fps - event_sec) <= TOLERANCE_SEC
    beeps = beep_onsets_sec(decoded.audio, TIME.sample_rate)
    assert len(beeps) == 1
    assert abs(beeps[0] - event_sec) <= TOLERANCE_SEC


def test_probe_reports_streams(clips: dict[str, Path]) -> None:
    info = probe(str(clips["aac_5.1"]))
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert (info.width, info.height, info.audio_channels, info.audio_sample_rate) == (
        160, 120, 6, 48000,
    )
    assert info.average_fps == pytest.approx(30.0)
    assert info.video_duration_sec == pytest.approx(3.0, abs=0.05)
    early = probe(str(clips["audio_starts_early"]))
    assert early.first_video_pts_sec == pytest.approx(0.5, abs=0.01)
    assert early.first_audio_pts_sec == pytest.approx(0.0, abs=0.03)
    hevc = probe(str(clips["hevc"]))
    assert hevc.video_codec == "hevc"


def test_late_audio_is_padded_with_zeros_and_early_audio_dropped(clips: dict[str, Path]) -> None:
    late = decode_all(str(clips["audio_starts_late"]), time=TIME, video=SMALL)
    # AAC priming makes the stream start a little before 0.5 s; the part before is silence.
    assert 0.4 * TIME.sample_rate < late.padded_samples <= 0.5 * TIME.sample_rate
    assert not np.any(late.audio[: int(0.4 * TIME.sample_rate)])
    assert np.abs(late.audio[int(0.6 * TIME.sample_rate) :]).max() > 0
    early = decode_all(str(clips["audio_starts_early"]), time=TIME, video=SMALL)
    assert early.padded_samples == 0


def test_a_gap_in_the_audio_timestamps_becomes_zeros(tmp_path: Path) -> None:
    """Audio packets after 1.0 s are stamped 0.5 s later: the beep written at 2.0 s plays at
    2.5 s, and the hole is silence."""
    path = write_clip(
        tmp_path / "gap.mp4",
        spec(duration_sec=3.0, flash_times=(), beep_times=(2.0,), audio_gap=(1.0, 0.5)),
    )
    decoded = decode_all(str(path), time=TIME, video=SMALL)
    assert decoded.padded_samples == pytest.approx(0.5 * TIME.sample_rate, abs=160)
    (beep,) = beep_onsets_sec(decoded.audio, TIME.sample_rate)
    assert beep == pytest.approx(2.5, abs=0.005)
    hole = decoded.audio[int(1.05 * TIME.sample_rate) : int(1.45 * TIME.sample_rate)]
    assert not np.any(hole)


def test_channels_are_averaged(tmp_path: Path) -> None:
    """A beep in one of six channels comes out at 1/6 of its amplitude (a mean, not a mix)."""
    path = write_clip(
        tmp_path / "one_channel.mp4", spec(layout="5.1", beep_channels=(0,), beep_sec=0.3)
    )
    decoded = decode_all(str(path), time=TIME, video=SMALL)
    beep = decoded.audio[int(1.05 * TIME.sample_rate) : int(1.25 * TIME.sample_rate)]
    assert np.abs(beep).max() == pytest.approx(BEEP_AMPLITUDE / 6, rel=0.1)


def test_iter_decode_chunks_are_contiguous_and_bounded(clips: dict[str, Path]) -> None:
    chunks = list(
        iter_decode(str(clips["h264_aac_30fps"]), time=TIME, video=SMALL, chunk_sec=0.4)
    )
    assert len(chunks) >= 7
    for previous, chunk in zip(chunks, chunks[1:], strict=False):
        assert chunk.first_frame == previous.stop_frame
        assert chunk.first_sample == previous.stop_sample
    assert chunks[0].first_frame == 0 and chunks[0].first_sample == 0
    assert max(chunk.frames.shape[0] for chunk in chunks) <= 10
    assert max(chunk.audio.shape[0] for chunk in chunks) <= 0.4 * TIME.sample_rate
    whole = decode_all(str(clips["h264_aac_30fps"]), time=TIME, video=SMALL)
    joined = np.concatenate([chunk.frames for chunk in chunks])
    np.testing.assert_array_equal(joined[: whole.frames.shape[0]], whole.frames)


def test_start_and_end_with_seek_match_the_whole_decode(tmp_path: Path) -> None:
    path = write_clip(
        tmp_path / "long.mp4",
        ClipSpec(duration_sec=16.0, width=64, height=48, flash_times=(13.0,), beep_times=(13.0,)),
    )
    whole = decode_all(str(path), time=TIME, video=SMALL)
    part = decode_all(str(path), time=TIME, video=SMALL, start_sec=12.0, end_sec=14.0)
    assert (part.first_frame, part.first_sample) == (300, 192000)
    np.testing.assert_array_equal(part.frames, whole.frames[300:350])
    assert part.audio.shape[0] == 32000
    np.testing.assert_allclose(part.audio, whole.audio[192000:224000], atol=2e-3)
    assert flash_frame_indices(part.frames) == [25]


def test_full_size_frames_from_odd_sized_video(clips: dict[str, Path]) -> None:
    decoded = decode_all(
        str(clips["ntsc_29.97_odd_size"]), time=TIME, video=VideoFeatures(), end_sec=0.5
    )
    assert decoded.frames.shape == (12, 224, 224, 3)


def test_fsspec_url(clips: dict[str, Path]) -> None:
    url = "memory://assynch-test/clip.mp4"
    with fsspec.open(url, "wb") as handle:
        handle.write(clips["h264_aac_30fps"].read_bytes())
    remote = decode_all(url, time=TIME, video=SMALL)
    local = decode_all(str(clips["h264_aac_30fps"]), time=TIME, video=SMALL)
    np.testing.assert_array_equal(remote.frames, local.frames)
    np.testing.assert_array_equal(remote.audio, local.audio)
    with pytest.raises(SourceNotFoundError, match="memory://assynch-test/missing.mp4"):
        probe("memory://assynch-test/missing.mp4")


def test_container_ending_before_its_streams(tmp_path: Path) -> None:
    """moov first (faststart), data cut off: the header promises 3 s, the data holds less."""
    full = write_clip(tmp_path / "full.mp4", spec(container_options={"movflags": "faststart"}))
    cut = truncate_file(full, tmp_path / "cut.mp4", 0.6)
    assert probe(str(cut)).video_duration_sec == pytest.approx(3.0, abs=0.05)
    decoded = decode_all(str(cut), time=TIME, video=SMALL)
    assert 0 < decoded.frames.shape[0] < 3.0 * TIME.fps
    assert decoded.audio.shape[0] * TIME.fps == decoded.frames.shape[0] * TIME.sample_rate


# ---------------------------------------------------------------------------------------------
# Bad input


def test_errors_name_the_file_and_the_problem(tmp_path: Path, clips: dict[str, Path]) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("these are my holiday notes, not a video\n" * 20)
    truncated = truncate_file(clips["h264_aac_30fps"], tmp_path / "half.mp4", 0.5)
    silent = write_clip(tmp_path / "silent.mp4", spec(audio_codec=None))
    audio_only = tmp_path / "audio_only.m4a"
    _write_audio_only(audio_only)
    cases: list[tuple[Path, type[DecodeError], str]] = [
        (empty, EmptyFileError, "empty"),
        (text, NotAVideoError, "not a video"),
        (truncated, TruncatedFileError, "cut off"),
        (silent, NoAudioError, "no audio"),
        (audio_only, NotAVideoError, "no video stream"),
        (tmp_path / "missing.mp4", SourceNotFoundError, "no such file"),
    ]
    for path, error_type, words in cases:
        with pytest.raises(error_type) as caught:
            decode_all(str(path), time=TIME, video=SMALL)
        assert caught.value.source == str(path)
        assert str(path) in str(caught.value) and words in caught.value.reason


def test_video_without_audio_when_audio_is_optional(tmp_path: Path) -> None:
    silent = write_clip(tmp_path / "silent.mp4", spec(audio_codec=None))
    decoded = decode_all(str(silent), time=TIME, video=SMALL, require_audio=False)
    assert decoded.frames.shape[0] == 75 and decoded.audio.shape == (0,)


def test_corrupt_data_ends_with_consistent_output_or_a_decode_error(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    data = bytearray(clips["h264_aac_30fps"].read_bytes())
    rng = np.random.default_rng(0)
    middle = len(data) // 3
    data[middle : middle + len(data) // 4] = rng.bytes(len(data) // 4)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(bytes(data))
    try:
        decoded = decode_all(str(corrupt), time=TIME, video=SMALL)
    except CorruptFileError as exc:
        assert str(corrupt) in str(exc)
    else:
        assert decoded.audio.shape[0] * TIME.fps == decoded.frames.shape[0] * TIME.sample_rate


def _write_audio_only(path: Path) -> None:
    import av

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000, layout="mono")
        samples = np.zeros((1, 16000), dtype=np.float32)
        for first in range(0, 16000, 1024):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(samples[:, first : first + 1024]), format="fltp",
                layout="mono",
            )
            frame.sample_rate = 16000
            frame.pts = first
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


# ---------------------------------------------------------------------------------------------
# assynch inspect


def test_inspect_json_on_a_good_file(clips: dict[str, Path]) -> None:
    result = CliRunner().invoke(app, ["inspect", str(clips["audio_starts_early"]), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["video_codec"] == "h264" and report["audio_codec"] == "aac"
    assert report["frames_decoded"] == 75
    assert report["decoded_audio_sec"] == pytest.approx(2.5, abs=0.05)
    assert report["first_video_pts_sec"] == pytest.approx(0.5, abs=0.01)
    assert report["av_version"]


def test_inspect_table_on_a_good_file(clips: dict[str, Path]) -> None:
    result = CliRunner().invoke(app, ["inspect", str(clips["hevc"])])
    assert result.exit_code == 0, result.output
    assert "hevc" in result.stdout and "frames_decoded" in result.stdout


def test_inspect_bad_file_is_one_line_without_traceback(tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    result = CliRunner().invoke(app, ["inspect", str(text)])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(text) in lines[0] and "not a video" in lines[0]
    assert "Traceback" not in result.output


def test_s3_url_through_moto(moto_s3: MotoS3, clips: dict[str, Path]) -> None:
    bucket = moto_s3.bucket("decode")
    moto_s3.client().upload_file(str(clips["aac_5.1"]), bucket, "videos/clip.mp4")
    options = moto_s3.storage.fsspec_options()
    url = f"s3://{bucket}/videos/clip.mp4"
    info = probe(url, storage_options=options)
    assert info.source == url and info.audio_channels == 6
    remote = decode_all(url, time=TIME, video=SMALL, storage_options=options)
    local = decode_all(str(clips["aac_5.1"]), time=TIME, video=SMALL)
    np.testing.assert_array_equal(remote.frames, local.frames)
    np.testing.assert_array_equal(remote.audio, local.audio)
    with pytest.raises(SourceNotFoundError, match=f"s3://{bucket}/videos/missing.mp4"):
        probe(f"s3://{bucket}/videos/missing.mp4", storage_options=options)


def test_audio_overlaps_are_cut_and_gaps_filled_on_the_sample_grid() -> None:
    """Frames of 0.1 s at 16 kHz; the third is stamped 0.05 s early, the fourth 0.1 s late."""
    import av

    from assynch.media.decode import _AudioAssembler

    assembler = _AudioAssembler(16000, first_index=0, stop_index=None)
    out: list[np.ndarray] = []
    for value, when in [(1.0, 0.0), (2.0, 0.1), (3.0, 0.15), (4.0, 0.35)]:
        frame = av.AudioFrame.from_ndarray(
            np.full((1, 1600), value / 10, dtype=np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate = 16000
        assembler.push(frame, when, out)
    assembler.finish(out)
    audio = np.concatenate(out)
    expected = np.concatenate(
        [np.full(1600, 0.1), np.full(1600, 0.2), np.full(800, 0.3), np.zeros(1600),
         np.full(1600, 0.4)]
    )
    assert audio.shape == expected.shape
    np.testing.assert_allclose(audio, expected, atol=1e-6)
    assert assembler.padded == 1600
