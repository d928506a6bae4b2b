"""The preprocessing job, independent of how its two parallel steps are executed.

`run_preprocess` lists the inputs, checks the output against the config hash, skips videos
finished by an earlier (possibly killed) run, hands the rest to `map_videos` (each video ->
one part file or one error marker), then hands the shard plan to `map_shards` (parts -> shards
of `rows_per_shard` rows), and writes `errors.parquet` and, last, `_manifest.json`.
`pipelines/preprocess.py` runs the two steps on Ray Data; `run_local` runs them in this process.
"""

from __future__ import annotations

import json
import logging
import threading
import time as wall_time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow.parquet as pq

from assynch.config import AssynchConfig
from assynch.errors import AssynchError, UserError
from assynch.preprocess.compaction import write_shard
from assynch.preprocess.inputs import InputListing, list_inputs
from assynch.preprocess.plan import (
    CONFIG_NAME,
    ERRORS_NAME,
    FORMAT_VERSION,
    PARTS_DIR,
    RESULT_KEY,
    ShardPlan,
    VideoResult,
    VideoTask,
    assign_split,
    build_manifest,
    part_stem,
    plan_shards,
    preprocess_config_hash,
)
from assynch.preprocess.report import PreprocessReport, errors_table
from assynch.preprocess.worker import VideoWorker, run_video_task
from assynch.shards.format import MANIFEST_NAME, SPLITS, layout_description
from assynch.storage import (
    atomic_local_file,
    check_writable,
    describe_storage,
    filesystem,
    is_temp_name,
    join,
    read_bytes,
    remove_file,
    remove_tree,
    write_bytes_atomic,
)

log = logging.getLogger(__name__)

MapVideos = Callable[[list[VideoTask]], Iterable[VideoResult]]
MapShards = Callable[[list[ShardPlan]], Iterable[tuple[ShardPlan, int]]]
ERROR_SUFFIX = ".error.json"


class PreprocessError(AssynchError, RuntimeError):
    """The job as a whole cannot go on (its message says why and what to do)."""


class OutputConflictError(PreprocessError, UserError):
    """The output folder holds shards of another config, or unrelated files."""


class AllVideosFailedError(PreprocessError):
    """Not a single video could be turned into samples."""


# ---------------------------------------------------------------------------------------------
# The output folder


class OutputFolder:
    """The output of one config: its marker files, parts and shards."""

    def __init__(self, url: str, config: AssynchConfig) -> None:
        self.url = url.rstrip("/")
        self.config = config
        self.fs, self.path = filesystem(self.url, config.storage)

    def url_of(self, *parts: str) -> str:
        return join(self.url, *parts)

    def path_of(self, *parts: str) -> str:
        return join(self.path, *parts)

    def task_for(self, video_uid: str, url: str, split: str) -> VideoTask:
        stem = part_stem(video_uid)
        return VideoTask(
            video_uid=video_uid,
            url=url,
            split=split,
            part_path=self.url_of(PARTS_DIR, f"{stem}.parquet"),
            error_path=self.url_of(PARTS_DIR, f"{stem}{ERROR_SUFFIX}"),
        )

    def prepare(self, config_hash: str, overwrite: bool) -> bool:
        """Check the output against `config_hash` (wiping it first with `overwrite`); write
        `_config.json`. Returns True when a finished run of this config is already there."""
        check_writable(self.fs, self.path, self.url)
        stored = self._stored_hash()
        if overwrite and (stored is not None or self._is_ours()):
            log.info("--overwrite: removing the previous output in %s", self.url)
            for entry in self.fs.ls(self.path, detail=False):
                remove_tree(self.fs, entry)
            stored = None
        if stored is not None and stored != config_hash:
            raise OutputConflictError(
                f"output {self.url} holds shards of another config (hash {stored}; this config "
                f"is {config_hash}). Choose another preprocess.output (--output), or pass "
                "--overwrite to replace them."
            )
        if stored is None:
            if not self._is_empty() and not self._is_ours():
                raise OutputConflictError(
                    f"output {self.url} is not empty and holds no {CONFIG_NAME}, so it is not an "
                    "assynch shard set; choose an empty or new folder for preprocess.output"
                )
            document = {
                "format": FORMAT_VERSION,
                "config_hash": config_hash,
                "config": self.config.model_dump(
                    mode="json", include={"time", "video", "audio", "preprocess"}
                ),
            }
            write_bytes_atomic(
                self.fs, self.path_of(CONFIG_NAME), json.dumps(document, indent=2).encode()
            )
        return self.fs.exists(self.path_of(MANIFEST_NAME))

    def _stored_hash(self) -> str | None:
        path = self.path_of(CONFIG_NAME)
        if not self.fs.exists(path):
            return None
        try:
            return str(json.loads(read_bytes(self.fs, path))["config_hash"])
        except (ValueError, KeyError) as exc:
            raise OutputConflictError(
                f"{self.url_of(CONFIG_NAME)} is unreadable ({exc}); remove it or pass --overwrite"
            ) from exc

    def _entries(self) -> list[str]:
        if not self.fs.isdir(self.path):
            return []
        return [
            entry.rstrip("/").rsplit("/", 1)[-1]
            for entry in self.fs.ls(self.path, detail=False)
            if not entry.rstrip("/").rsplit("/", 1)[-1].startswith(".assynch-write-check")
        ]

    def _is_empty(self) -> bool:
        return not self._entries()

    def _is_ours(self) -> bool:
        names = set(self._entries())
        ours = {CONFIG_NAME, MANIFEST_NAME, ERRORS_NAME, PARTS_DIR, *SPLITS}
        return bool(names) and names <= ours | {n for n in names if n.startswith(".")}

    def clean_temporaries(self) -> None:
        """Remove half-written files left by a killed run (they were never visible)."""
        for folder in (self.path, self.path_of(PARTS_DIR), *(self.path_of(s) for s in SPLITS)):
            if not self.fs.isdir(folder):
                continue
            for entry in self.fs.ls(folder, detail=False):
                if is_temp_name(entry):
                    remove_file(self.fs, entry)

    def finished_results(self) -> dict[str, VideoResult]:
        """Results of videos an earlier run finished, by part stem."""
        parts = self.path_of(PARTS_DIR)
        if not self.fs.isdir(parts):
            return {}
        results: dict[str, VideoResult] = {}
        for entry in sorted(self.fs.ls(parts, detail=False)):
            name = entry.rsplit("/", 1)[-1]
            if is_temp_name(name):
                continue
            if name.endswith(ERROR_SUFFIX):
                result = VideoResult.from_json(read_bytes(self.fs, entry).decode())
                results[name[: -len(ERROR_SUFFIX)]] = result
            elif name.endswith(".parquet"):
                with self.fs.open(entry, "rb") as handle:
                    metadata = pq.read_metadata(handle).metadata or {}
                raw = metadata.get(RESULT_KEY.encode())
                if raw is None:
                    log.warning("part %s has no result record; it will be redone", entry)
                    continue
                results[name[: -len(".parquet")]] = VideoResult.from_json(raw.decode())
        return results

    def remove_error_markers(self) -> int:
        parts = self.path_of(PARTS_DIR)
        if not self.fs.isdir(parts):
            return 0
        markers = [e for e in self.fs.ls(parts, detail=False) if e.endswith(ERROR_SUFFIX)]
        for marker in markers:
            remove_file(self.fs, marker)
        return len(markers)

    def clear_shards(self) -> None:
        for split in SPLITS:
            remove_tree(self.fs, self.path_of(split))

    def write_errors(self, errors: list[VideoResult]) -> None:
        with atomic_local_file(self.fs, self.path_of(ERRORS_NAME)) as local:
            pq.write_table(errors_table(errors), local)

    def read_errors(self) -> list[VideoResult]:
        path = self.path_of(ERRORS_NAME)
        if not self.fs.exists(path):
            return []
        with self.fs.open(path, "rb") as handle:
            table = pq.read_table(handle)
        return [
            VideoResult(row["video_uid"], row["path"], "", False, stage=row["stage"],
                        reason=row["reason"])
            for row in table.to_pylist()
        ]

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        write_bytes_atomic(
            self.fs, self.path_of(MANIFEST_NAME), json.dumps(manifest, indent=2).encode()
        )

    def read_manifest(self) -> dict[str, Any]:
        manifest: dict[str, Any] = json.loads(read_bytes(self.fs, self.path_of(MANIFEST_NAME)))
        return manifest

    def remove_parts(self) -> None:
        remove_tree(self.fs, self.path_of(PARTS_DIR))


# ---------------------------------------------------------------------------------------------
# The job


def input_listing(config: AssynchConfig) -> InputListing:
    pre = config.preprocess
    return list_inputs(
        pre.input, config.storage, ego4d_root=pre.ego4d_root, split_field=pre.split_field
    )


class PreprocessJob:
    """One run: `prepare()` checks input and output (cheap, before any cluster starts), then
    `execute()` does the work with the given executors."""

    def __init__(
        self, config: AssynchConfig, *, overwrite: bool = False, retry_errors: bool = False
    ) -> None:
        self.config = config
        self.overwrite = overwrite
        self.retry_errors = retry_errors
        self.output = OutputFolder(config.preprocess.output, config)
        self.config_hash = preprocess_config_hash(config)
        self.started = wall_time.time()
        self.listing: InputListing | None = None
        self.tasks: list[VideoTask] = []
        self.reused: list[VideoResult] = []

    def prepare(self) -> PreprocessReport | None:
        """List the inputs and check the output; a report when the output is already complete."""
        config, pre = self.config, self.config.preprocess
        log.info("input %s -> output %s", describe_storage(pre.input, config.storage),
                 describe_storage(pre.output, config.storage))
        listing = self.listing = input_listing(config)
        output = self.output
        if output.prepare(self.config_hash, self.overwrite):
            manifest = output.read_manifest()
            listed = len(listing.entries) + len(listing.skipped)
            known = manifest["videos"] + manifest["errors"]
            if listed != known:
                log.warning(
                    "the input now lists %d videos but the finished output holds %d; new videos "
                    "are not added to a finished shard set (use another output or --overwrite)",
                    listed, known,
                )
            return PreprocessReport(manifest, output.read_errors(), already_complete=True)
        output.clean_temporaries()
        if self.retry_errors:
            log.info("--retry-errors: %d failed video(s) will be tried again",
                     output.remove_error_markers())
        finished = output.finished_results()
        for entry in listing.entries:
            split = assign_split(entry.video_uid, pre.splits, entry.split)
            earlier = finished.get(part_stem(entry.video_uid))
            if earlier is not None and earlier.video_uid == entry.video_uid:
                self.reused.append(earlier)
            else:
                self.tasks.append(output.task_for(entry.video_uid, entry.url, split))
        log.info("%d video(s) to process, %d finished earlier, %d skipped by their metadata",
                 len(self.tasks), len(self.reused), len(listing.skipped))
        return None

    def execute(self, map_videos: MapVideos, map_shards: MapShards) -> PreprocessReport:
        if self.listing is None:
            raise RuntimeError("PreprocessJob.execute() needs prepare() first")
        config, output = self.config, self.output
        results = list(self.reused)
        stage_started = wall_time.perf_counter()
        for result in map_videos(self.tasks) if self.tasks else ():
            if result.ok:
                log.info("video %s: %d sample(s) in %.1f s", result.video_uid, result.samples,
                         result.wall_sec)
            else:
                log.warning("video %s failed at %s: %s", result.video_uid, result.stage,
                            result.reason)
            results.append(result)

        log.info("stage 1: %d video(s) decoded in %.1f s", len(self.tasks),
                 wall_time.perf_counter() - stage_started)
        errors = [r for r in results if not r.ok] + [
            VideoResult(s.video_uid, s.url, "", False, stage="input", reason=s.reason)
            for s in self.listing.skipped
        ]
        errors.sort(key=lambda e: e.video_uid)
        ok = [r for r in results if r.ok]
        if not ok:
            output.write_errors(errors)
            first = f" (first: {errors[0].video_uid}: {errors[0].reason})" if errors else ""
            raise AllVideosFailedError(
                f"every one of the {len(errors)} video(s) failed; the reasons are in "
                f"{output.url_of(ERRORS_NAME)}{first}"
            )

        output.clear_shards()
        plans = plan_shards(ok, output.url, config.preprocess.rows_per_shard)
        stage_started = wall_time.perf_counter()
        written = list(map_shards(plans)) if plans else []
        log.info("stage 2: %d shard(s) written in %.1f s", len(written),
                 wall_time.perf_counter() - stage_started)
        for plan, rows in written:
            if rows != plan.rows:
                raise PreprocessError(
                    f"shard {plan.path} got {rows} rows, {plan.rows} planned; rerun the job"
                )
        written.sort(key=lambda item: (item[0].split, item[0].index))
        output.write_errors(errors)

        manifest = build_manifest(
            config, self.config_hash, ok, errors, written, layout_description(config),
            self.started,
        )
        output.write_manifest(manifest)
        output.remove_parts()
        return PreprocessReport(
            manifest, errors, reused_videos=len(self.reused), processed_videos=len(self.tasks)
        )


def run_preprocess(
    config: AssynchConfig,
    *,
    map_videos: MapVideos,
    map_shards: MapShards,
    overwrite: bool = False,
    retry_errors: bool = False,
) -> PreprocessReport:
    job = PreprocessJob(config, overwrite=overwrite, retry_errors=retry_errors)
    return job.prepare() or job.execute(map_videos, map_shards)


def run_local(
    config: AssynchConfig,
    *,
    overwrite: bool = False,
    retry_errors: bool = False,
    isolate: bool = True,
    workers: int = 1,
) -> PreprocessReport:
    """The same job without Ray, in this process (for small inputs, tests, benchmarks and
    debugging). `workers` > 1 runs that many videos at once from a thread pool, each thread
    with its own `VideoWorker` (with `isolate`, its own child process, so decoding runs in
    parallel whatever the GIL); results come back in task order."""
    local = threading.local()
    workers = max(1, workers)

    def video_worker() -> VideoWorker:
        if not hasattr(local, "worker"):
            local.worker = VideoWorker(
                config, threads=max(1, int(config.preprocess.cpus_per_worker)), isolate=isolate
            )
        return local.worker

    def map_videos(tasks: list[VideoTask]) -> Iterator[VideoResult]:
        if workers == 1:
            yield from (run_video_task(video_worker(), task, config) for task in tasks)
            return
        with ThreadPoolExecutor(workers, thread_name_prefix="preprocess") as pool:
            yield from pool.map(lambda task: run_video_task(video_worker(), task, config), tasks)

    def map_shards(plans: list[ShardPlan]) -> Iterable[tuple[ShardPlan, int]]:
        return ((plan, write_shard(plan, config)) for plan in plans)

    return run_preprocess(
        config, map_videos=map_videos, map_shards=map_shards, overwrite=overwrite,
        retry_errors=retry_errors,
    )
