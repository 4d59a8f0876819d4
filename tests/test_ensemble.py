"""models/ensemble.py: K-fold ensembles with one shared frozen-backbone pass, or separate passes."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import models.backbone as backbone_module
from models.backbone import make_tiny_backbone
from models.bundle import BundleError, save_bundle
from models.ensemble import EnsembleClassifier
from models.loader import load_bundle_classifier, load_classifier, load_ensemble
from models.registry import build_model


def _clips(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (16_000, 24_000, 7_000)]


def _write_ensemble(root: Path, name: str, args: dict, k: int, shared: bool, backbone_dir: str) -> Path:
    """k members with different random heads, saved as bundles, plus ensemble.json."""
    root.mkdir(parents=True, exist_ok=True)
    members = []
    for fold in range(k):
        torch.manual_seed(100 + fold)
        model = build_model(name, **args).eval()
        save_bundle(root / f"fold{fold}", model, name, {"fold": fold})
        members.append(f"fold{fold}")
    (root / "ensemble.json").write_text(json.dumps({
        "format_version": 1, "kind": "ensemble", "members": members,
        "shared_backbone": shared, "backbone_dir": backbone_dir}))
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble")
    wavlm = make_tiny_backbone(root / "wavlm", "wavlm")
    wav2vec2 = make_tiny_backbone(root / "wav2vec2", "wav2vec2")
    frozen_args = {"backbone_dir": str(wavlm), "lstm_hidden": 16}
    return {
        "root": root,
        "wavlm": wavlm,
        "shared": _write_ensemble(root / "shared", "wavlm-ultimate", frozen_args, 3, True, str(wavlm)),
        "unflagged": _write_ensemble(root / "unflagged", "wavlm-ultimate", frozen_args, 2, False, str(wavlm)),
        "top": _write_ensemble(root / "top", "wav2vec2-bilstm",
                               {"backbone_dir": str(wav2vec2), "lstm_hidden": 16, "top_layers": 1},
                               2, False, str(wav2vec2)),
    }


def _mean_of_members(folder: Path, clips: list[np.ndarray]) -> np.ndarray:
    """Independent reference: every member bundle loaded and run on its own by the bundle loader."""
    doc = json.loads((folder / "ensemble.json").read_text())
    return np.mean([load_bundle_classifier(folder / m, "cpu").predict(clips) for m in doc["members"]], axis=0)


def test_shared_ensemble_equals_the_mean_of_its_heads(tiny):
    clips = _clips()
    ensemble = load_ensemble(tiny["shared"], "cpu")
    assert isinstance(ensemble, EnsembleClassifier) and ensemble.shared and ensemble.size == 3
    probs = ensemble.predict(clips)
    assert probs.shape == (3, 6) and probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.allclose(probs, _mean_of_members(tiny["shared"], clips), atol=1e-5)
    members = ensemble.member_probabilities(clips)
    assert members.shape == (3, 3, 6)
    assert not np.allclose(members[0], members[1], atol=1e-4)  # the heads really differ
    assert "shared backbone pass" in ensemble.describe()


def test_shared_ensemble_loads_the_backbone_once(tiny, monkeypatch):
    calls = []
    original = backbone_module.load_backbone

    def counting(path, kind="auto"):
        calls.append(path)
        return original(path, kind)

    monkeypatch.setattr(backbone_module, "load_backbone", counting)
    ensemble = load_ensemble(tiny["shared"], "cpu", warmup=False)
    assert len(calls) == 1
    assert len({id(head.backbone) for head in ensemble.heads}) == 1


def test_registry_loads_the_ensemble_folder(tiny):
    classifier = load_classifier(str(tiny["shared"]), "cpu")
    assert isinstance(classifier, EnsembleClassifier)
    assert classifier.device == "cpu" and len(classifier.checkpoint_hash) == 12
    probs = classifier.predict(_clips(1)[:1])
    assert probs.shape == (1, 6)
    assert classifier.predict([]).shape == (0, 6)


def test_without_the_shared_flag_members_run_separately(tiny):
    clips = _clips(2)
    ensemble = load_ensemble(tiny["unflagged"], "cpu")
    assert not ensemble.shared and "2 separate passes" in ensemble.describe()
    assert np.allclose(ensemble.predict(clips), _mean_of_members(tiny["unflagged"], clips), atol=1e-5)


def test_fine_tuned_members_run_separately(tiny):
    clips = _clips(3)
    ensemble = load_ensemble(tiny["top"], "cpu")
    assert not ensemble.shared
    assert np.allclose(ensemble.predict(clips), _mean_of_members(tiny["top"], clips), atol=1e-5)


def test_missing_member_is_named(tiny, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny["shared"], broken)
    shutil.rmtree(broken / "fold1")
    with pytest.raises(BundleError, match="missing member bundle.*fold1"):
        load_ensemble(broken, "cpu")


def test_mismatched_labels_are_rejected(tiny, tmp_path):
    broken = tmp_path / "labels"
    shutil.copytree(tiny["shared"], broken)
    meta_path = broken / "fold2" / "bundle.json"
    meta = json.loads(meta_path.read_text())
    meta["labels"] = list(reversed(meta["labels"]))
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="label map"):
        load_ensemble(broken, "cpu")


def test_bad_ensemble_json_is_one_line(tiny, tmp_path):
    broken = tmp_path / "json"
    shutil.copytree(tiny["shared"], broken)
    (broken / "ensemble.json").write_text('{"format_version": 1, "kind": "ensemble", "members": []}')
    with pytest.raises(BundleError, match="non-empty list"):
        load_ensemble(broken, "cpu")
    (broken / "ensemble.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_ensemble(broken, "cpu")


def test_moved_backbone_needs_and_accepts_an_override(tiny, tmp_path):
    root = tmp_path / "moved"
    backbone = make_tiny_backbone(root / "wavlm", "wavlm")
    folder = _write_ensemble(root / "ens", "wavlm-ultimate", {"backbone_dir": str(backbone), "lstm_hidden": 8},
                             2, True, str(backbone))
    clips = _clips(4)
    before = load_ensemble(folder, "cpu").predict(clips)
    elsewhere = tmp_path / "my-copy-of-wavlm"
    shutil.move(str(backbone), str(elsewhere))
    with pytest.raises(BundleError, match="backbone_dir="):
        load_ensemble(folder, "cpu")
    after = load_ensemble(folder, "cpu", backbone_dir=str(elsewhere))
    assert after.shared
    assert np.allclose(before, after.predict(clips), atol=1e-6)


def test_log_mel_members_form_a_separate_ensemble(tmp_path):
    folder = _write_ensemble(tmp_path / "cnn", "cnn", {}, 2, False, None)
    clips = _clips(5)
    ensemble = load_ensemble(folder, "cpu")
    assert not ensemble.shared and ensemble.size == 2
    assert np.allclose(ensemble.predict(clips), _mean_of_members(folder, clips), atol=1e-5)
