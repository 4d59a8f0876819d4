"""Folds over pooled corpora: no speaker is ever split, and every fold holds speakers of every corpus.

The clip lists are the real shared corpora's (CREMA-D 58 actors, RAVDESS 24, EmoDB 8), built from
their manifests and label tables without decoding audio."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from models.labels import CREMA_D_CODES, normalise_label
from train.corpora import Clip
from train.folds import check_speaker_disjoint, make_folds, validation_split


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def pooled(shared_data: Path) -> list[Clip]:
    crema = shared_data / "crema-d" / "flac_manifest.csv"
    ravdess = shared_data / "ravdess-speech" / "labels.csv"
    emodb = shared_data / "emodb" / "labels.csv"
    for table in (crema, ravdess, emodb):
        if not table.is_file():
            pytest.skip(f"{table} is not in the shared data")
    clips = [Clip(Path(r["file"]), CREMA_D_CODES[r["emotion"]], r["actor"], "crema-d") for r in _read(crema)]
    clips += [Clip(Path(r["file"]), normalise_label(r["label"]), f"ravdess-{r['speaker']}", "ravdess", r["sex"])
              for r in _read(ravdess) if normalise_label(r["label"])]
    clips += [Clip(Path(r["file"]), normalise_label(r["emotion"]), r["speaker"].zfill(2), "emodb")
              for r in _read(emodb) if normalise_label(r["emotion"])]
    return clips


@pytest.mark.parametrize("k", [5, 4])
def test_pooled_folds_keep_speakers_whole_and_hold_every_corpus(pooled, k):
    folds = make_folds(pooled, k, seed=0)
    check_speaker_disjoint(folds, pooled)
    owner: dict[str, int] = {}
    for fold in folds:
        test_speakers = {pooled[i].speaker for i in fold.test_idx}
        train_speakers = {pooled[i].speaker for i in fold.train_idx}
        assert not test_speakers & train_speakers
        for speaker in test_speakers:
            assert owner.setdefault(speaker, fold.index) == fold.index
        assert {pooled[i].dataset for i in fold.test_idx} == {"crema-d", "ravdess", "emodb"}
        assert sorted(fold.train_idx + fold.test_idx) == list(range(len(pooled)))
    assert len(owner) == 58 + 24 + 8


def test_pooled_folds_are_each_corpus_split_on_its_own(pooled):
    """A corpus's fold assignment does not depend on which other corpora are pooled with it."""
    alone = [c for c in pooled if c.dataset == "ravdess"]
    by_alone = [set(f.test_speakers) for f in make_folds(alone, 5, seed=0)]
    by_pooled = [{s for s in f.test_speakers if s.startswith("ravdess-")} for f in make_folds(pooled, 5, seed=0)]
    assert by_alone == by_pooled
    sexes = [[next(c.sex for c in alone if c.speaker == s) for s in fold] for fold in by_alone]
    assert all(abs(f.count("male") - f.count("female")) <= 1 for f in sexes)  # RAVDESS folds sex-balanced


def test_pooled_validation_split_takes_speakers_of_every_corpus(pooled):
    fold = make_folds(pooled, 5, seed=0)[0]
    fit, val = validation_split(pooled, fold.train_idx, seed=0, val_fraction=0.2)
    assert {pooled[i].dataset for i in val} == {"crema-d", "ravdess", "emodb"}
    assert not {pooled[i].speaker for i in fit} & {pooled[i].speaker for i in val}
    assert sorted(fit + val) == sorted(fold.train_idx)


def test_a_corpus_with_too_few_speakers_is_refused(pooled):
    from train.corpora import DataError

    few = [c for c in pooled if c.dataset != "emodb" or c.speaker in ("03", "08", "09", "10")]
    with pytest.raises(DataError, match="emodb has 3"):
        make_folds(few, 4, seed=0)
