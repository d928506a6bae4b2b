"""Bad inputs: one clear line naming the file and the reason, exit code 2, no traceback; in a
batch the other videos go on."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from media_files import ClipSpec, truncate_file, write_clip
from typer.testing import CliRunner

from assynch.cli import app

SPEC = ClipSpec(duration_sec=6.0, fps=Fraction(25), width=96, height=72)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad_inputs")
    good = write_clip(folder / "good.mp4", SPEC)
    audio_only = folder / "sound.m4a"
    with av.open(str(audio_only), "w") as container:
        stream = container.add_stream("aac", rate=48000, layout="mono")
        for first in range(0, 48000, 1024):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                               layout="mono")
            frame.sample_rate, frame.pts = 48000, first
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    text = folder / "notes.mp4"
    text.write_text("not a video\n")
    return {
        "good": good,
        "no audio": write_clip(folder / "silent_film.mp4", ClipSpec(
            duration_sec=6.0, fps=Fraction(25), width=96, height=72, audio_codec=None)),
        "no video": audio_only,
        "unreadable": text,
        "truncated": truncate_file(good, folder / "cut.mp4", 0.5),
        "too short": write_clip(folder / "short.mp4", ClipSpec(
            duration_sec=3.0, fps=Fraction(25), width=96, height=72)),
        "missing": folder / "nowhere.mp4",
    }


def detect(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["detect", *args])
    return result.exit_code, result.stdout, result.stderr


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize(("case", "words"), [
    ("no audio", "no audio stream"),
    ("no video", "no video stream"),
    ("unreadable", "not a video file"),
    ("truncated", "cut off"),
    ("too short", "at least one window"),
    ("missing", "no such file"),
])
def test_a_bad_video_is_one_line_and_exit_2(
    media: dict[str, Path], random_checkpoint: Path, case: str, words: str
) -> None:
    code, stdout, stderr = detect(str(media[case]), "--checkpoint", str(random_checkpoint))
    assert code == 2, (stdout, stderr)
    line = one_error_line(stderr)
    assert str(media[case]) in line and words in line, line


@pytest.fixture(scope="module")
def empty_registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An MLflow SQLite store with no registered model."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    MlflowClient(uri, registry_uri=uri).search_registered_models()
    return uri


@pytest.mark.parametrize(("args", "words"), [
    (["--checkpoint", "/nonexistent/model.pt"], "no such file"),
    (["--model", "ftp://host/model.pt"], "unknown model URI"),
    (["--model", "models:/nobody@champion", "--set",
      "tracking.tracking_uri=sqlite:////nonexistent/mlflow.db"], "no MLflow database"),
    (["--model", "models:/nobody@champion", "--set", "tracking.tracking_uri=REGISTRY"],
     "no registered model named 'nobody'"),
    (["--set", "tracking.tracking_uri=REGISTRY"], "no model given"),
])
def test_an_unknown_model_is_one_line_and_exit_2(
    media: dict[str, Path], empty_registry: str, args: list[str], words: str
) -> None:
    args = [a.replace("=REGISTRY", f"={empty_registry}") for a in args]
    code, _, stderr = detect(str(media["good"]), *args)
    assert code == 2
    assert words in one_error_line(stderr)


def test_a_file_that_is_no_checkpoint_is_one_line(media: dict[str, Path]) -> None:
    code, _, stderr = detect(str(media["good"]), "--checkpoint", str(media["unreadable"]))
    assert code == 2
    assert "neither an assynch checkpoint" in one_error_line(stderr)


def test_a_batch_reports_the_bad_file_and_goes_on(
    media: dict[str, Path], random_checkpoint: Path
) -> None:
    code, stdout, stderr = detect(
        str(media["good"]), str(media["truncated"]), str(media["good"]), "--json",
        "--checkpoint", str(random_checkpoint),
    )
    documents = [json.loads(line) for line in stdout.splitlines()]
    assert [d["video"] for d in documents] == [str(media[k]) for k in ("good", "truncated", "good")]
    assert "error" in documents[1] and documents[1]["exit_code"] == 2
    assert documents[0]["windows"] == 1 and documents[2]["windows"] == 1
    assert code == 2
    assert str(media["truncated"]) in one_error_line(stderr)


def test_a_folder_is_a_batch_with_a_table(media: dict[str, Path], random_checkpoint: Path) -> None:
    code, stdout, stderr = detect(str(media["good"].parent), "--checkpoint",
                                  str(random_checkpoint))
    assert code == 2  # some of them are bad
    # the five .mp4 files (sound.m4a has no video suffix); all but good.mp4 are errors
    assert "assynch detect: 5 videos" in stdout, stdout
    assert stdout.count("error") == 4, stdout
    assert len([line for line in stderr.splitlines() if line.startswith("error:")]) == 4
