"""Bundles: save/load round trips (torch and sklearn) and every BundleError case."""
from __future__ import annotations

import hashlib
import json
import re
import shutil

import numpy as np
import pytest
import torch

from models.bundle import BundleError, file_hash, git_commit, save_bundle
from models.functionals import EGEMAPS_DIM, egemaps_batch
from models.features import pad_batch
from models.labels import EMOTIONS, NUM_CLASSES
from models.loader import load_bundle, load_bundle_classifier, load_classifier
from models.registry import UnknownModelError, build_model
from models.torch_classifier import TorchClassifier

CONTRACT_KEYS = {"format_version", "kind", "model", "labels", "feature", "sample_rate_hz", "fold", "metrics",
                 "training", "data", "git_commit", "created_utc"}


def _waves(count: int = 3, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(24_000) / 16_000
    return [(0.2 * np.sin(2 * np.pi * (140 + 60 * i) * t[: 12_000 + 6_000 * i])
             + 0.02 * rng.standard_normal(12_000 + 6_000 * i)).astype(np.float32) for i in range(count)]


@pytest.fixture(scope="module")
def conformer_bundle(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("conformer-v3.2", n_blocks=2)
    model.fit_normalisation(_waves(), None)
    folder = tmp_path_factory.mktemp("bundles") / "conformer"
    meta = {"fold": 3, "metrics": {"macro_f1": np.float32(0.5)}, "training": {"epochs": 1},
            "data": {"dataset": "synthetic", "files": 3}, "notes": "test"}
    save_bundle(folder, model, "conformer-v3.2", meta)
    return folder, model.eval()


def _copy(bundle, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(bundle, target)
    return target


def _edit_json(folder, change):
    doc = json.loads((folder / "bundle.json").read_text())
    change(doc)
    (folder / "bundle.json").write_text(json.dumps(doc))


def _error(folder, **kwargs) -> str:
    with pytest.raises(BundleError) as info:
        load_bundle_classifier(folder, device="cpu", **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_torch_bundle_json_has_contract_keys(conformer_bundle):
    folder, model = conformer_bundle
    doc = json.loads((folder / "bundle.json").read_text())
    assert CONTRACT_KEYS <= set(doc)
    assert doc["format_version"] == 2 and doc["kind"] == "torch"
    assert doc["model"] == {"name": "conformer-v3.2", "args": model.model_args()}
    assert doc["labels"] == list(EMOTIONS) and doc["sample_rate_hz"] == 16_000
    assert doc["fold"] == 3 and doc["metrics"]["macro_f1"] == pytest.approx(0.5)
    assert doc["feature"]["type"] == "logmel" and doc["feature"]["n_mels"] == 64
    assert doc["notes"] == "test"
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", doc["git_commit"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", doc["created_utc"])
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_torch_round_trip_gives_identical_probabilities(conformer_bundle):
    folder, model = conformer_bundle
    waves = _waves(seed=5)
    classifier = load_bundle_classifier(folder, device="cpu")
    assert classifier.name == "conformer-v3.2-fold3"
    assert classifier.labels == EMOTIONS and classifier.device == "cpu"
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()[:12]
    assert classifier.checkpoint_hash == digest == file_hash(folder / "model.safetensors")
    assert digest in classifier.describe()
    with torch.inference_mode():
        expected = torch.softmax(model(*pad_batch(waves)), dim=-1).numpy()
    got = classifier.predict(waves)
    assert got.dtype == np.float32 and got.shape == (3, NUM_CLASSES)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)
    assert classifier.predict([]).shape == (0, NUM_CLASSES)
    reloaded, meta = load_bundle(folder)
    torch.testing.assert_close(reloaded.frontend.mel_mean, model.frontend.mel_mean)
    assert meta["checkpoint_hash"] == digest
    np.testing.assert_array_equal(load_classifier(str(folder), device="cpu").predict(waves), expected)


def test_doublestream_round_trip_computes_egemaps(tmp_path):
    torch.manual_seed(0)
    model = build_model("doublestream-v4", n_blocks=1)
    waves = _waves()
    feats = egemaps_batch(waves)
    model.fit_normalisation(waves, feats)
    save_bundle(tmp_path / "ds", model, "doublestream-v4")
    feature = json.loads((tmp_path / "ds" / "bundle.json").read_text())["feature"]
    assert feature["type"] == "logmel+functionals" and feature["functionals"]["dim"] == EGEMAPS_DIM
    classifier = load_bundle_classifier(tmp_path / "ds", device="cpu")
    assert classifier.name == "doublestream-v4"
    model.eval()
    with torch.inference_mode():
        expected = torch.softmax(model(*pad_batch(waves), torch.from_numpy(feats)), dim=-1).numpy()
    np.testing.assert_allclose(classifier.predict(waves), expected, rtol=1e-6, atol=1e-7)


def test_sklearn_round_trip_gives_identical_probabilities(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(NUM_CLASSES), 5)
    X = rng.standard_normal((labels.shape[0], EGEMAPS_DIM)) + labels[:, None] * 0.5
    svm = build_model("egemaps-svm").fit(X, labels)
    save_bundle(tmp_path / "svm", svm, "egemaps-svm", {"fold": None})
    doc = json.loads((tmp_path / "svm" / "bundle.json").read_text())
    assert doc["kind"] == "sklearn" and CONTRACT_KEYS <= set(doc)
    assert doc["feature"]["type"] == "functionals"
    classifier = load_bundle_classifier(tmp_path / "svm")
    assert classifier.name == "egemaps-svm" and classifier.device == "cpu"
    assert classifier.checkpoint_hash == file_hash(tmp_path / "svm" / "model.joblib")
    waves = _waves()
    expected = svm.predict_proba(egemaps_batch(waves))
    np.testing.assert_array_equal(classifier.predict(waves), expected)


def test_missing_folder(tmp_path):
    assert "not found" in _error(tmp_path / "nope")


def test_missing_bundle_json_and_weights_are_named(tmp_path):
    (tmp_path / "empty").mkdir()
    message = _error(tmp_path / "empty")
    assert "bundle.json" in message and "model.safetensors" in message


def test_missing_weights_are_named(conformer_bundle, tmp_path):
    folder = _copy(conformer_bundle[0], tmp_path)
    (folder / "model.safetensors").unlink()
    assert "missing its weights file model.safetensors" in _error(folder)


def test_corrupt_json(conformer_bundle, tmp_path):
    folder = _copy(conformer_bundle[0], tmp_path)
    (folder / "bundle.json").write_text('{"format_version": 1, "kind": ')
    assert "not valid JSON" in _error(folder)


def test_wrong_format_version(conformer_bundle, tmp_path):
    folder = _copy(conformer_bundle[0], tmp_path)
    _edit_json(folder, lambda d: d.update(format_version=3))
    assert "format_version 3" in _error(folder)


def test_unknown_model_name_lists_choices(conformer_bundle, tmp_path):
    folder = _copy(conformer_bundle[0], tmp_path)
    _edit_json(folder, lambda d: d["model"].update(name="conformer-v99"))
    message = _error(folder)
    assert "conformer-v99" in message and "conformer-v3.2" in message


def test_shape_mismatch_is_named(conformer_bundle, tmp_path):
    folder = _copy(conformer_bundle[0], tmp_path)
    _edit_json(folder, lambda d: d["model"]["args"].update(conv_kernel_size=15))
    message = _error(folder)
    assert "shape mismatch" in message and "depthwise.weight" in message and "31" in message


def test_missing_keys_are_named(conformer_bundle, tmp_path):
    folder = _copy(conformer_bundle[0], tmp_path)
    _edit_json(folder, lambda d: d["model"]["args"].update(n_blocks=3))
    message = _error(folder)
    assert "missing keys" in message and "blocks.2" in message


def test_bad_model_args(conformer_bundle, tmp_path):
    folder = _copy(conformer_bundle[0], tmp_path)
    _edit_json(folder, lambda d: d["model"]["args"].update(wings=2))
    assert "wings" in _error(folder)


def test_truncated_safetensors(conformer_bundle, tmp_path):
    folder = _copy(conformer_bundle[0], tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert "corrupt or truncated" in _error(folder)


def test_label_map_mismatch(conformer_bundle, tmp_path):
    folder = _copy(conformer_bundle[0], tmp_path)
    _edit_json(folder, lambda d: d.update(labels=["anger", "boredom", "fear", "happy", "neutral", "sad"]))
    message = _error(folder)
    assert "label map" in message and "boredom" in message


def test_truncated_joblib(tmp_path):
    labels = np.repeat(np.arange(NUM_CLASSES), 3)
    svm = build_model("egemaps-svm").fit(np.random.default_rng(0).standard_normal((18, EGEMAPS_DIM)), labels)
    folder = save_bundle(tmp_path / "svm", svm, "egemaps-svm")
    weights = folder / "model.joblib"
    weights.write_bytes(weights.read_bytes()[:100])
    assert "corrupt or truncated" in _error(folder)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_cuda(conformer_bundle):
    with pytest.raises(BundleError, match="CUDA is not available"):
        load_bundle_classifier(conformer_bundle[0], device="cuda")


def test_ensemble_folder_dispatches_to_load_ensemble(tmp_path, monkeypatch):
    import models.loader

    calls = []
    monkeypatch.setattr(models.loader, "load_ensemble",
                        lambda folder, device, backbone_dir=None: calls.append((folder, device, backbone_dir)) or "E")
    (tmp_path / "ensemble.json").write_text("{}")
    assert load_classifier(tmp_path, device="cpu") == "E"
    assert load_classifier(tmp_path, device="cpu", backbone_dir="/elsewhere/wavlm") == "E"
    assert calls == [(tmp_path, "cpu", None), (tmp_path, "cpu", "/elsewhere/wavlm")]
    with pytest.raises(BundleError, match="ensemble"):
        load_bundle(tmp_path)


def test_save_bundle_unwraps_ddp_style_wrappers(tmp_path):
    model = build_model("cnn").eval()
    wrapped = torch.nn.DataParallel(model, device_ids=[])  # the same "module." keys as DistributedDataParallel
    assert all(key.startswith("module.") for key in wrapped.state_dict())
    save_bundle(tmp_path / "wrapped", wrapped, "cnn")
    loaded, _ = load_bundle(tmp_path / "wrapped")
    assert set(loaded.state_dict()) == set(model.state_dict())
    assert not any(key.startswith("module.") for key in loaded.state_dict())


def test_save_bundle_rejects_bad_names_and_reserved_meta(tmp_path):
    model = build_model("cnn")
    with pytest.raises(UnknownModelError, match="choose one of"):
        save_bundle(tmp_path / "x", model, "not-a-model")
    with pytest.raises(ValueError, match="kind"):
        save_bundle(tmp_path / "y", model, "cnn", {"kind": "sklearn"})


def test_torch_classifier_picks_a_device_and_rejects_stereo():
    classifier = TorchClassifier(build_model("cnn"), name="cnn")
    assert classifier.device == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="mono"):
        classifier.predict([np.zeros((2, 1600), np.float32)])


def test_torch_classifier_copes_with_empty_and_tiny_clips():
    classifier = TorchClassifier(build_model("doublestream-v4", n_blocks=1), name="ds", device="cpu")
    probs = classifier.predict([np.zeros(0, np.float32), np.full(10, 0.1, np.float32), _waves(1)[0]])
    assert probs.shape == (3, NUM_CLASSES) and np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


def test_git_commit_never_raises(tmp_path):
    assert git_commit(tmp_path) == "unknown"
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", git_commit())


# ------------------------------------------------------------------ the format's one owner (issue 36)
def test_bundle_module_reads_without_torch():
    import subprocess
    import sys
    from pathlib import Path

    code = "import sys, models.bundle; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_save_ensemble_writes_what_the_loader_reads_and_keeps_extra_keys(conformer_bundle, tmp_path):
    from models.bundle import (ENSEMBLE_JSON, holds_model, is_bundle_folder, is_ensemble_folder, peek_ensemble_meta,
                               read_ensemble_meta, save_ensemble)

    folder, model = conformer_bundle
    ensemble = tmp_path / "ens"
    for k in range(2):
        shutil.copytree(folder, ensemble / f"fold{k}")
    assert not holds_model(ensemble)
    assert save_ensemble(ensemble, ["fold0", "fold1"], shared_backbone=False, name="two", note="extra") == ensemble
    doc = read_ensemble_meta(ensemble)
    assert doc == {"format_version": 1, "kind": "ensemble", "members": ["fold0", "fold1"],
                   "shared_backbone": False, "backbone_dir": None, "name": "two", "note": "extra"}
    assert peek_ensemble_meta(ensemble) == doc and is_ensemble_folder(ensemble) and holds_model(ensemble)
    assert not is_bundle_folder(ensemble) and not [p for p in ensemble.iterdir() if p.name.endswith(".tmp")]
    probs = load_classifier(ensemble, device="cpu").predict(_waves(2))
    single = load_bundle_classifier(folder, device="cpu").predict(_waves(2))
    np.testing.assert_allclose(probs, single, atol=1e-6)
    with pytest.raises(BundleError, match="fold9"):
        save_ensemble(ensemble, ["fold0", "fold9"], shared_backbone=False)
    with pytest.raises(ValueError, match="kind"):
        save_ensemble(ensemble, ["fold0"], shared_backbone=False, kind="bundle")
    assert json.loads((ensemble / ENSEMBLE_JSON).read_text())["members"] == ["fold0", "fold1"]  # unchanged


def test_a_bundle_with_unknown_optional_keys_still_loads(conformer_bundle, tmp_path):
    folder = _copy(conformer_bundle[0], tmp_path)
    _edit_json(folder, lambda doc: doc.update(speaker_normalisation={"kind": "future"}, comment="later VED"))
    before = load_bundle_classifier(conformer_bundle[0], device="cpu").predict(_waves(2))
    np.testing.assert_array_equal(load_bundle_classifier(folder, device="cpu").predict(_waves(2)), before)


def test_update_bundle_meta_edits_the_file_as_stored(conformer_bundle, tmp_path):
    from models.bundle import BUNDLE_JSON, peek_bundle_meta, update_bundle_meta

    folder = _copy(conformer_bundle[0], tmp_path)
    _edit_json(folder, lambda doc: doc.update(format_version=1))  # a format-1 file stays format 1
    weights = (folder / "model.safetensors").read_bytes()
    assert update_bundle_meta(folder, lambda doc: doc["training"].update(note="edited")) == folder / BUNDLE_JSON
    doc = peek_bundle_meta(folder)
    assert doc["format_version"] == 1 and doc["training"]["note"] == "edited" and "upgraded_from" not in doc
    assert (folder / "model.safetensors").read_bytes() == weights
    with pytest.raises(BundleError, match="not a bundle folder"):
        update_bundle_meta(tmp_path / "nothing", lambda doc: None)


def test_copy_bundle_takes_json_weights_and_named_extras_only(conformer_bundle, tmp_path):
    from models.bundle import copy_bundle

    source = _copy(conformer_bundle[0], tmp_path)
    (source / "metrics.json").write_text("{}")
    (source / "train_state.pt").write_bytes(b"state")
    target = copy_bundle(source, tmp_path / "copied" / "fold0", also=("metrics.json",))
    assert sorted(p.name for p in target.iterdir()) == ["bundle.json", "metrics.json", "model.safetensors"]
    np.testing.assert_array_equal(load_bundle_classifier(target, device="cpu").predict(_waves(1)),
                                  load_bundle_classifier(source, device="cpu").predict(_waves(1)))
    with pytest.raises(BundleError, match="not a bundle folder"):
        copy_bundle(tmp_path / "copied", tmp_path / "again")


def test_peek_never_raises(tmp_path):
    from models.bundle import peek_bundle_meta, peek_ensemble_meta

    assert peek_bundle_meta(tmp_path / "missing") is None and peek_ensemble_meta(tmp_path) is None
    (tmp_path / "bundle.json").write_text("[1, 2")
    (tmp_path / "ensemble.json").write_text("[]")
    assert peek_bundle_meta(tmp_path) is None and peek_ensemble_meta(tmp_path) is None
    (tmp_path / "bundle.json").write_text('{"model": {"name": "partial"}}')  # what a GUI title needs
    assert peek_bundle_meta(tmp_path) == {"model": {"name": "partial"}}
