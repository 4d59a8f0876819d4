"""Speaker-independent folds: no speaker's voice is ever in both training and test data.

The assignment is a function of the clip list (speaker, label, sex) and the seed only, so every
model trained on the same data with the same seed gets the same folds.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from models.labels import EMOTIONS
from train.corpora import Clip, DataError


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
    """K folds grouped by speaker, stratified by class, reproducible for a seed.

    Several corpora (Clip.dataset): each corpus is split into k speaker-grouped folds on its own and
    fold i is the union of every corpus's fold i, so every fold holds speakers of every corpus.
    One corpus: when every clip's speaker sex is known (Clip.sex, e.g. CREMA-D with
    VideoDemographics.csv) the folds are also sex-balanced: each fold gets floor or ceil(n_sex / k)
    speakers of each sex. Otherwise sklearn's StratifiedGroupKFold (class-stratified only) decides.
    """
    if k < 2:
        raise DataError(f"--folds must be at least 2 (got {k})")
    corpora = sorted({c.dataset for c in clips})
    if len(corpora) > 1:
        return _pooled_folds(clips, corpora, k, seed)
    speakers = sorted({c.speaker for c in clips})
    if len(speakers) < k:
        raise DataError(f"{k} folds need at least {k} speakers; the data has {len(speakers)}")
    if all(c.sex for c in clips):
        owner = _sex_balanced_assignment(clips, k, seed)
        splits = [([i for i, c in enumerate(clips) if owner[c.speaker] != f],
                    [i for i, c in enumerate(clips) if owner[c.speaker] == f]) for f in range(k)]
    else:
        labels = np.array([EMOTIONS.index(c.label) for c in clips])
        groups = np.array([c.speaker for c in clips])
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        splits = list(splitter.split(np.zeros(len(clips)), labels, groups))
    folds = []
    for i, (train_idx, test_idx) in enumerate(splits):
        folds.append(Fold(i, sorted(map(int, train_idx)), sorted(map(int, test_idx)),
                          sorted({clips[j].speaker for j in test_idx})))
    check_speaker_disjoint(folds, clips)
    return folds


def _pooled_folds(clips: list[Clip], corpora: list[str], k: int, seed: int) -> list[Fold]:
    """make_folds on each corpus alone, then fold i = the union of the corpora's fold i."""
    train_idx: list[list[int]] = [[] for _ in range(k)]
    test_idx: list[list[int]] = [[] for _ in range(k)]
    for corpus in corpora:
        members = [i for i, c in enumerate(clips) if c.dataset == corpus]
        n_speakers = len({clips[i].speaker for i in members})
        if n_speakers < k:
            raise DataError(f"{k} folds need at least {k} speakers in every corpus; {corpus} has {n_speakers}")
        for fold in make_folds([clips[i] for i in members], k, seed):
            train_idx[fold.index] += [members[j] for j in fold.train_idx]
            test_idx[fold.index] += [members[j] for j in fold.test_idx]
    folds = [Fold(i, sorted(train_idx[i]), sorted(test_idx[i]), sorted({clips[j].speaker for j in test_idx[i]}))
             for i in range(k)]
    check_speaker_disjoint(folds, clips)
    return folds


def _sex_balanced_assignment(clips: list[Clip], k: int, seed: int) -> dict[str, int]:
    """speaker -> fold. Speakers are dealt one sex at a time (larger group first) in a seeded order;
    each goes to a fold with the fewest speakers of its sex, and among those to the one where adding
    its clips keeps the per-class clip counts most even (least sum of squared class counts)."""
    per_speaker: dict[str, np.ndarray] = {}
    sex_of: dict[str, str] = {}
    for c in clips:
        per_speaker.setdefault(c.speaker, np.zeros(len(EMOTIONS), dtype=np.int64))[EMOTIONS.index(c.label)] += 1
        if sex_of.setdefault(c.speaker, c.sex) != c.sex:
            raise DataError(f"speaker {c.speaker} is listed as both {sex_of[c.speaker]} and {c.sex}")
    by_sex: dict[str, list[str]] = {}
    for spk in sorted(per_speaker):
        by_sex.setdefault(sex_of[spk], []).append(spk)
    rng = np.random.default_rng(seed)
    class_counts = np.zeros((k, len(EMOTIONS)), dtype=np.int64)
    owner: dict[str, int] = {}
    for sex in sorted(by_sex, key=lambda s: (-len(by_sex[s]), s)):
        group = by_sex[sex]
        n_of_sex = np.zeros(k, dtype=np.int64)
        for j in rng.permutation(len(group)):
            spk = group[j]
            open_folds = np.flatnonzero(n_of_sex == n_of_sex.min())
            cost = [int(np.square(class_counts[f] + per_speaker[spk]).sum()) for f in open_folds]
            fold = int(open_folds[int(np.argmin(cost))])
            owner[spk] = fold
            n_of_sex[fold] += 1
            class_counts[fold] += per_speaker[spk]
    return owner


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
    corpora = sorted({clips[j].dataset for j in train_idx})
    if len(corpora) > 1:  # pooled: validation speakers from every corpus, so early stopping weighs them all
        fit: list[int] = []
        val: list[int] = []
        for corpus in corpora:
            part = validation_split(clips, [j for j in train_idx if clips[j].dataset == corpus], seed, val_fraction)
            fit += part[0]
            val += part[1]
        return sorted(fit), sorted(val)
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


def assignment_fingerprint(speaker_fold: dict[str, int]) -> str:
    """Short sha256 of the speaker -> fold map: equal fingerprints mean the same folds."""
    blob = json.dumps(sorted(speaker_fold.items()), separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def folds_record(folds: list[Fold], clips: list[Clip], seed: int) -> dict:
    """What folds.json holds: speaker -> fold, per-fold speakers / sex / class counts, test files."""
    speaker_fold = {clips[j].speaker: f.index for f in folds for j in f.test_idx}
    payload = {"seed": seed, "k": len(folds), "assignment_sha256": assignment_fingerprint(speaker_fold),
               "speaker_fold": dict(sorted(speaker_fold.items())), "folds": []}
    for f in folds:
        test = [clips[j] for j in f.test_idx]
        sexes: dict[str, int] = {}
        for spk in f.test_speakers:
            sex = next(c.sex for c in test if c.speaker == spk) or "unknown"
            sexes[sex] = sexes.get(sex, 0) + 1
        payload["folds"].append({
            "index": f.index, "test_speakers": f.test_speakers, "test_speaker_sex": dict(sorted(sexes.items())),
            "test_class_counts": {e: sum(c.label == e for c in test) for e in EMOTIONS},
            "test_files": [str(c.path) for c in test]})
    return payload


def write_folds_json(path: Path, folds: list[Fold], clips: list[Clip], seed: int) -> None:
    """Record which speaker and clip went to which fold (file paths, not indices) for audits and reruns."""
    Path(path).write_text(json.dumps(folds_record(folds, clips, seed), indent=1))
