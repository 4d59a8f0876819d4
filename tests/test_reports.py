"""`python -m train report`: full and partial CV rows, out-of-fold scores, fold ids, notes kept."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from train.cli import main
from train.evaluate import score
from train.reports import REPORT_BEGIN, REPORT_END, comparison_table

K = 5


def _fake_cv_run(root: Path, model: str, folds_done: list[int], accuracy: float, seed: int,
                 folds_id: str = "abc123") -> tuple[np.ndarray, np.ndarray]:
    """A cv run folder as run_cv writes it (folds.json + fold{i}/metrics.json), predictions drawn at
    random with about `accuracy` correct. Returns the concatenated (true, predicted) of finished folds."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    (root / "folds.json").write_text(json.dumps({"seed": 0, "k": K, "assignment_sha256": folds_id}))
    trues, preds = [], []
    for i in folds_done:
        true = rng.integers(0, 6, size=120 + 10 * i)
        pred = np.where(rng.random(true.size) < accuracy, true, rng.integers(0, 6, size=true.size))
        trues.append(true)
        preds.append(pred)
        fold = root / f"fold{i}"
        fold.mkdir()
        history = [{"epoch": e} for e in range(10 + i)]
        (fold / "metrics.json").write_text(json.dumps({
            "model": model, "fold": i, "eval": score(true, pred).to_dict(), "history": history,
            "best_epoch": 4 + i, "wall_time_s": 60.0 * (i + 1), "test_predictions": pred.tolist()}))
    return np.concatenate(trues), np.concatenate(preds)


def test_partial_run_is_marked_and_never_a_full_row(tmp_path):
    _fake_cv_run(tmp_path / "svm", "egemaps-svm", list(range(K)), 0.5, 0)
    true, pred = _fake_cv_run(tmp_path / "conf", "conformer-v3.1", [0, 2], 0.8, 1)
    table = comparison_table([tmp_path / "conf", tmp_path / "svm"])
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[1:-1]]
            for line in table.splitlines() if line.startswith("| `")}
    conf, svm = rows["`conformer-v3.1` (conf)"], rows["`egemaps-svm` (svm)"]
    assert conf[1] == "**2 of 5 (partial)**" and svm[1] == "5"
    assert conf[3] == "n/a" and svm[3] == "reference"  # a partial row gets no delta against the reference
    # full rows come first even when a partial row scores higher
    assert table.index("`egemaps-svm`") < table.index("`conformer-v3.1`")
    oof = score(true, pred)  # out-of-fold over the finished folds = scoring the concatenated predictions
    assert conf[4] == f"{oof.macro_f1:.3f}" and conf[5] == f"{oof.accuracy:.3f}" and conf[6] == f"{oof.uar:.3f}"
    assert conf[7] == f"{oof.per_class['anger'].f1:.2f}"
    assert conf[-2] == "10 (5) 12 (7)"  # epochs run (best epoch) for folds 0 and 2
    assert conf[-1] == "4.0 min"  # 60 s + 180 s
    assert "not a full cross-validation" in table
    assert "same fold assignment (id abc123)" in table


def test_rows_name_where_a_run_left_its_recipe(tmp_path):
    from dataclasses import asdict

    from train.recipes import augment_preset

    _fake_cv_run(tmp_path / "plain", "whisper-ultimate", list(range(K)), 0.6, 0)
    _fake_cv_run(tmp_path / "robust", "whisper-ultimate", list(range(K)), 0.6, 1)
    for name, training in (("plain", {"model": "whisper-ultimate", "epochs": 30, "patience_epochs": 8,
                                      "augment": asdict(augment_preset("seed")), "cached_augment_copies": 0,
                                      "model_args": {"encoder": "base"}}),
                           ("robust", {"model": "whisper-ultimate", "epochs": 20, "patience_epochs": 5,
                                       "augment": json.loads(json.dumps(asdict(augment_preset("microphone")))),
                                       "cached_augment_copies": 1, "consistency_weight": 4.0,
                                       "model_args": {"encoder": "base"},
                                       "teacher": {"folder": "models/primary", "name": "x", "members": ["fold0"]},
                                       "teacher_weight": 0.5})):
        (tmp_path / name / "fold0" / "bundle.json").write_text(json.dumps({"training": training}))
    table = comparison_table([tmp_path / "plain", tmp_path / "robust"])
    assert "`whisper-ultimate` encoder=base (plain)" in table
    # a collected run's cv_metrics.json records the teacher only in its command
    _fake_cv_run(tmp_path / "collected", "whisper-ultimate", list(range(K)), 0.6, 2)
    (tmp_path / "collected" / "fold0" / "bundle.json").write_text(json.dumps({"training": {
        "model": "whisper-ultimate", "teacher_weight": 0.3, "model_args": {},
        "command": "python -m train cv --model whisper-ultimate --teacher runs/big --teacher-weight 0.3"}}))
    assert "`whisper-ultimate` teacher=big teacher_weight=0.3 (collected)" in comparison_table([tmp_path / "collected"])
    assert ("`whisper-ultimate` encoder=base epochs=20 patience=5 augment=microphone cached_augment_copies=1 "
            "consistency_weight=4.0 teacher=primary teacher_weight=0.5 (robust)") in table


def test_different_fold_assignments_are_called_out(tmp_path):
    _fake_cv_run(tmp_path / "a", "egemaps-svm", list(range(K)), 0.5, 0, folds_id="aaa")
    _fake_cv_run(tmp_path / "b", "cnn", list(range(K)), 0.5, 1, folds_id="bbb")
    table = comparison_table([tmp_path / "a", tmp_path / "b"])
    assert "DIFFERENT fold assignments" in table and "aaa" in table and "bbb" in table


def test_report_out_keeps_notes_around_the_markers(tmp_path, capsys):
    _fake_cv_run(tmp_path / "svm", "egemaps-svm", list(range(K)), 0.5, 0)
    doc = tmp_path / "crema-d.md"
    doc.write_text(f"# Title\n\nnotes before\n\n{REPORT_BEGIN}\nold table\n{REPORT_END}\n\nnotes after\n")
    assert main(["report", str(tmp_path / "svm"), "--out", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("# Title\n\nnotes before\n") and text.rstrip().endswith("notes after")
    assert "old table" not in text and "`egemaps-svm` (svm)" in text
    assert text.count(REPORT_BEGIN) == 1 and text.count(REPORT_END) == 1


def test_folder_without_results_is_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


@pytest.mark.parametrize("done", [[0], [1, 3, 4]])
def test_fold_count_cell(tmp_path, done):
    _fake_cv_run(tmp_path / "r", "cnn", done, 0.6, 2)
    row = next(line for line in comparison_table([tmp_path / "r"]).splitlines() if line.startswith("| `"))
    assert f"{len(done)} of 5 (partial)" in row
    assert ("(one fold, no spread)" in row) == (len(done) == 1)  # a single fold has no ± to show
