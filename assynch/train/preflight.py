"""Checks before any training worker starts: each bad input ends as one UserError naming the
input and the fix (docs/TRAINING.md, "Errors")."""

from __future__ import annotations

import logging

from assynch.config import AssynchConfig
from assynch.errors import UserError
from assynch.shards.format import ShardError
from assynch.shards.sets import ShardSets, resolve_shard_sets, shard_entries
from assynch.storage import StorageError, check_writable, describe_storage, filesystem

log = logging.getLogger(__name__)

# Sections that must equal those the shards were made with (the model reads their shapes).
SHARED_SECTIONS = ("time", "video", "audio")


def read_shard_sets(config: AssynchConfig) -> ShardSets:
    """The finished shard sets `train.shards` names, checked to share one contract."""
    value = config.train.shards
    try:
        return resolve_shard_sets(value, config.storage)
    except UserError:
        raise
    except Exception as exc:  # unreachable endpoint, refused credentials, ...
        where = ", ".join(describe_storage(url, config.storage) for url in shard_entries(value))
        raise StorageError(
            f"cannot read the shards at {where}: {type(exc).__name__}: {exc}. Check "
            "train.shards and the storage endpoint and credentials (storage.* or AWS_* "
            "variables)."
        ) from None


def check_split(config: AssynchConfig, sets: ShardSets, split: str, role: str) -> int:
    """The number of samples in `split` over all sets; an error when it has none."""
    samples = sets.samples(split)
    files = sets.files(split, config.storage) if samples else []
    if not samples or not files:
        counts = {
            shard_set.url: {name: info.get("samples", 0)
                            for name, info in shard_set.manifest.get("splits", {}).items()}
            for shard_set in sets.sets
        }
        shown = next(iter(counts.values())) if len(counts) == 1 else counts
        fix = ("set train.val_split=null to train without validation, or preprocess with a "
               "non-zero preprocess.splits.val" if role == "validation" else
               "preprocess more videos or change preprocess.splits")
        raise ShardError(
            f"the {role} split {split!r} of {sets.describe()} is empty (samples per split: "
            f"{shown}); {fix}"
        )
    return samples


def check_time_base(config: AssynchConfig, sets: ShardSets) -> None:
    """The config's time/video/audio sections against the sets' (which agree with each other:
    `resolve_shard_sets` checked that)."""
    made_with = sets.first.manifest.get("config", {})
    ours = config.model_dump(mode="json", include=set(SHARED_SECTIONS))
    differences = [
        f"{section}.{key}={made_with[section].get(key)!r} (config: {value!r})"
        for section in SHARED_SECTIONS if section in made_with
        for key, value in ours[section].items()
        if made_with[section].get(key) != value
    ]
    if differences:
        raise ShardError(
            f"the shards at {sets.describe()} were made with another time base or features "
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


def check_training_inputs(config: AssynchConfig) -> ShardSets:
    """Every check that needs no Ray; returns the finished shard sets to read."""
    train = config.train
    sets = read_shard_sets(config)
    if len(sets.sets) > 1:
        log.info("training on %s: %d train samples", sets.describe(),
                 sets.samples(train.train_split))
    check_time_base(config, sets)
    check_split(config, sets, train.train_split, "training")
    if train.val_split:
        if train.val_split == train.train_split:
            raise UserError(
                f"train.val_split equals train.train_split ({train.val_split!r}); pick another "
                "split or set train.val_split=null"
            )
        check_split(config, sets, train.val_split, "validation")
    check_storage_path(config)
    check_model_sources(config)
    return sets
