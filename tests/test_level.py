"""`python -m train set-level`: input-level normalisation switched on for trained log-mel bundles
(a cv run's fold bundles included), measured on real clips, refused for other front ends."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from models.bundle import save_bundle
from models.loader import load_classifier
from models.registry import build_model
from train.cli import main as train_main
from train.level import median_level_db


@pytest.fixture
def cv_run(tmp_path) -> Path:
    """A cv-run-shaped folder: two fold bundles of a small Conformer (the same random weights)."""
    torch.manual_seed(0)
    model = build_model("conformer-v1", n_blocks=1, d_model=32, n_heads=2).eval()
    for fold in (0, 1):
        save_bundle(tmp_path / "run" / f"fold{fold}", model, "conformer-v1", {"fold": fold})
    return tmp_path / "run"


def _probs_at_gains(folder: Path, clip: np.ndarray) -> list[np.ndarray]:
    classifier = load_classifier(folder, "cpu")
    return [classifier.predict([clip * 10 ** (db / 20)])[0] for db in (-12, 0, 12)]


def test_set_level_makes_fold_bundles_gain_invariant_and_off_undoes_it(cv_run, capsys):
    clip = (np.random.default_rng(1).standard_normal(20_000) * 0.03).astype(np.float32)
    before = _probs_at_gains(cv_run / "fold0", clip)
    assert not np.allclose(before[0], before[2], atol=1e-3)
    assert train_main(["set-level", str(cv_run), "--level-dbfs", "-28.5"]) == 0
    assert "-28.5 dB re full scale in 2 bundle(s)" in capsys.readouterr().out
    for fold in (0, 1):
        meta = json.loads((cv_run / f"fold{fold}" / "bundle.json").read_text())
        assert meta["model"]["args"]["level_dbfs"] == -28.5 and meta["feature"]["level_dbfs"] == -28.5
        assert meta["training"]["level_set_by"].startswith("python -m train set-level")
        assert meta["fold"] == fold   # the rest of the description is kept
        after = _probs_at_gains(cv_run / f"fold{fold}", clip)
        np.testing.assert_allclose(after[0], after[2], atol=1e-4)
        np.testing.assert_allclose(after[0], after[1], atol=1e-4)
    assert train_main(["set-level", str(cv_run), "--level-dbfs", "off"]) == 0
    np.testing.assert_allclose(_probs_at_gains(cv_run / "fold0", clip), before, atol=1e-5)


def test_other_front_ends_and_bad_values_are_one_line_errors_and_write_nothing(cv_run, tmp_path, capsys):
    svm = build_model("egemaps-svm").fit(np.random.default_rng(0).standard_normal((12, 88)), np.arange(12) % 6)
    save_bundle(cv_run / "fold2", svm, "egemaps-svm", {"fold": 2})
    untouched = (cv_run / "fold0" / "bundle.json").read_text()
    assert train_main(["set-level", str(cv_run), "--level-dbfs", "-30"]) == 2
    assert "has no log-mel front end" in capsys.readouterr().err
    shutil.rmtree(cv_run / "fold2")
    for bad, message in ((["--level-dbfs", "loud"], "must be a number or 'off'"),
                         (["--level-dbfs", "6"], "level_dbfs must be between -80 and 0"),
                         ([], "give --level-dbfs DB (or off), or --data and --dataset"),
                         (["--level-dbfs", "-30", "--dataset", "emodb", "--data", str(tmp_path)], "not both")):
        assert train_main(["set-level", str(cv_run), *bad]) == 2
        err = capsys.readouterr().err
        assert message in err and err.strip().count("\n") == 0
    assert (cv_run / "fold0" / "bundle.json").read_text() == untouched
    assert train_main(["set-level", str(tmp_path / "nowhere"), "--level-dbfs", "-30"]) == 2


def test_the_measured_level_is_the_median_over_real_clips(emodb_dir, cv_run, capsys):
    from models.features import LogMelConfig, active_level_db, pad_batch
    from models.audio_file import read_mono_16k

    waves = [read_mono_16k(path) for path in sorted(emodb_dir.rglob("*.wav"))[:5]]
    assert len(waves) == 5
    levels = [active_level_db(*pad_batch([w]), LogMelConfig()).item() for w in waves]
    assert median_level_db(waves, batch_size=2) == pytest.approx(float(np.median(levels)), abs=1e-4)
    assert -60 < median_level_db(waves) < -5   # real speech, not silence or clipping
    sine = [np.sin(np.arange(16_000, dtype=np.float32) / 7) * a for a in (0.01, 0.1, 1.0)]
    assert median_level_db(sine) == pytest.approx(-23.01, abs=0.05)
    assert train_main(["set-level", str(cv_run), "--dataset", "emodb", "--data", str(emodb_dir), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    measured = float(out.split("median input level of the clips: ")[1].split(" dB")[0])
    assert json.loads((cv_run / "fold1" / "bundle.json").read_text())["feature"]["level_dbfs"] == measured
    assert -60 < measured < -5
