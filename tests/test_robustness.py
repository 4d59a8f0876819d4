"""`python -m train robustness`: fold bundles re-scored on their own test clips, clean and corrupted."""
from __future__ import annotations

import json
import shutil

import pytest

from tests.test_train_run import TINY_ARGS, make_subset_csv
from train.cli import main


@pytest.fixture(scope="module")
def cv_run(emodb_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("robust")
    csv_path = make_subset_csv(emodb_dir, root / "data", ("11", "13", "14", "16"), 2)
    out = root / "cv"
    assert main(["cv", "--dataset", "csv", "--data", str(csv_path), *TINY_ARGS, "--epochs", "1",
                 "--folds", "2", "--out", str(out)]) == 0
    return csv_path, out


def test_clean_scores_reproduce_the_cv_and_corruption_is_recorded(cv_run, capsys):
    csv_path, out = cv_run
    argv = ["robustness", str(out), "--dataset", "csv", "--data", str(csv_path), "--snr-db", "0",
            "--rt60-s", "0.9", "--threads", "2", "--overwrite"]
    assert main(argv) == 0
    payload = json.loads((out / "robustness.json").read_text())
    cv = json.loads((out / "cv_metrics.json").read_text())
    # the fold bundles, reloaded, give exactly the test predictions the CV recorded
    assert payload["clean"]["summary"]["macro_f1"]["values"] == pytest.approx(cv["summary"]["macro_f1"]["values"])
    assert payload["clean"]["oof"]["confusion"] == cv["oof"]["confusion"]
    assert payload["clips"] == cv["oof"]["n"]
    assert payload["corruption"]["snr_db"] == 0 and payload["corruption"]["rt60_s"] == 0.9
    assert payload["macro_f1_drop"] == pytest.approx(
        payload["clean"]["summary"]["macro_f1"]["mean"] - payload["corrupted"]["summary"]["macro_f1"]["mean"])
    assert "drop" in capsys.readouterr().out
    first = (out / "robustness.json").read_text()
    assert main(argv) == 0
    assert (out / "robustness.json").read_text() == first  # the corruption is seeded per clip


def test_unfinished_run_and_wrong_data_are_one_line_errors(cv_run, tmp_path, capsys, emodb_dir):
    csv_path, out = cv_run
    partial = tmp_path / "partial"
    shutil.copytree(out, partial)
    shutil.rmtree(partial / "fold1")
    assert main(["robustness", str(partial), "--dataset", "csv", "--data", str(csv_path), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fold(s) [1] have no bundle" in err[0] and "--partial" in err[0]
    other = make_subset_csv(emodb_dir, tmp_path / "other", ("03",), 2)
    assert main(["robustness", str(out), "--dataset", "csv", "--data", str(other), "--overwrite"]) == 2
    assert "not in the data" in capsys.readouterr().err
    assert main(["robustness", str(tmp_path), "--dataset", "csv", "--data", str(csv_path), "--overwrite"]) == 2
    assert "no folds.json" in capsys.readouterr().err


def test_partial_scores_only_the_finished_folds_and_says_so(cv_run, tmp_path, capsys):
    csv_path, out = cv_run
    data = ["--dataset", "csv", "--data", str(csv_path), "--threads", "2", "--overwrite"]
    assert main(["robustness", str(out), *data]) == 0
    whole = json.loads((out / "robustness.json").read_text())
    partial = tmp_path / "partial"
    shutil.copytree(out, partial)
    shutil.rmtree(partial / "fold0")
    assert main(["robustness", str(partial), *data, "--partial"]) == 0
    payload = json.loads((partial / "robustness.json").read_text())
    assert payload["folds_scored"] == [1] and payload["folds_total"] == 2
    assert "1 of 2 folds (partial: folds [1])" in capsys.readouterr().out
    n_fold1 = len(json.loads((out / "folds.json").read_text())["folds"][1]["test_files"])
    assert payload["clips"] == n_fold1 < whole["clips"]
    for variant in ("clean", "corrupted"):  # fold 1 scores exactly as in the whole run
        assert payload[variant]["summary"]["macro_f1"]["values"] == pytest.approx(
            whole[variant]["summary"]["macro_f1"]["values"][1:])
    shutil.rmtree(partial / "fold1")
    assert main(["robustness", str(partial), *data, "--partial"]) == 2
    assert "fold(s) [0, 1] have no bundle" in capsys.readouterr().err


def test_gains_are_scored_and_a_levelled_run_hears_them_alike(cv_run, tmp_path, capsys):
    csv_path, out = cv_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    data = ["--dataset", "csv", "--data", str(csv_path), "--threads", "2", "--overwrite"]
    assert main(["robustness", str(run), *data, "--gain-db", "0", "-18", "-6"]) == 0
    payload = json.loads((run / "robustness.json").read_text())
    unity, quiet, _ = payload["gain"]
    assert [g["gain_db"] for g in payload["gain"]] == [0, -18, -6]
    assert unity["oof"]["confusion"] == payload["clean"]["oof"]["confusion"] and unity["macro_f1_drop"] == 0
    assert quiet["oof"]["confusion"] != payload["clean"]["oof"]["confusion"]   # 18 dB quieter is heard
    assert "gain -18 dB: macro-F1" in capsys.readouterr().out
    assert main(["set-level", str(run), "--level-dbfs", "-25"]) == 0
    assert main(["robustness", str(run), *data, "--gain-db", "-18", "-6"]) == 0
    levelled = json.loads((run / "robustness.json").read_text())
    for gain in levelled["gain"]:
        assert gain["oof"]["confusion"] == levelled["clean"]["oof"]["confusion"]
