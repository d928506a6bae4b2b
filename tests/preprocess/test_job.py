"""End to end on local Ray: real clips and bad inputs -> shards, errors.parquet, _manifest.json."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from preprocess_support import (
    check_row_against_decoder,
    check_sign,
    preprocess_config,
    read_all,
    write_inputs,
)

from assynch.preprocess.job import OutputConflictError, run_local
from assynch.preprocess.plan import assign_split
from assynch.preprocess.report import PreprocessReport
from assynch.samples.plan import sample_audio_samples, sample_frames
from assynch.shards.dataset import ShardDataset
from assynch.shards.reader import frames_to_numpy
from pipelines.preprocess import run

REQUIRED_COLUMNS = {
    "video_uid", "sample_id", "split", "offset_sec", "offset_class", "start_sec",
    "window_starts_sec", "audio_margin_sec", "frames", "mel",
}


@pytest.fixture(scope="module")
def finished(ray_local: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("preprocess_e2e")
    bad = write_inputs(root / "videos", good=3)
    config = preprocess_config(str(root / "videos"), str(root / "shards"))
    report = run(config)
    return {"root": root, "config": config, "report": report, "bad": bad,
            "output": str(root / "shards")}


def test_layout_schema_and_counts(finished: dict[str, Any]) -> None:
    config, report = finished["config"], finished["report"]
    output = Path(finished["output"])
    assert isinstance(report, PreprocessReport) and not report.already_complete
    names = sorted(p.name for p in output.iterdir())
    assert names == sorted(["_config.json", "_manifest.json", "errors.parquet",
                            *{p.name for p in output.iterdir() if p.is_dir()}])
    assert not (output / "_parts").exists()
    assert not [p for p in output.rglob("*") if ".tmp-" in p.name]

    table = read_all(finished["output"])
    assert REQUIRED_COLUMNS <= set(table.column_names)
    assert table.num_rows == 6  # 3 good clips x 2 samples
    assert table.schema.field("frames").type == pa.list_(
        pa.binary(64 * 64 * 3), sample_frames(config.time))
    mel_type = table.schema.field("mel").type
    audio_samples = sample_audio_samples(config.time, 2.0)
    assert list(mel_type.shape) == [128, 1 + audio_samples // 160]
    assert mel_type.value_type == pa.float16()

    rows = table.drop_columns(["frames", "mel"]).to_pylist()
    for row in rows:
        assert row["split"] == assign_split(row["video_uid"], config.preprocess.splits)
        assert row["offset_sec"] == pytest.approx((row["offset_class"] - 10) * 0.2, abs=1e-6)
        assert row["window_starts_sec"] == pytest.approx(
            [row["start_sec"], row["start_sec"] + 2.4])
        assert row["audio_margin_sec"] == 2.0
    assert Counter(r["video_uid"] for r in rows) == {"good0": 2, "good1": 2, "good2": 2}

    manifest = json.loads((output / "_manifest.json").read_text())
    assert manifest["samples"] == 6 and manifest["videos"] == 3
    assert manifest["errors"] == len(finished["bad"])
    assert manifest["config_hash"] == json.loads(
        (output / "_config.json").read_text())["config_hash"]
    assert sum(manifest["offset_histogram"]) == 6
    histogram = Counter(r["offset_class"] for r in rows)
    assert manifest["offset_histogram"] == [histogram.get(k, 0) for k in range(21)]
    assert manifest["seconds_of_video"] == pytest.approx(3 * 24.0, abs=1.0)
    assert manifest["mel_normalisation"]["norm_std"] == pytest.approx(4.5689974)
    assert "av" in manifest["code_version"] and "storage" not in manifest["config"]
    for split, info in manifest["splits"].items():
        in_split = [r for r in rows if r["split"] == split]
        assert info["samples"] == len(in_split)
        assert all(shard["rows"] <= 3 for shard in info["shards"])
        assert sum(shard["rows"] for shard in info["shards"]) == len(in_split)
        for shard in info["shards"]:
            assert pq.ParquetFile(output / shard["path"]).metadata.num_rows == shard["rows"]
    assert "total" in report.summary() and "errors: 4" in report.summary()


def test_samples_match_the_decoder_and_pin_the_offset_sign(finished: dict[str, Any]) -> None:
    config = finished["config"]
    table = read_all(finished["output"])
    frames = frames_to_numpy(table.column("frames"), (64, 64, 3))
    mels = table.column("mel").combine_chunks().to_numpy_ndarray()
    flashes_checked = 0
    for index, row in enumerate(table.drop_columns(["frames", "mel"]).to_pylist()):
        video = str(Path(finished["root"]) / "videos" / f"{row['video_uid']}.mp4")
        audio = check_row_against_decoder(row, frames[index], mels[index], video, config)
        flashes_checked += check_sign(frames[index], audio, row, config)
    assert flashes_checked >= 6


def test_bad_inputs_land_in_errors_parquet_with_reasons(finished: dict[str, Any]) -> None:
    errors = pq.read_table(Path(finished["output"]) / "errors.parquet").to_pylist()
    assert {e["video_uid"]: e["stage"] for e in errors} == finished["bad"]
    reasons = {e["video_uid"]: e["reason"] for e in errors}
    assert "no audio" in reasons["silent"]
    assert "too short" in reasons["short"]
    assert "not a video" in reasons["junk"]
    assert "cut off or corrupt" in reasons["truncated"]
    assert all(e["path"].endswith(f"{e['video_uid']}.mp4") for e in errors)


def test_shard_dataset_reads_the_output(finished: dict[str, Any]) -> None:
    manifest = json.loads((Path(finished["output"]) / "_manifest.json").read_text())
    split = max(manifest["splits"], key=lambda s: manifest["splits"][s]["samples"])
    dataset = ShardDataset(finished["output"], split, batch_size=2)
    batches = list(dataset)
    assert sum(len(b["video_uid"]) for b in batches) == manifest["splits"][split]["samples"]
    assert batches[0]["frames"].shape[1:] == (180, 64, 64, 3)
    assert dataset.num_rows() == manifest["splits"][split]["samples"]


def test_rerun_is_a_no_op_and_another_config_is_refused(finished: dict[str, Any]) -> None:
    output = Path(finished["output"])
    before = {p: p.stat().st_mtime_ns for p in output.rglob("*.parquet")}
    again = run(finished["config"])
    assert again.already_complete
    assert {p: p.stat().st_mtime_ns for p in output.rglob("*.parquet")} == before

    changed = preprocess_config(str(Path(finished["root"]) / "videos"), str(output), seed=5)
    with pytest.raises(OutputConflictError, match="another config"):
        run(changed)


def test_overwrite_redoes_everything_with_the_new_config(tmp_path: Path) -> None:
    write_inputs(tmp_path / "videos", good=1, bad=False)
    first = preprocess_config(str(tmp_path / "videos"), str(tmp_path / "out"), seed=1)
    run_local(first, isolate=False)
    second = preprocess_config(str(tmp_path / "videos"), str(tmp_path / "out"), seed=2)
    report = run_local(second, overwrite=True, isolate=False)
    assert report.processed_videos == 1
    stored = json.loads((tmp_path / "out" / "_config.json").read_text())
    assert stored["config"]["preprocess"]["seed"] == 2
    assert read_all(str(tmp_path / "out")).num_rows == 2


def test_a_folder_that_is_not_a_shard_set_is_never_touched(tmp_path: Path) -> None:
    write_inputs(tmp_path / "videos", good=1, bad=False)
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.txt").write_text("do not delete")
    config = preprocess_config(str(tmp_path / "videos"), str(tmp_path / "precious"))
    with pytest.raises(OutputConflictError, match="not an assynch shard set"):
        run_local(config, overwrite=True, isolate=False)
    assert (tmp_path / "precious" / "thesis.txt").read_text() == "do not delete"


def test_every_video_failing_fails_the_job_with_errors_written(tmp_path: Path) -> None:
    from assynch.preprocess.job import AllVideosFailedError

    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "a.mp4").write_bytes(b"junk" * 100)
    (folder / "b.mp4").write_bytes(b"")
    config = preprocess_config(str(folder), str(tmp_path / "out"))
    with pytest.raises(AllVideosFailedError, match="every one of the 2 video"):
        run_local(config, isolate=False)
    errors = pq.read_table(tmp_path / "out" / "errors.parquet").to_pylist()
    assert [e["video_uid"] for e in errors] == ["a", "b"]
    assert "empty" in errors[1]["reason"]
    assert not (tmp_path / "out" / "_manifest.json").exists()
    assert np.all([e["stage"] == "probe" for e in errors])


def test_local_workers_write_the_same_shards_as_one_worker(tmp_path: Path) -> None:
    """run_local(workers=2): two videos at once (each thread its own isolated worker process),
    the same rows as one at a time."""
    write_inputs(tmp_path / "videos", good=2, bad=False)
    one = preprocess_config(str(tmp_path / "videos"), str(tmp_path / "one"), seed=1)
    two = preprocess_config(str(tmp_path / "videos"), str(tmp_path / "two"), seed=1)
    run_local(one)
    report = run_local(two, workers=2)
    assert report.processed_videos == 2
    serial = read_all(str(tmp_path / "one")).sort_by("sample_id")
    parallel = read_all(str(tmp_path / "two")).sort_by("sample_id")
    assert parallel.num_rows == serial.num_rows > 0
    for column in ("sample_id", "offset_sec", "frames", "mel"):
        assert parallel.column(column).equals(serial.column(column)), column
