"""Which MLflow tracking server a run talks to, and whether it answers.

The URI comes from `tracking.tracking_uri`, else `$MLFLOW_TRACKING_URI`, else the embedded
default `sqlite:///<working folder>/mlflow.db`. Relative SQLite paths are made absolute against
the working folder, so the driver, Ray workers and Ray jobs all write the same database.
"""

from __future__ import annotations

import contextlib
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from assynch.config import AssynchConfig
from assynch.errors import UserError

DEFAULT_DB_NAME = "mlflow.db"
ARTIFACTS_DIR_NAME = "mlartifacts"  # beside the SQLite file; the name `mlflow server` uses
DEFAULT_CONNECT_TIMEOUT_SEC = 5.0
_FIX = (
    "start it (`mlflow server --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 "
    "--port 5000`) or set tracking.tracking_uri / MLFLOW_TRACKING_URI to a reachable server "
    "(or to sqlite:///path/mlflow.db to track locally)"
)


class TrackingError(UserError, RuntimeError):
    """A tracking server, model URI or registered model that cannot be used as given."""


def _absolute_sqlite(uri: str, base: Path) -> str:
    path = uri[len("sqlite:///"):]
    if path in ("", ":memory:"):
        raise TrackingError(
            f"tracking URI {uri!r} names no database file; use sqlite:///path/to/mlflow.db"
        )
    db = Path(path)
    if not db.is_absolute():
        db = (base / db).resolve()
    return f"sqlite:///{db.as_posix()}"


def normalise_tracking_uri(uri: str, base: str | Path | None = None) -> str:
    """`uri` with a relative SQLite path made absolute (against `base`, default the cwd).

    Plain folders and `file:` URIs are refused: MLflow 3.18 no longer writes its file store.
    """
    uri = uri.strip()
    base_path = Path(base) if base is not None else Path.cwd()
    if uri.startswith("sqlite:///"):
        return _absolute_sqlite(uri, base_path)
    scheme = urlparse(uri).scheme
    if scheme in ("", "file") or len(scheme) == 1:  # a folder, file:, or a Windows drive
        folder = uri.removeprefix("file://") or "."
        raise TrackingError(
            f"tracking URI {uri!r} is a plain folder (MLflow's file store, which MLflow 3.18 "
            f"refuses); use sqlite:///{Path(folder).as_posix().rstrip('/')}/{DEFAULT_DB_NAME} "
            "or an http(s):// server"
        )
    return uri


def default_tracking_uri(base: str | Path | None = None) -> str:
    """`$MLFLOW_TRACKING_URI` when set, else `sqlite:///<base or cwd>/mlflow.db` (absolute)."""
    from_env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if from_env:
        return normalise_tracking_uri(from_env, base)
    base_path = Path(base) if base is not None else Path.cwd()
    return f"sqlite:///{(base_path / DEFAULT_DB_NAME).resolve().as_posix()}"


def resolve_tracking_uri(config: AssynchConfig) -> str:
    """`tracking.tracking_uri`, else `$MLFLOW_TRACKING_URI`, else the embedded SQLite default;
    relative SQLite paths made absolute against the current working folder."""
    if config.tracking.tracking_uri:
        return normalise_tracking_uri(config.tracking.tracking_uri)
    return default_tracking_uri()


def with_resolved_tracking_uri(config: AssynchConfig) -> AssynchConfig:
    """`config` with `tracking.tracking_uri` set to `resolve_tracking_uri(config)`. Call it in the
    driver before handing the config to Ray workers or jobs: their working folder may differ
    (Ray unpacks `--working-dir` elsewhere), so a relative or default URI resolved there would
    name another database."""
    tracking = config.tracking.model_copy(update={"tracking_uri": resolve_tracking_uri(config)})
    return config.model_copy(update={"tracking": tracking})


def sqlite_path(uri: str) -> Path | None:
    """The database file of an (absolute) SQLite URI, else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):])


def sqlite_artifact_location(uri: str) -> str | None:
    """Where experiments of a SQLite store keep artifacts: `mlartifacts/` beside the database
    (never `./mlruns` of whatever folder a process happens to run in). None for servers."""
    db = sqlite_path(uri)
    if db is None:
        return None
    return (db.parent / ARTIFACTS_DIR_NAME).resolve().as_uri()


def check_tracking_server(uri: str, timeout_sec: float = DEFAULT_CONNECT_TIMEOUT_SEC) -> None:
    """Fail fast with a `TrackingError` (a UserError) naming `uri` and the fix when the tracking
    store cannot be reached: one HTTP request with a short timeout instead of MLflow's minutes
    of retries; for SQLite, that the database folder exists or can be made."""
    db = sqlite_path(uri)
    if db is not None:
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingError(
                f"tracking URI {uri}: cannot create the folder {db.parent} ({exc.strerror}); "
                "point tracking.tracking_uri at a writable place"
            ) from None
        if not os.access(db.parent, os.W_OK):
            raise TrackingError(
                f"tracking URI {uri}: folder {db.parent} is not writable; point "
                "tracking.tracking_uri at a writable place"
            )
        return
    scheme = urlparse(uri).scheme
    if scheme not in ("http", "https"):
        return  # databricks, postgresql+..., etc.: left to MLflow
    health = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(health, timeout=timeout_sec) as response:
            response.read(64)
    except urllib.error.HTTPError as exc:
        if exc.code in (400, 403) and b"host" in exc.read(512).lower():
            raise TrackingError(
                f"MLflow server {uri} refuses this host name (HTTP {exc.code}); start it with "
                f"--allowed-hosts including {urlparse(uri).netloc}"
            ) from None
        # Any other HTTP answer: something serves there (e.g. a proxy without /health).
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(
            f"MLflow tracking server {uri} is unreachable ({reason}); {_FIX}"
        ) from None


@contextlib.contextmanager
def using_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (tracking and registry) at `uri`; afterwards restore what was
    set before, including the environment variables MLflow writes for child processes."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved_env = {name: os.environ.get(name) for name in _URI_ENV_VARS}
    saved_tracking = tracking_utils._tracking_uri
    saved_registry = registry_utils._registry_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        tracking_utils._tracking_uri = saved_tracking
        registry_utils._registry_uri = saved_registry
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


_URI_ENV_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def ui_hint(uri: str, experiment_id: str | None = None, run_id: str | None = None) -> str:
    """How to look at `uri` in the MLflow UI: a link for a server, the command for SQLite."""
    db = sqlite_path(uri)
    if db is not None:
        return (f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000, then "
                f"http://127.0.0.1:5000/#/experiments/{experiment_id or ''}"
                + (f"/runs/{run_id}" if experiment_id and run_id else ""))
    if urlparse(uri).scheme in ("http", "https"):
        link = uri.rstrip("/") + "/#/experiments"
        if experiment_id:
            link += f"/{experiment_id}" + (f"/runs/{run_id}" if run_id else "")
        return link
    return f"open the MLflow UI of {uri}"
