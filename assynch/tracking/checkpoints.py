"""Find the model file behind a checkpoint path: a `model.pt` written by
`assynch.models.save_model_checkpoint`, or a training checkpoint folder holding one; local or
`s3://` (downloaded to a temporary folder)."""

from __future__ import annotations

from pathlib import Path

from assynch.config import StorageConfig
from assynch.errors import UserError
from assynch.storage import StorageError, filesystem, is_remote, join

MODEL_FILE_NAME = "model.pt"
_ACCEPTED = (
    "pass models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/model, a model.pt written by "
    "assynch.models.save_model_checkpoint, or a training checkpoint folder holding one"
)


def _missing(path: str) -> UserError:
    return UserError(f"model checkpoint not found: {path}; {_ACCEPTED}")


def local_checkpoint_file(path: str, scratch: Path, storage: StorageConfig | None = None) -> Path:
    """The local file of the model checkpoint at `path`; remote files are copied into
    `scratch`. UserError naming `path` when there is none."""
    if not is_remote(path):
        local = Path(path.removeprefix("file://")).expanduser()
        if local.is_dir():
            local = local / MODEL_FILE_NAME
        if not local.is_file():
            raise _missing(path)
        return local.resolve()
    try:
        fs, remote = filesystem(path, storage or StorageConfig())
        if fs.isdir(remote):
            remote = join(remote, MODEL_FILE_NAME)
        if not fs.isfile(remote):
            raise _missing(path)
        target = scratch / MODEL_FILE_NAME
        fs.get(remote, str(target))
    except (StorageError, UserError):
        raise
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read model checkpoint {path}: {exc}; check the URL and the "
                        "storage settings (endpoint, credentials)") from None
    return target
