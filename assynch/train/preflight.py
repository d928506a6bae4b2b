"""Checks before any training worker starts: each bad input ends as one UserError naming the
input and the fix (docs/TRAINING.md, "Errors")."""

from __future__ import annotations

import logging
from typing import Any

from assynch.config import AssynchConfig
from assynch.errors import UserError
from assynch.shards.format import ShardError
from assynch.shards.reader import list_shards, read_manifest
from assynch.storage import StorageError, check_writable, describe_storage, filesystem

log = logging.getLogger(__name__)

# Sections that must equal those the shards were made with (the model reads their shapes).
SHARED_SECTIONS = ("time", "video", "audio")


def read_shard_manifest(config: AssynchConfig) -> dict[str, Any]:
    url = config.train.shards
    try:
        return read_manifest(url, config.storage)
    except UserError:
        raise
    except Exception as exc:  # unreachable endpoint, refused credentials, ...
        raise StorageError(
            f"cannot read the shards at {describe_storage(url, config.storage)}: "
            f"{type(exc).__name__}: {exc}. Check train.shards and the storage endpoint and "
            "credentials (storage.* or AWS_* variables)."
        ) from None


def check_split(config: AssynchConfig, manifest: dict[str, Any], split: str, role: str) -> int:
    """The number of samples in `split`; an error when it has none."""
    url = config.train.shards
    samples = int(manifest.get("splits", {}).get(split, {}).get("samples", 0))
    files = list_shards(url, split, config.storage) if samples else []
    if not samples or not files:
        counts = {name: info.get("samples", 0) for name, info in manifest.get("splits", {}).items()}
        fix = ("set train.val_split=null to train without validation, or preprocess with a "
               "non-zero preprocess.splits.val" if role == "validation" else
               "preprocess more videos or change preprocess.splits")
        raise ShardError(
            f"the {role} split {split!r} of {url} is empty (samples per split: {counts}); {fix}"
        )
    return samples


def check_time_base(config: AssynchConfig, manifest: dict[str, Any]) -> None:
    made_with = manifest.get("config", {})
    ours = config.model_dump(mode="json", include=set(SHARED_SECTIONS))
    differences = [
        f"{section}.{key}={made_with[section].get(key)!r} (config: {value!r})"
        for section in SHARED_SECTIONS if section in made_with
        for key, value in ours[section].items()
        if made_with[section].get(key) != value
    ]
    if differences:
        raise ShardError(
            f"the shards at {config.train.shards} were made with another time base or features "
            f"than this config: {', '.join(differences)}. Train with the config the shards were "
            "made with (its time/video/audio sections), or preprocess again with this one."
        )


def check_storage_path(config: AssynchConfig) -> None:
    url = config.train.storage_path
    fs, path = filesystem(url, config.storage)
    check_writable(fs, path, url)


def check_model_sources(config: AssynchConfig) -> None:
    """Build the model once when it loads weights (pretrained Synchformer file, init_from), so a
    missing file or keys that do not fit fail here, not in every worker."""
    if not (config.model.pretrained_checkpoint or config.model.init_from):
        return
    from assynch.train.loop import build_training_model

    try:
        build_training_model(config)
    except UserError:
        raise
    except FileNotFoundError as exc:
        raise UserError(
            f"model.pretrained_checkpoint not found ({exc}); pass a local file (nothing is "
            "downloaded) or leave it empty"
        ) from None
    except (ValueError, KeyError, RuntimeError) as exc:
        source = config.model.pretrained_checkpoint or config.model.init_from
        raise UserError(
            f"model.pretrained_checkpoint {source!r} does not fit the {config.model.preset} "
            f"{config.model.kind} model: {str(exc).splitlines()[0]}. Use a checkpoint of the same "
            "sizes (model.* and video.crop) or leave model.pretrained_checkpoint empty."
        ) from None


def check_training_inputs(config: AssynchConfig) -> dict[str, Any]:
    """Every check that needs no Ray; returns the shards' manifest."""
    train = config.train
    manifest = read_shard_manifest(config)
    check_time_base(config, manifest)
    check_split(config, manifest, train.train_split, "training")
    if train.val_split:
        if train.val_split == train.train_split:
            raise UserError(
                f"train.val_split equals train.train_split ({train.val_split!r}); pick another "
                "split or set train.val_split=null"
            )
        check_split(config, manifest, train.val_split, "validation")
    check_storage_path(config)
    check_model_sources(config)
    return manifest
