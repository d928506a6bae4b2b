"""Preprocessing against moto's S3 server: videos read from and shards written to s3://."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from preprocess_support import check_row_against_decoder, preprocess_config, read_all, write_inputs

from assynch.preprocess.inputs import InputError
from assynch.preprocess.job import PreprocessJob
from assynch.shards.dataset import ShardDataset
from assynch.shards.reader import frames_to_numpy, read_manifest
from assynch.storage import StorageError, filesystem
from pipelines.preprocess import run


def test_videos_from_s3_to_shards_on_s3(
    ray_local: Any, moto_s3: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    write_inputs(tmp_path / "videos", good=2, bad=False)
    (tmp_path / "videos" / "junk.mp4").write_bytes(b"not a video" * 50)
    bucket = moto_s3.bucket("assynch")
    moto_s3.upload_folder(tmp_path / "videos", bucket, "raw/videos")
    output = f"s3://{bucket}/shards/v1"
    config = preprocess_config(f"s3://{bucket}/raw/videos", output).model_copy(
        update={"storage": moto_s3.storage}
    )
    report = run(config)
    assert report.manifest["videos"] == 2 and report.manifest["samples"] == 4

    fs, path = filesystem(output, moto_s3.storage)
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))
    assert "_manifest.json" in names and "errors.parquet" in names and "_parts" not in names
    assert not [p for p in fs.find(path) if ".tmp-" in p]
    with fs.open(f"{path}/errors.parquet", "rb") as handle:
        errors = pq.read_table(handle).to_pylist()
    assert [(e["video_uid"], e["stage"]) for e in errors] == [("junk", "probe")]
    assert errors[0]["path"] == f"s3://{bucket}/raw/videos/junk.mp4"

    manifest = read_manifest(output, moto_s3.storage)
    table = read_all(output, moto_s3.storage)
    assert table.num_rows == 4
    frames = frames_to_numpy(table.column("frames"), (64, 64, 3))
    mels = table.column("mel").combine_chunks().to_numpy_ndarray()
    for index, row in enumerate(table.drop_columns(["frames", "mel"]).to_pylist()):
        local = str(tmp_path / "videos" / f"{row['video_uid']}.mp4")
        check_row_against_decoder(row, frames[index], mels[index], local, config)
    split = next(s for s, info in manifest["splits"].items() if info["samples"])
    batches = list(ShardDataset(output, split, storage=moto_s3.storage, batch_size=8))
    assert len(batches[0]["video_uid"]) == manifest["splits"][split]["samples"]

    secret = moto_s3.storage.secret_access_key.get_secret_value()
    for name in ("_manifest.json", "_config.json"):
        text = fs.cat_file(f"{path}/{name}").decode()
        assert secret not in text and "testing" not in json.loads(text)["config"].get(
            "storage", {}).values()
    assert secret not in caplog.text
    assert moto_s3.endpoint_url in caplog.text  # the endpoint is logged, the secret is not


def test_unreachable_s3_input_or_output_is_a_clear_error(moto_s3: Any, tmp_path: Path) -> None:
    bucket = moto_s3.bucket("reach")
    write_inputs(tmp_path / "videos", good=1, bad=False)
    missing_input = preprocess_config(
        f"s3://{bucket}/no/such/prefix", str(tmp_path / "out")
    ).model_copy(update={"storage": moto_s3.storage})
    with pytest.raises(InputError, match=f"s3://{bucket}/no/such/prefix does not exist"):
        PreprocessJob(missing_input).prepare()
    bad_output = preprocess_config(
        str(tmp_path / "videos"), "s3://bucket-that-does-not-exist/out"
    ).model_copy(update={"storage": moto_s3.storage})
    with pytest.raises(StorageError, match="cannot write to output s3://bucket-that-does-not"):
        PreprocessJob(bad_output).prepare()
