"""openSMILE feature sets beyond eGeMAPS: ComParE 2016 extraction and caching, the
compare-logreg classical model, and doublestream-v4 with a ComParE functionals branch."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from models.bundle import save_bundle
from models.loader import load_bundle_classifier
from models.functionals import (EGEMAPS_DIM, FunctionalsConfig, cache_key, cached_functionals, feature_dim,
                            functionals_batch)
from models.features import pad_batch
from models.labels import NUM_CLASSES
from models.registry import build_model, get_spec

COMPARE = "ComParE_2016"
COMPARE_DIM = 6373
RATE = 16_000


def _voiced(seconds: float, f0_hz: float, level: float, seed: int) -> np.ndarray:
    """A buzzy harmonic tone with a little noise: float32 [T] at 16 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    tone = sum(np.sin(2 * np.pi * f0_hz * k * t) / k for k in range(1, 6))
    return (level * tone + 0.005 * rng.standard_normal(t.shape[0])).astype(np.float32)


def test_feature_set_names_and_dimensions():
    assert feature_dim("eGeMAPSv02") == EGEMAPS_DIM and feature_dim(COMPARE) == COMPARE_DIM
    with pytest.raises(ValueError, match="unknown openSMILE feature set 'GeMAPS'.*eGeMAPSv02.*ComParE_2016"):
        feature_dim("GeMAPS")
    with pytest.raises(ValueError, match="unknown openSMILE feature set"):
        FunctionalsConfig(feature_set="ComParE")


def test_compare_functionals_are_finite_and_differ_between_voices():
    waves = [_voiced(1.0, 120, 0.1, 0), _voiced(1.0, 260, 0.3, 1), _voiced(0.05, 200, 0.2, 2)]
    feats = functionals_batch(waves, COMPARE)
    assert feats.shape == (3, COMPARE_DIM) and feats.dtype == np.float32
    assert np.isfinite(feats).all()
    assert not np.allclose(feats[0], feats[1])


def test_cache_keeps_feature_sets_apart(tmp_path):
    clip = tmp_path / "tone.wav"
    sf.write(clip, _voiced(1.0, 150, 0.2, 0), RATE)
    assert cache_key(clip, COMPARE) != cache_key(clip)
    cache = tmp_path / "cache"
    ege = cached_functionals([clip], cache, progress=False)
    cmp_first = cached_functionals([clip], cache, progress=False, feature_set=COMPARE)
    cmp_again = cached_functionals([clip], cache, progress=False, feature_set=COMPARE)
    assert ege.shape == (1, EGEMAPS_DIM) and cmp_first.shape == (1, COMPARE_DIM)
    np.testing.assert_array_equal(cmp_first, cmp_again)
    assert len(list(cache.glob("*.npy"))) == 2


def test_compare_logreg_is_a_classical_registry_entry():
    spec = get_spec("compare-logreg")
    assert spec.family == "classical"
    model = build_model("compare-logreg")
    assert model.functionals_set == COMPARE
    assert model.feature_config() == {"type": "functionals", "feature_set": COMPARE, "dim": COMPARE_DIM}
    with pytest.raises(ValueError, match="classifier must be"):
        build_model("compare-logreg", classifier="forest")
    with pytest.raises(ValueError, match=r"ComParE_2016 features of shape \[N, 6373\]"):
        model.fit(np.zeros((6, EGEMAPS_DIM)), np.arange(6))


def test_compare_logreg_learns_and_its_regularisation_matters():
    """Class signal spread thinly over many of 6373 columns (as in ComParE): the default
    C=1e-3 logistic regression learns it; probabilities are calibrated enough to sum to 1."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(NUM_CLASSES), 10)
    centres = rng.standard_normal((NUM_CLASSES, COMPARE_DIM)) * 0.3
    X = centres[labels] + rng.standard_normal((labels.shape[0], COMPARE_DIM))
    X_test = centres[labels] + rng.standard_normal((labels.shape[0], COMPARE_DIM))
    model = build_model("compare-logreg").fit(X, labels)
    probs = model.predict_proba(X_test)
    assert probs.shape == (labels.shape[0], NUM_CLASSES) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert (probs.argmax(1) == labels).mean() > 0.9
    assert build_model("compare-logreg", **model.model_args()).model_args() == model.model_args()


def test_compare_logreg_bundle_round_trip_computes_compare(tmp_path):
    waves = [_voiced(0.8, 100 + 40 * k, 0.05 + 0.05 * k, k) for k in range(NUM_CLASSES) for _ in range(2)]
    labels = np.repeat(np.arange(NUM_CLASSES), 2)
    model = build_model("compare-logreg").fit(functionals_batch(waves, COMPARE), labels)
    save_bundle(tmp_path / "lr", model, "compare-logreg", {"fold": None})
    feature = json.loads((tmp_path / "lr" / "bundle.json").read_text())["feature"]
    assert feature["feature_set"] == COMPARE
    classifier = load_bundle_classifier(tmp_path / "lr")
    expected = model.predict_proba(functionals_batch(waves[:3], COMPARE))
    np.testing.assert_array_equal(classifier.predict(waves[:3]), expected)


def test_doublestream_with_compare_branch_trains_and_round_trips(tmp_path):
    torch.manual_seed(0)
    model = build_model("doublestream-v4", n_blocks=1, d_model=32, subsampling_channels=16, functionals=COMPARE)
    assert model.functionals_set == COMPARE and model.functionals_branch[0].in_features == COMPARE_DIM
    waves = [_voiced(0.8, 110 + 30 * k, 0.1, k) for k in range(4)]
    feats = functionals_batch(waves, COMPARE)
    model.fit_normalisation(waves, feats)
    logits = model(*pad_batch(waves), torch.from_numpy(feats))
    logits.sum().backward()
    assert model.functionals_branch[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"functionals must be \[4, 6373\]"):
        model(*pad_batch(waves), torch.zeros(4, EGEMAPS_DIM))

    save_bundle(tmp_path / "ds", model, "doublestream-v4")
    feature = json.loads((tmp_path / "ds" / "bundle.json").read_text())["feature"]
    assert feature["functionals"] == {"feature_set": COMPARE, "dim": COMPARE_DIM}
    classifier = load_bundle_classifier(tmp_path / "ds", device="cpu")
    model.eval()
    with torch.inference_mode():
        expected = torch.softmax(model(*pad_batch(waves), torch.from_numpy(feats)), dim=-1).numpy()
    np.testing.assert_allclose(classifier.predict(waves), expected, rtol=1e-5, atol=1e-6)
