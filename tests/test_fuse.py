"""`python -m train fuse`: CV runs on two frozen encoders fused into one CV run and one shared ensemble.

Two 2-fold, 1-epoch wavlm-ultimate runs on two different tiny random backbones stand in for the
whisper tiny.en and base runs (same code path: heads on frozen front ends with different keys).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.backbone import make_tiny_backbone
from models.ensemble import EnsembleClassifier
from models.loader import load_bundle_classifier, load_classifier
from tests.test_ssl_train import _read_16k, _train_cv, emodb_subset  # noqa: F401  (fixture)
from train.cli import main
from train.evaluate import score

pytestmark = pytest.mark.slow  # three 2-fold trainings + scoring: ~40 s on a quiet 2-core CPU


@pytest.fixture(scope="module")
def runs(emodb_subset, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("fuse")
    out = {}
    for name in ("enc-a", "enc-b"):
        backbone = make_tiny_backbone(root / f"backbone-{name}", "wavlm")
        out[name] = root / name
        _train_cv(emodb_subset, backbone, out[name])
    other = make_tiny_backbone(root / "backbone-seed1", "wavlm")
    out["seed1"] = root / "seed1"
    _train_cv(emodb_subset, other, out["seed1"], "--seed", "1")  # another fold assignment
    return root, out


def _fuse(data: Path, out: Path, *runs: Path) -> int:
    return main(["fuse", *map(str, runs), "--dataset", "emodb", "--data", str(data), "--out", str(out),
                 "--threads", "2", "--torch-device", "cpu", "--name", "two-encoders"])


def test_fused_folds_score_the_mean_of_the_members_and_ship_as_one_shared_ensemble(
        emodb_subset, runs, tmp_path, capsys):  # noqa: F811
    _, run = runs
    fused = tmp_path / "fused"
    assert _fuse(emodb_subset, fused, run["enc-a"], run["enc-b"]) == 0
    assert "fused CV macro-F1" in capsys.readouterr().out
    folds = json.loads((fused / "folds.json").read_text())
    names = {p.name: p for p in emodb_subset.glob("*.wav")}
    for k, fold in enumerate(folds["folds"]):
        test = [names[Path(f).name] for f in fold["test_files"]]
        waves = [_read_16k(p) for p in test]
        # independent reference: each run's own fold-k bundle, loaded and run alone (same batches of 16)
        members = [load_bundle_classifier(run[r] / f"fold{k}", "cpu") for r in ("enc-a", "enc-b")]
        probs = np.mean([np.concatenate([m.predict(waves[s:s + 16]) for s in range(0, len(waves), 16)])
                         for m in members], axis=0)
        labels = np.array([json.loads((run["enc-a"] / f"fold{k}" / "metrics.json").read_text())["eval"]["labels"]
                           .index({"W": "anger", "E": "disgust", "A": "fear", "F": "happy", "N": "neutral",
                                   "T": "sad"}[p.name[5]]) for p in test])
        saved = json.loads((fused / f"fold{k}" / "metrics.json").read_text())
        assert saved["model"] == "fusion" and set(saved["members"]) == {"enc-a", "enc-b"}
        assert saved["eval"]["confusion"] == score(labels, probs.argmax(1)).to_dict()["confusion"]

    shipped = load_classifier(str(fused), "cpu")
    assert isinstance(shipped, EnsembleClassifier) and shipped.shared and shipped.size == 4
    assert shipped.frontend_passes == 2 and "2 shared backbone passes" in shipped.describe()
    assert shipped.name == "two-encoders"
    waves = [_read_16k(p) for p in sorted(emodb_subset.glob("*.wav"))[:3]]
    assert np.allclose(shipped.predict(waves), shipped.member_probabilities(waves).mean(0), atol=1e-5)

    cv = json.loads((fused / "cv_metrics.json").read_text())
    assert cv["model"] == "fusion" and set(cv["members"]) == {"enc-a", "enc-b"}
    assert cv["training"]["model_args"] == {"members": "enc-a+enc-b"}
    assert cv["data"] == json.loads((run["enc-a"] / "cv_metrics.json").read_text())["data"]
    assert "`fusion` members=enc-a+enc-b (fused)" in (fused / "report.md").read_text()
    # the fused run is an ordinary cv run for the robustness check
    assert main(["robustness", str(fused), "--dataset", "emodb", "--data", str(emodb_subset),
                 "--threads", "2"]) == 0
    robust = json.loads((fused / "robustness.json").read_text())
    assert robust["clean"]["summary"]["macro_f1"]["values"] == pytest.approx(cv["summary"]["macro_f1"]["values"])


def test_shared_ensemble_runs_each_front_end_once_per_batch(emodb_subset, runs, tmp_path, monkeypatch):  # noqa: F811
    _, run = runs
    fused = tmp_path / "fused"
    assert _fuse(emodb_subset, fused, run["enc-a"], run["enc-b"]) == 0
    shipped = load_classifier(str(fused), "cpu")
    calls = []
    for head in shipped.heads:
        original = head.frontend_features
        monkeypatch.setattr(head, "frontend_features",
                            lambda wave, lengths, f=original, key=head.frontend_key(): calls.append(key) or f(wave, lengths))
    shipped.predict([_read_16k(p) for p in sorted(emodb_subset.glob("*.wav"))[:2]])
    assert sorted(calls) == sorted({h.frontend_key() for h in shipped.heads}) and len(calls) == 2


def test_runs_that_cannot_be_fused_are_one_line_errors(emodb_subset, runs, tmp_path, capsys):  # noqa: F811
    _, run = runs
    assert _fuse(emodb_subset, tmp_path / "x", run["enc-a"], run["seed1"]) == 2
    assert "different fold assignments" in capsys.readouterr().err
    assert _fuse(emodb_subset, tmp_path / "x", run["enc-a"]) == 2
    assert "at least two" in capsys.readouterr().err
    partial = tmp_path / "partial" / "enc-c"
    shutil.copytree(run["enc-b"], partial)
    shutil.rmtree(partial / "fold1")
    assert _fuse(emodb_subset, tmp_path / "x", run["enc-a"], partial) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fold(s) [1] are not finished" in err[0]
    assert _fuse(emodb_subset, run["enc-a"], run["enc-a"], run["enc-b"]) == 2
    assert "is an input of this command" in capsys.readouterr().err
