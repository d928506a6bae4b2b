"""Which model `assynch detect` runs: `--checkpoint PATH` or `--model URI` (the registry).

- `--checkpoint PATH`: an assynch checkpoint (`save_model_checkpoint`: weights + config), or a
  Synchformer-format state dict, imported with `load_synchformer_checkpoint` into a `snapshot`
  model built from `--config` (Synchformer's sizes by default: configs/full.yaml fits its
  released weights).
- `--model URI` (`models:/NAME@ALIAS`, `models:/NAME/VERSION`, `runs:/...`, `s3://...`; a local
  path is treated as `--checkpoint`): `assynch.tracking.load_streaming_model` (MLflow), imported
  only when used.
- Neither: the config's `tracking.registered_model` at alias `champion`, else `candidate`.
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

from assynch.config import AssynchConfig
from assynch.errors import UserError
from assynch.models import (
    StreamingModel,
    build_model,
    load_model_checkpoint,
    load_synchformer_checkpoint,
)

log = logging.getLogger(__name__)

DEFAULT_ALIASES = ("champion", "candidate")
CHECKPOINT_FILE_NAME = "model.pt"  # what training checkpoints and logged models hold


class ModelLoadError(UserError):
    """The model named on the command line cannot be loaded."""


@dataclass(frozen=True)
class LoadedModel:
    model: StreamingModel
    config: AssynchConfig
    description: str


def _describe(exc: Exception) -> str:
    text = (str(exc).splitlines() or [""])[0]
    return text if len(text) > 12 else f"unreadable: {type(exc).__name__} {text}".strip()


def _is_torch_file(file: Path) -> bool:
    """torch.save's zip format, or its legacy pickle (protocol 2+ starts with 0x80)."""
    if zipfile.is_zipfile(file):
        return True
    with file.open("rb") as handle:
        return handle.read(1) == b"\x80"


def load_checkpoint(path: str, base_config: AssynchConfig) -> LoadedModel:
    """An assynch checkpoint, or failing that a Synchformer-format one (into a snapshot model)."""
    file = Path(path).expanduser()
    if file.is_dir():  # a training checkpoint folder holds the model as model.pt
        file = file / CHECKPOINT_FILE_NAME
    if not file.is_file():
        raise ModelLoadError(
            f"--checkpoint {path}: no such file; pass a local checkpoint file (or a training "
            f"checkpoint folder holding {CHECKPOINT_FILE_NAME}), or --model s3://... for a "
            f"remote one"
        )
    try:
        model, config = load_model_checkpoint(file)
        return LoadedModel(model, config, f"checkpoint {path} ({config.model.kind})")
    except Exception as first:  # torch.load raises many kinds on a file that is no checkpoint
        assynch_problem = _describe(first)
    if not _is_torch_file(file):  # do not build a (full-size) model for a text file
        raise ModelLoadError(
            f"--checkpoint {path}: neither an assynch checkpoint ({assynch_problem}) nor a "
            f"Synchformer checkpoint (not a file written by torch.save)"
        )
    config = base_config.model_copy(
        update={"model": base_config.model.model_copy(
            update={"kind": "snapshot", "pretrained_checkpoint": None}
        )}
    )
    model = build_model(config, load_pretrained=False)
    try:
        report = load_synchformer_checkpoint(model, file)
    except Exception as second:
        second_problem = _describe(second)
        raise ModelLoadError(
            f"--checkpoint {path}: neither an assynch checkpoint ({assynch_problem}) nor a "
            f"Synchformer checkpoint that fits the config ({second_problem})"
        ) from None
    return LoadedModel(
        model.eval(), config, f"Synchformer checkpoint {path} ({report.summary()})"
    )


def load_registered(uri: str, config: AssynchConfig) -> LoadedModel:
    """`models:/...`, `runs:/...` or an `s3://` checkpoint through `assynch.tracking` (MLflow is
    imported only here, so `--checkpoint` runs start without it)."""
    from assynch.tracking import load_streaming_model, resolve_tracking_uri

    try:
        tracking = resolve_tracking_uri(config)
        if uri.startswith(("models:/", "runs:/")) and tracking.startswith("sqlite:///"):
            database = Path(tracking.removeprefix("sqlite:///"))
            if not database.is_file():  # MLflow would create an empty one in the user's folder
                raise ModelLoadError(
                    f"--model {uri}: there is no MLflow database at {database} (tracking URI "
                    f"{tracking}); set tracking.tracking_uri or MLFLOW_TRACKING_URI to the "
                    f"registry, or pass --checkpoint PATH"
                )
        model, model_config = load_streaming_model(uri, tracking_uri=tracking)
    except ModelLoadError:
        raise
    except UserError as exc:
        raise ModelLoadError(f"--model {uri}: {exc}") from None
    except Exception as exc:  # the registry's own errors: one line naming the model
        raise ModelLoadError(
            f"--model {uri}: cannot load it ({type(exc).__name__}: {_describe(exc)}); check "
            f"the name, version or alias and the tracking URI"
        ) from None
    return LoadedModel(model.eval(), model_config, f"model {uri} ({model_config.model.kind})")


def load_default(config: AssynchConfig) -> LoadedModel:
    """The registered model at alias `champion`, else `candidate`."""
    name = config.tracking.registered_model
    problems = []
    for alias in DEFAULT_ALIASES:
        try:
            return load_registered(f"models:/{name}@{alias}", config)
        except ModelLoadError as exc:
            problems.append(str(exc))
    raise ModelLoadError(
        f"no model given and neither models:/{name}@champion nor @candidate loads "
        f"({problems[0]}); pass --model URI or --checkpoint PATH"
    )


def resolve_model(
    config: AssynchConfig, *, model_uri: str | None, checkpoint: str | None
) -> LoadedModel:
    if model_uri and checkpoint:
        raise ModelLoadError("pass either --model or --checkpoint, not both")
    if checkpoint:
        return load_checkpoint(checkpoint, config)
    if model_uri:
        if "://" not in model_uri and Path(model_uri).exists():
            return load_checkpoint(model_uri, config)
        return load_registered(model_uri, config)
    return load_default(config)
