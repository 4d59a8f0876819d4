"""Knowledge distillation (--teacher): targets blend the teacher's probabilities, fold k learns only
from a teacher fold that never heard its test speakers, and bundles record the teacher."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.labels import EMOTIONS
from test_train_run import TINY_ARGS, make_subset_csv
from train.cli import build_parser, main, spec_from_args
from models.audio_file import read_mono_16k as load_wave_16k
from train.loop import ClipData, predict_proba, train_model
from train.teacher import blend_targets, teacher_probabilities


def test_blend_is_a_distribution_between_label_and_teacher():
    labels = np.array([0, 5])
    teacher = np.array([[0.1, 0.2, 0.3, 0.4, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.5, 0.5]], np.float32)
    half = blend_targets(labels, teacher, 0.5)
    assert torch.allclose(half.sum(1), torch.ones(2))
    assert half[0, 0] == pytest.approx(0.55) and half[1, 5] == pytest.approx(0.75) and half[1, 4] == pytest.approx(0.25)
    assert torch.equal(blend_targets(labels, None, 0.0), torch.eye(6)[[0, 5]])
    with pytest.raises(ValueError, match="teacher probabilities"):
        blend_targets(labels, None, 0.3)


def test_a_student_follows_its_teacher_not_the_labels(tiny_csv_clips, tmp_path):
    # a teacher that calls every clip sad, at full weight: the student learns sad whatever the labels say
    from models.registry import build_model
    from train.recipes import build_train_config

    data = tiny_csv_clips
    data = ClipData(data.waves, data.labels, teacher=np.tile(np.eye(6, dtype=np.float32)[EMOTIONS.index("sad")],
                                                              (len(data.labels), 1)))
    cfg = build_train_config("conformer-v1", {"epochs": 6, "batch_size": 8, "lr": 3e-3, "teacher_weight": 1.0})
    torch.manual_seed(0)
    model = build_model("conformer-v1", d_model=32, n_blocks=1, n_heads=2, subsampling_channels=8)
    model.fit_normalisation(data.waves, None)
    empty = ClipData([], np.zeros(0, np.int64))
    trained = train_model(model, data, empty, cfg, tmp_path).model
    predicted = predict_proba(trained, data).argmax(1)
    assert (predicted == EMOTIONS.index("sad")).all()
    assert (data.labels != EMOTIONS.index("sad")).mean() > 0.8


@pytest.fixture(scope="module")
def tiny_csv_clips(emodb_dir, tmp_path_factory) -> ClipData:
    csv_path = make_subset_csv(emodb_dir, tmp_path_factory.mktemp("clips"), ("13", "14", "16"), 2)
    lines = csv_path.read_text().splitlines()[1:]
    return ClipData([load_wave_16k(Path(line.split(",")[0])) for line in lines],
                    np.array([EMOTIONS.index(line.split(",")[1]) for line in lines]))


def test_cv_student_learns_from_the_teacher_fold_that_never_heard_its_test_speakers(emodb_dir, tmp_path, capsys):
    csv_path = make_subset_csv(emodb_dir, tmp_path / "data", ("11", "13", "14", "16"), 1)
    base = ["cv", "--dataset", "csv", "--data", str(csv_path), *TINY_ARGS, "--epochs", "1", "--folds", "2"]
    teacher = tmp_path / "teacher"
    assert main([*base, "--out", str(teacher)]) == 0
    # fold k's teacher is the mean of its fold-k members; every member's output is cached per clip
    from models.loader import load_classifier

    waves = [load_wave_16k(Path(line.split(",")[0])) for line in csv_path.read_text().splitlines()[1:5]]
    cache = tmp_path / "cache"
    fold1 = teacher_probabilities(teacher, waves, torch.device("cpu"), ["fold1"], cache)
    np.testing.assert_allclose(fold1, load_classifier(teacher / "fold1", "cpu").predict(waves), atol=1e-5)
    (entries,) = [list(d.iterdir()) for d in (cache / "teacher").iterdir()]
    assert len(entries) == 4 and np.load(entries[0]).shape == (2, len(EMOTIONS))
    stamps = [e.stat().st_mtime_ns for e in entries]
    both = teacher_probabilities(teacher, waves, torch.device("cpu"), None, cache)
    np.testing.assert_allclose(both, load_classifier(teacher, "cpu").predict(waves), atol=1e-5)
    assert [e.stat().st_mtime_ns for e in entries] == stamps  # read from the cache, not recomputed
    student = tmp_path / "student"
    assert main([*base, "--out", str(student), "--teacher", str(teacher), "--teacher-weight", "0.7"]) == 0
    for k in (0, 1):
        training = json.loads((student / f"fold{k}" / "bundle.json").read_text())["training"]
        assert training["teacher"]["folder"] == str(teacher) and training["teacher"]["members"] == [f"fold{k}"]
        assert training["teacher_weight"] == 0.7
    # a teacher whose fold 0 heard one of fold 0's test speakers is refused before anything trains
    record = json.loads((teacher / "folds.json").read_text())
    leaked = record["folds"][0]["test_speakers"][0]
    record["speaker_fold"][leaked] = 1
    (teacher / "folds.json").write_text(json.dumps(record))
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "leaky"), "--teacher", str(teacher)]) == 2
    err = capsys.readouterr().err
    assert f"fold 0 trained on test speaker(s) {leaked} of this fold" in err and "Traceback" not in err
    assert not (tmp_path / "leaky" / "fold0").exists()


@pytest.mark.parametrize("extra, message", [
    (["--teacher-weight", "0.5"], "--teacher-weight needs --teacher"),
    (["--teacher", "{missing}"], "--teacher folder not found"),
    (["--teacher", "{tmp}", "--teacher-weight", "1.5"], "teacher_weight must be in"),
    (["--teacher", "{tmp}", "--model", "egemaps-svm"], "hard labels only"),
])
def test_teacher_options_are_checked(tmp_path, extra, message):
    extra = [a.format(missing=tmp_path / "nope", tmp=tmp_path) for a in extra]
    argv = ["fit", "--dataset", "csv", "--data", str(tmp_path), *TINY_ARGS, "--out", str(tmp_path / "o"), *extra]
    with pytest.raises(ValueError, match=message):
        spec_from_args(build_parser().parse_args(argv))
