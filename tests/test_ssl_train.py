"""End to end: `python -m train cv` with a tiny WavLM on real EmoDB clips -> ensemble -> engine.

A small subset of the shared EmoDB copy (4 speakers x 6 emotions x 2 clips = 48, linked, never
copied) keeps each 2-fold, 1-epoch run to seconds on a 2-core CPU.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from models.backbone import make_tiny_backbone
from models.ensemble import EnsembleClassifier
from models.loader import load_classifier
from train.ssl_report import write_layer_weight_report

pytestmark = pytest.mark.slow  # two 2-fold trainings + an engine session: ~30 s on a quiet 2-core CPU

SPEAKERS = ("11", "13", "14", "16")  # each has every one of the six emotions
EMOTION_LETTERS = "WEAFNT"  # the six EmoDB letters that map onto the CREMA-D classes
CLIPS_PER_CELL = 2


@pytest.fixture(scope="module")
def emodb_subset(emodb_dir: Path, tmp_path_factory) -> Path:
    """A plain folder of SSTTTEv.wav symlinks into the shared copy."""
    chosen: dict[tuple[str, str], list[Path]] = defaultdict(list)
    for path in sorted((emodb_dir / "wav").glob("*.wav")):
        speaker, letter = path.name[:2], path.name[5]
        if speaker in SPEAKERS and letter in EMOTION_LETTERS and len(chosen[speaker, letter]) < CLIPS_PER_CELL:
            chosen[speaker, letter].append(path)
    if len(chosen) < len(SPEAKERS) * len(EMOTION_LETTERS):
        pytest.skip("the shared EmoDB copy lacks some speaker/emotion combinations this test needs")
    folder = tmp_path_factory.mktemp("emodb-subset")
    for paths in chosen.values():
        for path in paths:
            (folder / path.name).symlink_to(path.resolve())
    return folder


@pytest.fixture(scope="module")
def tiny_wavlm(tmp_path_factory) -> Path:
    return make_tiny_backbone(tmp_path_factory.mktemp("backbone") / "wavlm", "wavlm")


def _train_cv(data: Path, backbone: Path, out: Path, *extra: str) -> None:
    from train.cli import main

    code = main(["cv", "--model", "wavlm-ultimate", "--backbone-dir", str(backbone), "--dataset", "emodb",
                 "--data", str(data), "--folds", "2", "--epochs", "1", "--batch-size", "8",
                 "--threads", "2", "--torch-device", "cpu", "--out", str(out), *extra])
    assert code == 0


def test_frozen_cv_with_feature_cache_gives_a_shared_ensemble_that_runs_in_the_engine(
        emodb_subset, tiny_wavlm, tmp_path):
    run = tmp_path / "run"
    _train_cv(emodb_subset, tiny_wavlm, run, "--cache-dir", str(tmp_path / "cache"), "--loss", "focal",
              "--focal-gamma", "2")
    doc = json.loads((run / "ensemble.json").read_text())
    assert doc["members"] == ["fold0", "fold1"] and doc["shared_backbone"] is True
    assert any((tmp_path / "cache").rglob("*.npy")), "the frozen backbone features were not cached"
    assert (run / "layer_weights.png").is_file(), "cv did not write the learned layer-weight report"
    for member in doc["members"]:
        bundle = json.loads((run / member / "bundle.json").read_text())
        assert bundle["model"]["args"]["backbone_dir"] == str(tiny_wavlm.resolve())
        assert (run / member / "model.safetensors").stat().st_size < 2_000_000  # head only

    classifier = load_classifier(str(run), "cpu")
    assert isinstance(classifier, EnsembleClassifier) and classifier.shared
    waves = [_read_16k(p) for p in sorted(emodb_subset.glob("*.wav"))[:3]]
    probs = classifier.predict(waves)
    assert probs.shape == (3, 6) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.allclose(probs, classifier.member_probabilities(waves).mean(axis=0), atol=1e-5)

    report = write_layer_weight_report(run)
    assert report is not None and report.members == ["fold0", "fold1"]
    assert len(report.mean) == 3 and abs(sum(report.mean) - 1.0) < 1e-5  # JSON rounds to 6 digits
    assert Path(report.plot_path).stat().st_size > 1_000

    predictions = _run_engine(classifier, _speech_file(emodb_subset, tmp_path / "speech.wav"))
    assert predictions, "the engine produced no utterance prediction with the ensemble"
    for prediction in predictions:
        assert abs(sum(prediction.probs.values()) - 1.0) < 1e-4
        assert prediction.model == classifier.name


def test_top_layer_fine_tuning_cv_gives_a_separate_pass_ensemble(emodb_subset, tiny_wavlm, tmp_path):
    run = tmp_path / "run"
    _train_cv(emodb_subset, tiny_wavlm, run, "--model-arg", "train_mode=top", "--model-arg", "top_layers=1")
    doc = json.loads((run / "ensemble.json").read_text())
    assert doc["shared_backbone"] is False
    classifier = load_classifier(str(run), "cpu")
    assert isinstance(classifier, EnsembleClassifier) and not classifier.shared
    assert "2 separate passes" in classifier.describe()
    probs = classifier.predict([_read_16k(sorted(emodb_subset.glob("*.wav"))[0])])
    assert probs.shape == (1, 6) and np.isfinite(probs).all()


def _read_16k(path: Path) -> np.ndarray:
    audio, rate = sf.read(path, dtype="float32")
    return soxr.resample(audio, rate, 16_000).astype(np.float32)


def _speech_file(data: Path, out: Path) -> Path:
    """Two EmoDB sentences separated and surrounded by silence, as one 22.05 kHz file."""
    parts = []
    for clip in sorted(data.glob("*.wav"))[:2]:
        audio, rate = sf.read(clip, dtype="float32")
        parts += [np.zeros(int(0.8 * rate), np.float32), audio]
    parts.append(np.zeros(int(1.0 * rate), np.float32))
    sf.write(out, np.concatenate(parts), rate)
    return out


def _run_engine(classifier, path: Path) -> list:
    """Replay the file through the real-time engine with the ensemble as model; utterance predictions."""
    from realtime.engine import Engine, EngineConfig
    from realtime.sources import FileSource
    from realtime.types import EmotionPrediction

    events: list = []
    cfg = EngineConfig(partials_enabled=False, latency_budget_ms=60_000.0, warmup_models=False)
    with Engine(FileSource(path, pace="fast"), fallback=classifier, cfg=cfg, listener=events.append) as engine:
        assert engine.wait(120.0), "the engine did not finish the file in time"
    return [e for e in events if isinstance(e, EmotionPrediction) and e.kind == "utterance"]


def test_frozen_cv_trains_on_cached_augmented_copies(emodb_subset, tiny_wavlm, tmp_path):
    run, cache = tmp_path / "run", tmp_path / "cache"
    _train_cv(emodb_subset, tiny_wavlm, run, "--cache-dir", str(cache), "--augment", "microphone",
              "--cached-augment-copies", "1")
    files = sorted(p.name for p in cache.rglob("*.npy"))
    clean = [f for f in files if "-aug" not in f]
    copies = [f for f in files if "-aug" in f]
    assert len(clean) == 48  # every clip is a training, validation or test clip of some fold
    # one copy per clip that a fold fits on; validation and test clips are never augmented
    fit_speakers = set()
    for k in (0, 1):
        fold = json.loads((run / f"fold{k}" / "metrics.json").read_text())
        fit_speakers |= set(SPEAKERS) - set(fold["test_speakers"]) - set(fold["validation"]["val_speakers"])
    assert len(copies) == len(fit_speakers) * len(EMOTION_LETTERS) * CLIPS_PER_CELL > 0
    assert {f.split("-aug")[0] + ".npy" for f in copies} < set(clean)
    meta = json.loads((run / "fold0" / "bundle.json").read_text())
    assert meta["training"]["cached_augment_copies"] == 1
    assert meta["training"]["augment"]["reverb_prob"] > 0


def test_fold_jobs_then_a_collecting_resume_still_give_a_shared_ensemble(emodb_subset, tiny_wavlm, tmp_path):
    run, cache = tmp_path / "run", str(tmp_path / "cache")
    for fold in ("0", "1"):
        _train_cv(emodb_subset, tiny_wavlm, run, "--cache-dir", cache, "--fold", fold)
    assert not (run / "ensemble.json").exists()
    _train_cv(emodb_subset, tiny_wavlm, run, "--cache-dir", cache, "--resume")  # trains nothing, collects
    assert json.loads((run / "ensemble.json").read_text())["shared_backbone"] is True
    ensemble = load_classifier(str(run), "cpu")
    assert isinstance(ensemble, EnsembleClassifier) and ensemble.shared


def _copy_disagreement(consistency_weight: float, waves, labels, backbone: Path, cache: Path, run: Path) -> float:
    """Train a wavlm-ultimate head on cached clean states + one copy; mean JS divergence (nats) between
    its predictions for each clip and for that clip's augmented copy."""
    import torch

    from models.registry import build_model
    from train.distributed import dist_info
    from train.feature_cache import CachedHead, cached_augmented_copies, cached_feature_data
    from train.loop import ClipData, TrainConfig, train_model
    from train.losses import js_consistency
    from train.recipes import augment_preset

    torch.manual_seed(0)
    model = build_model("wavlm-ultimate", backbone_dir=str(backbone))
    cfg = TrainConfig(epochs=6, batch_size=8, lr=3e-3, device="cpu", augment=augment_preset("microphone"),
                      cached_augment_copies=1, consistency_weight=consistency_weight)
    data = ClipData(waves, labels)
    trained = train_model(model, data, ClipData([], labels[:0]), cfg, run, cache_dir=cache).model
    cpu, dist = torch.device("cpu"), dist_info()
    clean, _, axis = cached_feature_data(trained, waves, cache, cpu, dist)
    (copies, _), = cached_augmented_copies(trained, waves, cfg.augment, 1, cfg.seed, cache, cpu, dist)
    head = CachedHead(trained, axis)
    p_clean, p_copy = (torch.from_numpy(head.predict_items(items, 16, cpu)) for items in (clean, copies))
    return float(js_consistency(p_clean.log(), p_copy.log()))


def test_consistency_training_brings_predictions_on_clean_and_augmented_states_together(
        emodb_subset, tiny_wavlm, tmp_path):
    from models.labels import EMOTIONS
    from train.corpora.emodb import load as load_emodb

    clips = load_emodb(emodb_subset).clips
    waves = [_read_16k(c.path) for c in clips]
    labels = np.array([EMOTIONS.index(c.label) for c in clips])
    cache = tmp_path / "cache"
    plain = _copy_disagreement(0.0, waves, labels, tiny_wavlm, cache, tmp_path / "plain")
    paired = _copy_disagreement(20.0, waves, labels, tiny_wavlm, cache, tmp_path / "paired")
    assert paired < 0.5 * plain, (plain, paired)
