"""Local paths and `s3://` URLs through fsspec/s3fs, and writes that are never seen half-done.

`s3://` options come from `StorageConfig` first, then the usual AWS environment variables
(`AWS_ENDPOINT_URL_S3`/`AWS_ENDPOINT_URL`, `AWS_REGION`/`AWS_DEFAULT_REGION`); credentials not in
the config are left to botocore's own chain (environment, profile, instance role). Nothing here
logs credentials: `describe_storage` is the only text about storage meant for logs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import fsspec
from fsspec import AbstractFileSystem

from assynch.config import StorageConfig
from assynch.errors import UserError

log = logging.getLogger(__name__)

TEMP_MARKER = ".tmp-"


class StorageError(UserError, RuntimeError):
    """A path or URL that cannot be reached, read or written."""


def is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def storage_options(url: str, storage: StorageConfig) -> dict[str, Any]:
    """fsspec keyword arguments for `url` (empty for local paths)."""
    if not url.startswith(("s3://", "s3a://")):
        return {}
    options = storage.fsspec_options()
    client_kwargs = dict(options.get("client_kwargs", {}))
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint and "endpoint_url" not in client_kwargs:
        client_kwargs["endpoint_url"] = endpoint
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region and "region_name" not in client_kwargs:
        client_kwargs["region_name"] = region
    if client_kwargs:
        options["client_kwargs"] = client_kwargs
    # Several processes write the same prefix: never answer from a stale listing.
    options["use_listings_cache"] = False
    return options


def describe_storage(url: str, storage: StorageConfig) -> str:
    """Where `url` lives, for logs: endpoint and region, never credentials."""
    if not is_remote(url):
        return f"local path {url}"
    client_kwargs = storage_options(url, storage).get("client_kwargs", {})
    endpoint = client_kwargs.get("endpoint_url", "AWS default endpoint")
    region = client_kwargs.get("region_name", "default region")
    return f"{url} (endpoint {endpoint}, {region})"


def filesystem(url: str, storage: StorageConfig) -> tuple[AbstractFileSystem, str]:
    """The filesystem holding `url` and the path inside it."""
    try:
        fs, path = fsspec.core.url_to_fs(url, **storage_options(url, storage))
    except (ImportError, ValueError) as exc:
        raise StorageError(
            f"cannot open {url!r}: {exc}. Use a local path or an s3:// URL."
        ) from exc
    return fs, path


def join(base: str, *parts: str) -> str:
    """Join path parts with '/', for local paths and URLs alike."""
    joined = base.rstrip("/")
    for part in parts:
        joined = f"{joined}/{part.strip('/')}"
    return joined


def full_url(fs: AbstractFileSystem, path: str) -> str:
    """A path returned by `fs` (ls/glob/find) as a URL that `filesystem` opens again."""
    if _is_local(fs):
        return path
    return fs.unstrip_protocol(path)


def _is_local(fs: AbstractFileSystem) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def temp_name(path: str) -> str:
    """A hidden sibling name for `path` that no `*.parquet`/`*.json` listing matches."""
    folder, _, name = path.rpartition("/")
    hidden = f".{name}{TEMP_MARKER}{uuid.uuid4().hex[:12]}"
    return f"{folder}/{hidden}" if folder else hidden


def is_temp_name(name: str) -> bool:
    return name.rsplit("/", 1)[-1].startswith(".") and TEMP_MARKER in name


@contextlib.contextmanager
def atomic_local_file(
    fs: AbstractFileSystem, path: str, local: str | None = None
) -> Iterator[str]:
    """Yield a local file name to write; on success it becomes `path` on `fs` in one step.

    Local targets: a hidden temporary sibling, then `os.replace` (atomic on one filesystem).
    Object stores: a local temporary file, then one upload (S3 shows an object only once its
    upload completes). On error the temporary file is removed and `path` is untouched.
    `local` chooses the temporary name (a caller that may have to clean up after a killed
    writer); for local targets it must be on the same filesystem as `path`.
    """
    if _is_local(fs):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        local = local or temp_name(path)
    elif local is None:
        handle, local = tempfile.mkstemp(prefix="assynch-", suffix=Path(path).suffix)
        os.close(handle)
    try:
        yield local
        if _is_local(fs):
            os.replace(local, path)
        else:
            fs.put_file(local, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(local)


def write_bytes_atomic(fs: AbstractFileSystem, path: str, data: bytes) -> None:
    with atomic_local_file(fs, path) as local, open(local, "wb") as handle:
        handle.write(data)


def read_bytes(fs: AbstractFileSystem, path: str) -> bytes:
    with fs.open(path, "rb") as handle:
        data: bytes = handle.read()
    return data


def open_input(fs: AbstractFileSystem, path: str) -> IO[bytes]:
    return fs.open(path, "rb")


def remove_tree(fs: AbstractFileSystem, path: str) -> None:
    """Remove a folder or prefix and everything under it; quiet when it is not there."""
    if fs.exists(path):
        fs.rm(path, recursive=True)


def remove_file(fs: AbstractFileSystem, path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        fs.rm_file(path)


def check_writable(fs: AbstractFileSystem, path: str, url: str) -> None:
    """Create `path` if needed and prove it takes a write; raise StorageError naming `url`."""
    probe = join(path, f".assynch-write-check-{uuid.uuid4().hex[:8]}")
    try:
        if _is_local(fs):
            fs.makedirs(path, exist_ok=True)
        fs.pipe_file(probe, b"ok")
        fs.rm_file(probe)
    except Exception as exc:  # any failure here means "cannot write there"
        raise StorageError(
            f"cannot write to output {url}: {type(exc).__name__}: {exc}. Check the path, the "
            "bucket, and the storage endpoint/credentials (storage.* config or AWS_* env vars)."
        ) from exc


def arrow_filesystem(url: str, storage: StorageConfig) -> tuple[Any, str]:
    """A pyarrow filesystem for `url` and the path inside it (what Ray Data's `read_parquet` and
    Ray Train's `storage_filesystem` take). Local paths come back absolute. `s3://` goes through
    the same s3fs filesystem as `filesystem` (endpoint, region, credentials; small files as one
    PUT): pyarrow's own S3 client writes every file as a multipart upload, which S3-compatible
    servers such as moto refuse for an empty file."""
    import pyarrow.fs

    if not is_remote(url):
        return pyarrow.fs.LocalFileSystem(), str(Path(url).expanduser().resolve())
    fs, path = filesystem(url, storage)
    return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs)), path.rstrip("/")
