"""Calibration: temperature scaling lowers held-out NLL and keeps the arg-max, the "uncertain"
threshold, bundles that store it (and older ones that do not), `train cv` -> `train calibrate`."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from models.calibration import (Calibration, CalibrationError, apply_temperature, brier_score,
                                calibration_measures, expected_calibration_error, fit_calibration,
                                fit_temperature, negative_log_likelihood, uncertain_threshold)
from models.labels import EMOTIONS
from tests.test_train_run import TINY_ARGS, make_subset_csv

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUNDLE = REPO_ROOT / "models" / "default"


def overconfident(n: int, seed: int, sharpness: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of a model that is right ~60% of the time but says so with ~90%: softmax of
    `sharpness` x (noise + 1.5 on the true class)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 6, n)
    logits = rng.normal(0, 1, (n, 6))
    logits[np.arange(n), labels] += 1.5
    logits *= sharpness
    probs = np.exp(logits - logits.max(1, keepdims=True))
    return probs / probs.sum(1, keepdims=True), labels


# ---------------------------------------------------------------- the maths
def test_temperature_lowers_held_out_nll_and_ece_and_keeps_the_argmax():
    fit_p, fit_y = overconfident(2000, seed=1)
    test_p, test_y = overconfident(2000, seed=2)
    temperature = fit_temperature(fit_p, fit_y)
    assert 1.5 < temperature < 4.0                      # overconfident: softened
    calibrated = apply_temperature(test_p, temperature)
    assert negative_log_likelihood(calibrated, test_y) < negative_log_likelihood(test_p, test_y) - 0.1
    assert expected_calibration_error(calibrated, test_y) < 0.04 < expected_calibration_error(test_p, test_y)
    assert brier_score(calibrated, test_y) < brier_score(test_p, test_y)
    assert np.array_equal(calibrated.argmax(1), test_p.argmax(1))
    np.testing.assert_allclose(calibrated.sum(1), 1.0, atol=1e-9)


def test_an_underconfident_model_is_sharpened():
    probs, labels = overconfident(2000, seed=3, sharpness=0.4)
    assert fit_temperature(probs, labels) < 1.0


def test_measures_on_known_cases():
    onehot = np.eye(6)[[0, 1, 2]]
    labels = np.array([0, 1, 2])
    assert brier_score(onehot, labels) == 0 and expected_calibration_error(onehot, labels) == 0
    # always 50% sure, right half the time: calibrated
    p = np.full((4, 6), 0.1)
    p[:, 0] = 0.5
    assert expected_calibration_error(p, np.array([0, 0, 1, 2])) == pytest.approx(0.0)
    # always 50% sure and always wrong: ECE 0.5; Brier 0.25 + 0.01 * 4 + (0.1 - 1)^2
    assert expected_calibration_error(p, np.array([1, 1, 1, 1])) == pytest.approx(0.5)
    assert brier_score(p, np.array([1, 1, 1, 1])) == pytest.approx(0.25 + 0.04 + 0.81)
    assert negative_log_likelihood(p, np.array([0, 0, 0, 0])) == pytest.approx(-np.log(0.5))
    with pytest.raises(CalibrationError):
        calibration_measures(p, np.array([0, 6, 0, 0]))


def test_uncertain_threshold_is_the_lowest_confidence_whose_predictions_reach_the_target():
    # 100 clips, confidences 0.99 down to 0.505: the 60 most confident all right, a third of the rest
    confidence = np.linspace(0.99, 0.505, 100)
    probs = np.zeros((100, 6))
    probs[:, 0] = confidence
    probs[:, 1:] = ((1 - confidence) / 5)[:, None]
    labels = np.where((np.arange(100) < 60) | (np.arange(100) % 3 == 0), 0, 1)
    threshold = uncertain_threshold(probs, labels, 0.80)
    above = probs[:, 0] >= threshold
    assert (probs[:, 0].argmax() == 0) and np.mean(labels[above] == 0) >= 0.80
    lower = probs[:, 0][~above].max()           # one clip more would drop below the target
    assert np.mean(labels[probs[:, 0] >= lower] == 0) < 0.80
    assert uncertain_threshold(probs, np.zeros(100, int), 0.80) == 0.0       # all right: never uncertain
    assert uncertain_threshold(probs, np.ones(100, int), 0.80) is None       # never reaches it


def test_the_stored_field_is_checked_and_absent_means_uncalibrated():
    assert Calibration.from_json(None) is None
    fitted = fit_calibration(*overconfident(500, seed=4), fitted_on="synthetic")
    assert Calibration.from_json(json.loads(json.dumps(fitted.to_json()))).temperature == \
        pytest.approx(fitted.temperature, rel=1e-5)
    for bad in ({"method": "temperature"}, {"temperature": -1.0}, {"temperature": float("nan")},
                {"temperature": 2.0, "uncertain_below": 1.5}, {"temperature": 2.0, "method": "platt"},
                {"temperature": 2.0, "version": 9}, [2.0]):
        with pytest.raises(CalibrationError):
            Calibration.from_json(bad)


# ---------------------------------------------------------------- real models
@pytest.fixture(scope="module")
def emodb_clips(emodb_dir):
    """Real German speech the default (CREMA-D) model never heard: 6 clips per class per speaker, 4 speakers."""
    from models.audio_file import read_mono_16k as load_wave_16k
    from train.corpora.emodb import load as load_emodb

    taken, clips = {}, []
    for clip in load_emodb(emodb_dir).clips:
        key = (clip.speaker, clip.label)
        if clip.speaker in ("03", "08", "09", "10") and taken.get(key, 0) < 6:
            taken[key] = taken.get(key, 0) + 1
            clips.append(clip)
    return clips, [load_wave_16k(c.path) for c in clips]


@pytest.fixture(scope="module")
def default_raw(emodb_clips):
    from models.loader import load_classifier

    clips, waves = emodb_clips
    classifier = load_classifier(str(DEFAULT_BUNDLE), device="cpu")
    probs = np.concatenate([classifier.predict(waves[i:i + 16]) for i in range(0, len(waves), 16)])
    return probs.astype(np.float64), np.array([EMOTIONS.index(c.label) for c in clips])


def test_the_shipped_fast_model_loads_uncalibrated(default_raw):
    from models.calibration import CalibratedClassifier
    from models.loader import load_classifier

    classifier = load_classifier(str(DEFAULT_BUNDLE), device="cpu")
    assert not isinstance(classifier, CalibratedClassifier) and classifier.uncertain_below is None


def test_calibration_fitted_on_two_speakers_lowers_nll_on_two_others(emodb_clips, default_raw):
    clips, _ = emodb_clips
    probs, labels = default_raw
    fit = np.array([c.speaker in ("03", "08") for c in clips])
    calibration = fit_calibration(probs[fit], labels[fit], "EmoDB speakers 03, 08")
    held_out = apply_temperature(probs[~fit], calibration.temperature)
    assert negative_log_likelihood(held_out, labels[~fit]) < negative_log_likelihood(probs[~fit], labels[~fit])
    assert np.array_equal(held_out.argmax(1), probs[~fit].argmax(1))


def test_a_calibrated_bundle_round_trips_through_the_loader(tmp_path, emodb_clips, default_raw):
    from models.bundle import BundleError, copy_bundle, update_bundle_meta
    from models.calibration import CalibratedClassifier
    from models.loader import load_classifier
    from train.calibrate import write_calibration

    _, waves = emodb_clips
    bundle = copy_bundle(DEFAULT_BUNDLE, tmp_path / "calibrated")
    write_calibration(bundle, Calibration(temperature=2.0, uncertain_below=0.45, fitted_on="test"))
    classifier = load_classifier(str(bundle), device="cpu")
    assert isinstance(classifier, CalibratedClassifier) and classifier.uncertain_below == 0.45
    got = classifier.predict(waves[:8])
    np.testing.assert_allclose(got, apply_temperature(default_raw[0][:8], 2.0), atol=2e-5)
    assert np.array_equal(got.argmax(1), default_raw[0][:8].argmax(1))
    assert classifier.checkpoint_hash == load_classifier(str(DEFAULT_BUNDLE), device="cpu").checkpoint_hash
    update_bundle_meta(bundle, lambda meta: meta.__setitem__("calibration", {"temperature": "hot"}))
    with pytest.raises(BundleError, match="temperature"):
        load_classifier(str(bundle), device="cpu")


# ---------------------------------------------------------------- train cv -> train calibrate
def test_cv_writes_oof_probabilities_and_calibrate_stores_them_in_the_run(emodb_dir, tmp_path, capsys):
    from models.calibration import CalibratedClassifier
    from models.loader import load_classifier
    from train.calibrate import OOF_COLUMNS, OOF_FILE, read_oof_predictions
    from train.cli import main

    csv_path = make_subset_csv(emodb_dir, tmp_path / "data", ("11", "13", "14", "16"), 2)
    run = tmp_path / "cv"
    assert main(["cv", "--dataset", "csv", "--data", str(csv_path), *TINY_ARGS, "--epochs", "1",
                 "--folds", "2", "--out", str(run)]) == 0
    with open(run / OOF_FILE, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == OOF_COLUMNS and len(rows) == 48
    folds = json.loads((run / "folds.json").read_text())
    for k, fold in enumerate(folds["folds"]):   # each clip's probabilities come from the fold that held it out
        assert {Path(f).name for f in fold["test_files"]} == {r["file"] for r in rows if r["fold"] == str(k)}
    oof = read_oof_predictions(run / OOF_FILE)
    cv = json.loads((run / "cv_metrics.json").read_text())
    assert np.mean(oof.probs.argmax(1) == oof.labels) == pytest.approx(cv["oof"]["accuracy"], abs=1e-9)

    written = (run / OOF_FILE).read_text(encoding="utf-8")
    (run / OOF_FILE).unlink()       # as for a run from before OOF files: the fold models score their test clips
    assert main(["calibrate", str(run), "--dataset", "csv", "--data", str(csv_path), "--threads", "2"]) == 0
    rescored = read_oof_predictions(run / OOF_FILE)
    order = [rescored.files.index(f) for f in oof.files]
    np.testing.assert_allclose(rescored.probs[order], oof.probs, atol=1e-4)
    assert list(rescored.folds[order]) == list(oof.folds)
    assert (run / OOF_FILE).read_text(encoding="utf-8").count("\n") == written.count("\n")
    assert main(["calibrate", str(run), "--overwrite"]) == 0
    printed = capsys.readouterr().out
    assert "ECE" in printed and "fold0" in printed
    stored = json.loads((run / "ensemble.json").read_text())["calibration"]
    assert stored["method"] == "temperature" and stored["clips"] == 48
    assert stored["nll_after"] <= stored["nll_before"] + 1e-9
    for k in (0, 1):
        fold_cal = json.loads((run / f"fold{k}" / "bundle.json").read_text())["calibration"]
        assert fold_cal["clips"] == int(np.sum(oof.folds == k))
    report = json.loads((run / "calibration.json").read_text())
    assert set(report["models"]) == {".", "fold0", "fold1"}

    ensemble = load_classifier(str(run), device="cpu")
    assert isinstance(ensemble, CalibratedClassifier)
    waves = [np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.05]
    np.testing.assert_allclose(ensemble.predict(waves), apply_temperature(ensemble.inner.predict(waves),
                                                                          stored["temperature"]), atol=1e-5)

    assert main(["calibrate", str(run)]) == 2                    # already calibrated: refused, unchanged
    assert "--overwrite" in capsys.readouterr().err
    assert json.loads((run / "ensemble.json").read_text())["calibration"] == stored
    assert main(["calibrate", str(run), "--overwrite", "--target-accuracy", "0.5"]) == 0
    assert main(["report", str(run)]) == 0
    assert "ECE before" in capsys.readouterr().out


def test_calibrate_refuses_shipped_models_and_runs_without_oof(tmp_path, capsys):
    from train.cli import main

    assert main(["calibrate", str(REPO_ROOT / "models" / "primary")]) == 2
    assert "under models/" in capsys.readouterr().err
    assert main(["calibrate", str(tmp_path)]) == 2
    assert "oof_predictions.csv" in capsys.readouterr().err
    (tmp_path / "oof_predictions.csv").write_text("file,label\nx.wav,anger\n", encoding="utf-8")
    assert main(["calibrate", str(tmp_path)]) == 2
    assert "columns" in capsys.readouterr().err
