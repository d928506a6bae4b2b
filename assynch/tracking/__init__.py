"""MLflow tracking and registry: training runs, model logging, loading (docs/TRACKING.md).

The only part of the library that imports mlflow (import-linter); it never imports Ray.
"""

from assynch.tracking.loading import load_streaming_model
from assynch.tracking.run import RegisteredModel, TrainingRun, flatten_config, manifest_digest
from assynch.tracking.uri import (
    TrackingError,
    check_tracking_server,
    default_tracking_uri,
    resolve_tracking_uri,
    with_resolved_tracking_uri,
)

__all__ = [
    "RegisteredModel",
    "TrackingError",
    "TrainingRun",
    "check_tracking_server",
    "default_tracking_uri",
    "flatten_config",
    "load_streaming_model",
    "manifest_digest",
    "resolve_tracking_uri",
    "with_resolved_tracking_uri",
]
