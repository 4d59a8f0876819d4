"""Speaker-grouped folds on the real EmoDB labels, and the leak check."""
from __future__ import annotations

import json

import pytest

from models.labels import EMOTIONS
from train.corpora.emodb import load as load_emodb
from train.folds import (Fold, SpeakerLeakError, check_speaker_disjoint, folds_record, make_folds,
                         validation_split, write_folds_json)


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


# ------------------------------------------------------------------ CREMA-D: 58 actors, sex-balanced
@pytest.fixture(scope="module")
def crema_clips(shared_data):
    """Clips of the 58 shared CREMA-D actors from flac_manifest.csv + VideoDemographics.csv (no decoding:
    folds depend only on speaker, label and sex)."""
    import csv
    from pathlib import Path

    from train.corpora import Clip
    from train.corpora.crema_d import parse_crema_name, read_demographics

    folder = shared_data / "crema-d"
    if not (folder / "flac_manifest.csv").is_file():
        pytest.skip(f"CREMA-D flac_manifest.csv not found in {folder}")
    sex = read_demographics([folder])
    with open(folder / "flac_manifest.csv", newline="") as f:
        names = [row["file"] for row in csv.DictReader(f)]
    clips = []
    for name in names:
        parsed = parse_crema_name(name)
        clips.append(Clip(Path(name), parsed.emotion, parsed.actor, "crema-d", sex[parsed.actor]))
    return clips


def test_crema_folds_keep_actors_apart_and_balance_sex(crema_clips):
    folds = make_folds(crema_clips, 5, seed=0)
    owner: dict[str, int] = {}
    for fold in folds:
        for spk in fold.test_speakers:
            assert spk not in owner, f"actor {spk} in folds {owner.get(spk)} and {fold.index}"
            owner[spk] = fold.index
        assert not {crema_clips[i].speaker for i in fold.train_idx} & set(fold.test_speakers)
    assert len(owner) == 58
    record = folds_record(folds, crema_clips, seed=0)
    n_sex = {"male": 30, "female": 28}
    for f in record["folds"]:
        assert len(f["test_speakers"]) in (11, 12)
        for sex, total in n_sex.items():  # floor or ceil of an even share
            assert f["test_speaker_sex"][sex] in (total // 5, -(-total // 5))
        counts = f["test_class_counts"]
        assert min(counts.values()) > 0
        # stratified: every non-neutral class has the same share of the fold (CREMA-D actors are balanced)
        assert max(counts[e] for e in EMOTIONS if e != "neutral") - min(
            counts[e] for e in EMOTIONS if e != "neutral") <= 2


def test_crema_folds_same_seed_same_folds_whatever_the_order(crema_clips):
    import random

    a = folds_record(make_folds(crema_clips, 5, seed=0), crema_clips, 0)
    shuffled = list(crema_clips)
    random.Random(1).shuffle(shuffled)
    b = folds_record(make_folds(shuffled, 5, seed=0), shuffled, 0)
    assert a["speaker_fold"] == b["speaker_fold"]
    assert a["assignment_sha256"] == b["assignment_sha256"]
    c = folds_record(make_folds(crema_clips, 5, seed=1), crema_clips, 1)
    assert c["speaker_fold"] != a["speaker_fold"]


def test_crema_folds_json_records_actor_assignment(crema_clips, tmp_path):
    folds = make_folds(crema_clips, 5, seed=0)
    write_folds_json(tmp_path / "folds.json", folds, crema_clips, seed=0)
    payload = json.loads((tmp_path / "folds.json").read_text())
    assert len(payload["speaker_fold"]) == 58
    for f in payload["folds"]:
        assert sorted(a for a, i in payload["speaker_fold"].items() if i == f["index"]) == f["test_speakers"]
    assert sum(len(f["test_files"]) for f in payload["folds"]) == len(crema_clips)
