"""Speaker-independent folds: no speaker's voice is ever in both training and test data."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from models.labels import EMOTIONS
from train.datasets import Clip, DataError


class SpeakerLeakError(RuntimeError):
    """A speaker appears in more than one fold (or in both train and test)."""


@dataclass(frozen=True)
class Fold:
    """Indices into the clip list. test_speakers are the held-out voices of this fold."""

    index: int
    train_idx: list[int]
    test_idx: list[int]
    test_speakers: list[str]


def make_folds(clips: list[Clip], k: int, seed: int) -> list[Fold]:
    """Stratified (by class) K folds grouped by speaker, reproducible for a seed."""
    speakers = sorted({c.speaker for c in clips})
    if k < 2:
        raise DataError(f"--folds must be at least 2 (got {k})")
    if len(speakers) < k:
        raise DataError(f"{k} folds need at least {k} speakers; the data has {len(speakers)}")
    labels = np.array([EMOTIONS.index(c.label) for c in clips])
    groups = np.array([c.speaker for c in clips])
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = []
    for i, (train_idx, test_idx) in enumerate(splitter.split(np.zeros(len(clips)), labels, groups)):
        folds.append(Fold(i, sorted(map(int, train_idx)), sorted(map(int, test_idx)),
                          sorted({clips[j].speaker for j in test_idx})))
    check_speaker_disjoint(folds, clips)
    return folds


def check_speaker_disjoint(folds: list[Fold], clips: list[Clip]) -> None:
    """Raise SpeakerLeakError if a speaker is in two test folds or in both halves of one fold."""
    owner: dict[str, int] = {}
    for fold in folds:
        test_speakers = {clips[j].speaker for j in fold.test_idx}
        train_speakers = {clips[j].speaker for j in fold.train_idx}
        both = test_speakers & train_speakers
        if both:
            raise SpeakerLeakError(f"fold {fold.index}: speaker(s) {sorted(both)} in both train and test")
        for spk in test_speakers:
            if spk in owner and owner[spk] != fold.index:
                raise SpeakerLeakError(f"speaker {spk} is in folds {owner[spk]} and {fold.index}")
            owner[spk] = fold.index


def validation_split(clips: list[Clip], train_idx: list[int], seed: int,
                     val_fraction: float = 0.2) -> tuple[list[int], list[int]]:
    """Split training indices into (fit, validation), grouped by speaker and stratified by class.

    Roughly `val_fraction` of the speakers (at least one) go to validation. val_fraction 0 means no
    validation split: every training index is in fit and validation is empty.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if val_fraction == 0:
        return sorted(train_idx), []
    subset = [clips[j] for j in train_idx]
    n_speakers = len({c.speaker for c in subset})
    if n_speakers < 2:
        raise DataError("a speaker-grouped validation split needs at least 2 speakers in the training data")
    n_splits = int(min(n_speakers, max(2, round(1.0 / val_fraction))))
    labels = np.array([EMOTIONS.index(c.label) for c in subset])
    groups = np.array([c.speaker for c in subset])
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    fit_local, val_local = next(splitter.split(np.zeros(len(subset)), labels, groups))
    fit = sorted(train_idx[j] for j in fit_local)
    val = sorted(train_idx[j] for j in val_local)
    if {clips[j].speaker for j in fit} & {clips[j].speaker for j in val}:
        raise SpeakerLeakError("validation split shares a speaker with the training split")
    return fit, val


def write_folds_json(path: Path, folds: list[Fold], clips: list[Clip], seed: int) -> None:
    """Record which clip went to which fold (file paths, not indices) for audits and reruns."""
    payload = {
        "seed": seed,
        "k": len(folds),
        "folds": [
            {**{k: v for k, v in asdict(f).items() if k not in ("train_idx", "test_idx")},
             "test_files": [str(clips[j].path) for j in f.test_idx]}
            for f in folds
        ],
    }
    Path(path).write_text(json.dumps(payload, indent=1))
