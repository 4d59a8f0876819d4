"""The speaker baseline at inference: bundles trained with it load with it, utterances teach it,
live windows and speculative passes only read it, a session or a speaker change resets it, and it
normalises exactly as training did (train.feature_cache.SpeakerNorm)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.baseline import BaselineConfig, SpeakerBaseline
from models.bundle import save_bundle
from models.ensemble import EnsembleClassifier
from models.loader import load_classifier
from models.registry import build_model
from train.distributed import DistInfo
from train.feature_cache import CachedHead, SpeakerNorm, cached_feature_data

HEAD = {"encoder": "tiny.en", "lstm_hidden": 16, "attention_hidden": 8, "frame_pool": 4}


def _speech(shared_data: Path, n: int = 4) -> list[np.ndarray]:
    from models.audio_file import read_mono_16k

    folder = shared_data / "crema-d" / "AudioFLAC"
    files = sorted(folder.glob("1003_*.flac"))[:n]
    if len(files) < n:
        pytest.skip(f"CREMA-D clips of actor 1003 are not in {folder}")
    return [read_mono_16k(f) for f in files]


def _bundle(root: Path, baseline: BaselineConfig | None, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = build_model("whisper-ultimate", **HEAD).eval()
    training = {"speaker_baseline": None if baseline is None else baseline.to_dict()}
    return save_bundle(root, model, "whisper-ultimate", {"training": training})


@pytest.fixture(scope="module")
def clips(shared_data):
    return _speech(shared_data)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("baseline")
    return {"with": _bundle(root / "with", BaselineConfig()), "without": _bundle(root / "without", None)}


def test_a_bundle_trained_with_a_baseline_learns_the_speaker_and_an_old_one_does_not(folders, clips):
    plain = load_classifier(folders["without"], "cpu")
    learning = load_classifier(folders["with"], "cpu")
    assert not plain.learns_speaker and learning.learns_speaker
    np.testing.assert_allclose(plain.predict_utterance(clips[:1]), plain.predict(clips[:1]), atol=1e-6)
    before = learning.predict(clips[:1])
    first = learning.predict_utterance(clips[:1])           # learns clip 0, then scores it
    assert not np.allclose(before, first, atol=1e-4)
    np.testing.assert_allclose(learning.predict(clips[:1]), first, atol=1e-5)   # predict only reads
    learning.reset_session()
    np.testing.assert_allclose(learning.predict(clips[:1]), before, atol=1e-5)  # forgotten


def test_live_windows_use_what_the_utterances_taught(folders, clips):
    learning = load_classifier(folders["with"], "cpu")
    branch = learning.cheapest_branch()
    learning.predict_utterance(clips[:2])
    np.testing.assert_allclose(branch.predict(clips[2:3]), learning.predict(clips[2:3]), atol=1e-5)


def test_a_speculative_pass_spares_the_encoder_for_the_final_utterance(folders, clips, monkeypatch):
    learning = load_classifier(folders["with"], "cpu")
    head = learning.heads[0]
    calls = []
    original = type(head).frontend_features
    monkeypatch.setattr(type(head), "frontend_features",
                        lambda self, w, n: calls.append(1) or original(self, w, n))
    learning.predict(clips[1:2])            # the speculative pass during the VAD hangover
    learning.predict_utterance(clips[1:2])  # the same span, final
    assert len(calls) == 1


def test_inference_normalises_as_training_did(folders, clips, tmp_path):
    """Utterances in order through the loaded model == the cached-feature path training and
    `train loco` score with (fp16 cache: within 2e-3)."""
    learning = load_classifier(folders["with"], "cpu")
    online = np.concatenate([learning.predict_utterance([c]) for c in clips])
    torch.manual_seed(0)   # the bundle's seed: the same head weights
    head = build_model("whisper-ultimate", **HEAD).eval()
    items, _, axis = cached_feature_data(head, clips, tmp_path, torch.device("cpu"), DistInfo())
    norm = SpeakerNorm(BaselineConfig()).add(items, ["1003"] * len(clips))
    offline = CachedHead(head, axis).predict_items(items, 2, "cpu", norm)
    np.testing.assert_allclose(online, offline, atol=2e-3)


def test_a_speaker_reset_asked_from_another_thread_reaches_the_model(folders, clips):
    import threading

    from realtime.worker import InferenceWorker

    learning = load_classifier(folders["with"], "cpu")
    learning.predict_utterance(clips[:2])
    assert all(b.utterances == 2 for b in learning._baselines.values())
    worker = InferenceWorker.__new__(InferenceWorker)   # just the state apply_speaker_reset reads
    worker.speaker_reset, worker.primary, worker.partial_primary = threading.Event(), learning, None
    worker.apply_speaker_reset()
    assert all(b.utterances == 2 for b in learning._baselines.values())   # nobody asked
    threading.Thread(target=worker.speaker_reset.set).start()
    worker.speaker_reset.wait(5)
    worker.apply_speaker_reset()
    assert all(b.utterances == 0 for b in learning._baselines.values())
    assert not worker.speaker_reset.is_set()


def test_an_ensemble_without_shared_heads_refuses_a_baseline():
    with pytest.raises(ValueError, match="shared frozen front ends"):
        EnsembleClassifier("x", "cpu", ("a",), [], [object()], ["h"], BaselineConfig())
    assert SpeakerBaseline().statistics() is None
