"""`python -m train set-level`: input-level normalisation for trained log-mel models.

A log-mel model trained on one corpus hears that corpus's recording level as part of the emotion: a
louder microphone reads as anger, a quieter one as sadness. The front end's `level_dbfs` argument
(models.features.LogMelFrontend) scales every clip to one input level before the log-mel. This
command switches it on for bundles that were trained without it, at the median level of a corpus
(normally the training corpus), or at a given level, or off again. It rewrites only the bundles' JSON
(model args, feature description, and the command under `training.level_set_by`); the weights are
untouched, and every rewritten bundle is loaded once to check it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from models.bundle import BUNDLE_JSON, BundleError, peek_bundle_meta, read_bundle_meta, update_bundle_meta

LOGMEL_FEATURE_TYPES = ("logmel", "logmel+functionals")


def median_level_db(waves: Sequence[np.ndarray], batch_size: int = 64) -> float:
    """Median over clips of models.features.active_level_db (16 kHz float32 mono arrays), dB re full scale."""
    import torch

    from models.features import LogMelConfig, active_level_db, pad_batch

    if len(waves) == 0:
        raise ValueError("no clips to measure the input level of")
    config = LogMelConfig()
    levels: list[np.ndarray] = []
    for start in range(0, len(waves), batch_size):
        chunk = [w if len(w) >= config.win_samples else np.pad(w, (0, config.win_samples - len(w)))
                 for w in waves[start:start + batch_size]]
        wave, lengths = pad_batch(chunk)
        levels.append(active_level_db(wave, lengths, config).numpy())
    return float(np.median(np.concatenate(levels)))


def level_bundles(folder: Path) -> list[Path]:
    """The bundle JSON files under `folder` (a bundle, an ensemble or a cv run folder), each read and
    checked (models.bundle.read_bundle_meta) to describe a log-mel model; BundleError (one line) otherwise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BundleError(f"bundle folder not found: {folder}")
    found = sorted(folder.rglob(BUNDLE_JSON))
    if not found:
        raise BundleError(f"{folder} holds no {BUNDLE_JSON}")
    for path in found:
        feature = read_bundle_meta(path.parent).get("feature") or {}
        if feature.get("type") not in LOGMEL_FEATURE_TYPES:
            raise BundleError(f"{path}: feature type {feature.get('type')!r} has no log-mel front end; "
                              f"set-level needs {' or '.join(LOGMEL_FEATURE_TYPES)}")
    return found


def set_level(folder: Path, level_dbfs: float | None, command: str) -> list[Path]:
    """Write `level_dbfs` (None = off) into every log-mel bundle under `folder`. Every changed bundle
    is first loaded from a scratch copy (its new JSON beside links to its weights); only when all of
    them load is any bundle JSON rewritten (each atomically). Returns the rewritten paths."""
    from models.arch.blocks import LogMelArgs

    LogMelArgs(level_dbfs=level_dbfs)  # the same range check a training run gets
    paths = level_bundles(folder)

    def change(meta: dict) -> None:
        meta["model"].setdefault("args", {})["level_dbfs"] = level_dbfs
        meta["feature"]["level_dbfs"] = level_dbfs
        meta.setdefault("training", {})["level_set_by"] = command

    for path in paths:
        _check_changed(path, change)
    for path in paths:
        update_bundle_meta(path.parent, change)
    return paths


def _check_changed(path: Path, change) -> None:
    """Load the bundle of `path` as `change` would leave it, from a scratch folder; BundleError if it fails."""
    import json
    import os
    import tempfile

    from models.loader import load_classifier

    doc = peek_bundle_meta(path.parent)
    if not isinstance(doc.get("training", {}), dict) or not isinstance(doc.get("feature"), dict):
        raise BundleError(f"{path}: \"training\" and \"feature\" must be objects")
    change(doc)
    with tempfile.TemporaryDirectory(prefix="ved-set-level-") as scratch:
        for entry in path.parent.iterdir():
            if entry.name != BUNDLE_JSON and entry.is_file():
                os.symlink(entry.resolve(), Path(scratch) / entry.name)
        (Path(scratch) / BUNDLE_JSON).write_text(json.dumps(doc), encoding="utf-8")
        try:
            load_classifier(scratch, "cpu")
        except BundleError as err:
            raise BundleError(f"{path}: with the new level the bundle does not load ({err}); nothing written") from None
