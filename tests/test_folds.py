"""Speaker-grouped folds on the real EmoDB labels, and the leak check."""
from __future__ import annotations

import json

import pytest

from models.labels import EMOTIONS
from train.datasets import load_emodb
from train.folds import (Fold, SpeakerLeakError, check_speaker_disjoint, make_folds, validation_split,
                         write_folds_json)


@pytest.fixture(scope="module")
def emodb_clips(emodb_dir):
    return load_emodb(emodb_dir).clips


@pytest.mark.parametrize("k", [4, 2])
def test_each_speaker_in_one_fold_and_every_class_in_each(emodb_clips, k):
    folds = make_folds(emodb_clips, k, seed=0)
    assert len(folds) == k
    seen: dict[str, int] = {}
    for fold in folds:
        for i in fold.test_idx:
            spk = emodb_clips[i].speaker
            assert seen.setdefault(spk, fold.index) == fold.index
        assert not {emodb_clips[i].speaker for i in fold.train_idx} & set(fold.test_speakers)
        assert {emodb_clips[i].label for i in fold.test_idx} == set(EMOTIONS)
        assert sorted(fold.train_idx + fold.test_idx) == list(range(len(emodb_clips)))
    assert len(seen) == 8


def test_folds_are_reproducible(emodb_clips):
    a = make_folds(emodb_clips, 4, seed=3)
    b = make_folds(emodb_clips, 4, seed=3)
    assert [f.test_speakers for f in a] == [f.test_speakers for f in b]


def test_validation_split_is_speaker_grouped(emodb_clips):
    fold = make_folds(emodb_clips, 4, seed=0)[0]
    fit, val = validation_split(emodb_clips, fold.train_idx, seed=0, val_fraction=0.2)
    assert sorted(fit + val) == fold.train_idx
    assert val and fit
    assert not {emodb_clips[i].speaker for i in fit} & {emodb_clips[i].speaker for i in val}


def test_validation_fraction_zero_puts_every_training_clip_in_fit(emodb_clips):
    fold = make_folds(emodb_clips, 4, seed=0)[0]
    fit, val = validation_split(emodb_clips, fold.train_idx, seed=0, val_fraction=0.0)
    assert fit == fold.train_idx and val == []


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_validation_fraction_outside_range_is_rejected(emodb_clips, fraction):
    fold = make_folds(emodb_clips, 4, seed=0)[0]
    with pytest.raises(ValueError, match="val_fraction"):
        validation_split(emodb_clips, fold.train_idx, seed=0, val_fraction=fraction)


def test_leak_check_raises(emodb_clips):
    folds = make_folds(emodb_clips, 4, seed=0)
    moved = folds[1].test_idx[:1]
    bad = [Fold(0, folds[0].train_idx, folds[0].test_idx + moved, folds[0].test_speakers), *folds[1:]]
    with pytest.raises(SpeakerLeakError):
        check_speaker_disjoint(bad, emodb_clips)


def test_folds_json(emodb_clips, tmp_path):
    folds = make_folds(emodb_clips, 4, seed=0)
    write_folds_json(tmp_path / "folds.json", folds, emodb_clips, seed=0)
    payload = json.loads((tmp_path / "folds.json").read_text())
    assert payload["k"] == 4
    assert sum(len(f["test_files"]) for f in payload["folds"]) == len(emodb_clips)
