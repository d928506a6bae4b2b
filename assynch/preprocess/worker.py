"""`VideoWorker`: process videos one at a time in a long-lived child process with a hard
time limit, so that a decode hung inside FFmpeg, or one that crashes the interpreter, costs
that video and never the job.

Protocol: the parent starts `python -m assynch.preprocess.video FD`, writes the config as
one JSON line on the child's stdin, then one JSON line per task; the child answers each task
with one JSON line on the pipe FD (so nothing a library prints to stdout can corrupt it).
stdin closing ends the child, and the child exits by itself when its parent dies.

This module imports no torch, PyAV or torchaudio: the Ray actor that holds a worker stays
light, and only the child pays for them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import subprocess
import sys
import tempfile
import time as wall_time
import uuid
from typing import Any

from assynch.config import AssynchConfig
from assynch.preprocess.plan import VideoResult, VideoTask
from assynch.storage import filesystem, temp_name, write_bytes_atomic

log = logging.getLogger(__name__)

# The child gets this long after its own deadline to report before it is killed.
HARD_KILL_GRACE_SEC = 5.0


def run_video_task(worker: VideoWorker, task: VideoTask, config: AssynchConfig) -> VideoResult:
    """Process one video and record a failure as its error marker (so reruns skip it)."""
    result = worker(task)
    if not result.ok:
        fs, path = filesystem(task.error_path, config.storage)
        write_bytes_atomic(fs, path, result.to_json().encode())
    return result


class VideoWorker:
    """Process videos one at a time in a long-lived child process with a hard time limit.

    A child that passes its deadline or dies is killed and replaced for the next video, so a
    decode hung inside FFmpeg or a crash costs one video, never the job. With
    `isolate=False` videos run in this process (deadline checked between chunks only).
    """

    def __init__(
        self,
        config: AssynchConfig,
        *,
        threads: int = 1,
        isolate: bool = True,
        kill_grace_sec: float = HARD_KILL_GRACE_SEC,
    ) -> None:
        self.config = config
        self.threads = max(1, threads)
        self.isolate = isolate
        self.kill_grace_sec = kill_grace_sec
        self._child: subprocess.Popen[bytes] | None = None
        self._results_fd: int | None = None
        self._buffer = b""

    def __call__(self, task: VideoTask) -> VideoResult:
        timeout = self.config.preprocess.video_timeout_sec
        if not self.isolate:
            import torch

            from assynch.preprocess.video import process_video

            # In-process runs share the caller's torch: restore its thread count afterwards.
            caller_threads = torch.get_num_threads()
            torch.set_num_threads(self.threads)
            try:
                return process_video(task, self.config, deadline=wall_time.monotonic() + timeout,
                                     decoder_threads=self.threads)
            finally:
                torch.set_num_threads(caller_threads)
        return self._run_isolated(task, timeout)

    def _start_child(self) -> subprocess.Popen[bytes]:
        read_fd, write_fd = os.pipe()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        child = subprocess.Popen(
            [sys.executable, "-m", "assynch.preprocess.video", str(write_fd)],
            stdin=subprocess.PIPE,
            stdout=sys.stderr.fileno() if _has_fileno(sys.stderr) else None,
            pass_fds=(write_fd,),
            env=env,
        )
        os.close(write_fd)
        header = {"config": config_for_workers(self.config), "threads": self.threads}
        assert child.stdin is not None
        child.stdin.write((json.dumps(header) + "\n").encode())
        child.stdin.flush()
        self._child, self._results_fd, self._buffer = child, read_fd, b""
        return child

    def _run_isolated(self, task: VideoTask, timeout: float) -> VideoResult:
        started = wall_time.monotonic()
        child = self._child if self._child is not None and self._child.poll() is None else None
        if child is None:
            self.close()
            child = self._start_child()
        fs, part_path = filesystem(task.part_path, self.config.storage)
        local_temp = (
            temp_name(part_path) if _is_local_path(task.part_path)
            else os.path.join(tempfile.gettempdir(), f"assynch-part-{uuid.uuid4().hex}.parquet")
        )
        request = {"task": task.to_json(), "timeout": timeout, "temp_path": local_temp}
        try:
            assert child.stdin is not None
            child.stdin.write((json.dumps(request) + "\n").encode())
            child.stdin.flush()
            line = self._read_line(timeout + self.kill_grace_sec)
        except BrokenPipeError:
            line = None
        if line is not None:
            result = VideoResult.from_json(line)
        else:
            timed_out = child.poll() is None
            self.close()
            with contextlib.suppress(FileNotFoundError):
                os.remove(local_temp)
            if timed_out:
                result = VideoResult.failure(
                    task, "timeout",
                    f"no result after {timeout + self.kill_grace_sec:g} s "
                    f"(preprocess.video_timeout_sec={timeout:g}); the decoder hung and was "
                    "killed",
                )
            else:
                result = VideoResult.failure(
                    task, "crash",
                    f"the decoding process died (exit code {child.returncode}); the file is "
                    "probably corrupt",
                )
        result.wall_sec = round(wall_time.monotonic() - started, 3)
        return result

    def _read_line(self, timeout: float) -> str | None:
        """One line from the child, or None when it does not answer in time or dies."""
        assert self._results_fd is not None
        deadline = wall_time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - wall_time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([self._results_fd], [], [], remaining)
            if not readable:
                return None
            data = os.read(self._results_fd, 1 << 16)
            if not data:
                return None
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def close(self) -> None:
        """Stop the child process (it is restarted by the next video)."""
        child, self._child = self._child, None
        if child is not None:
            if child.poll() is None:
                child.kill()
            child.wait()
            if child.stdin is not None:
                with contextlib.suppress(OSError):
                    child.stdin.close()
        if self._results_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._results_fd)
            self._results_fd = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def _has_fileno(stream: Any) -> bool:
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True


def _is_local_path(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def config_for_workers(config: AssynchConfig) -> dict[str, Any]:
    """The config for worker processes, with the storage secret in clear: it travels only as
    a task argument or over the child's stdin pipe; never logged, written or put on a command
    line."""
    dumped = config.model_dump(mode="json")
    secret = config.storage.secret_access_key
    if secret is not None:
        dumped["storage"]["secret_access_key"] = secret.get_secret_value()
    return dumped
