"""models/backbone.py: folder checks, offline loading, normalisation, padding-independent runs.

Backbones are tiny random models written with save_pretrained into tmp folders and loaded
through the same path a user's downloaded folder takes.
"""
from __future__ import annotations

import json
import shutil
import socket

import numpy as np
import pytest
import torch

from models.backbone import (MIN_SAMPLES, BackboneError, load_backbone, make_tiny_backbone,
                             prepare_waveforms, run_backbone)

# transformers' WavLM attention mixes a bool padding mask with a float position bias; harmless.
pytestmark = pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask:UserWarning")


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("backbones")
    return {
        "wavlm": make_tiny_backbone(root / "wavlm", "wavlm"),
        "wav2vec2": make_tiny_backbone(root / "wav2vec2", "wav2vec2"),
        "wavlm-layer": make_tiny_backbone(root / "wavlm-layer", "wavlm", feat_extract_norm="layer"),
        "wavlm-wide": make_tiny_backbone(root / "wavlm-wide", "wavlm", hidden_size=48, num_layers=3),
    }


def _missing_part(message: str) -> str:
    """The 'is missing ...' part of the error, before the expected layout is spelled out."""
    return message.split("; expected")[0]


def test_loads_tiny_wavlm_in_eval_mode_with_info(tiny_dirs):
    model, info = load_backbone(tiny_dirs["wavlm"])
    assert not model.training
    assert (info.kind, info.hidden_size, info.num_layers) == ("wavlm", 32, 2)
    assert info.do_normalize is False and info.return_attention_mask is True
    assert info.sample_rate_hz == 16_000 and info.feat_extract_norm == "group"


def test_auto_kind_and_preprocessor_flags_for_wav2vec2(tiny_dirs):
    model, info = load_backbone(tiny_dirs["wav2vec2"])
    assert type(model).__name__ == "Wav2Vec2Model"
    assert info.kind == "wav2vec2" and info.do_normalize is True and info.return_attention_mask is False


def test_sizes_come_from_the_config_not_constants(tiny_dirs):
    model, info = load_backbone(tiny_dirs["wavlm-wide"])
    assert (info.hidden_size, info.num_layers) == (48, 3)
    wave = torch.randn(1, 16_000)
    feats, feat_lengths = run_backbone(model, wave, torch.tensor([16_000]), info)
    assert feats.shape == (1, 4, int(feat_lengths[0]), 48)  # embedding output + 3 layers


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(BackboneError, match="does not exist"):
        load_backbone(tmp_path / "nowhere")


def test_empty_folder_error_names_every_missing_file(tmp_path):
    with pytest.raises(BackboneError) as err:
        load_backbone(tmp_path)
    missing = _missing_part(str(err.value))
    for name in ("config.json", "model.safetensors", "pytorch_model.bin", "preprocessor_config.json"):
        assert name in missing
    assert "wavlm-base-plus" in str(err.value)


def test_folder_with_only_config_names_the_rest(tmp_path, tiny_dirs):
    shutil.copy(tiny_dirs["wavlm"] / "config.json", tmp_path / "config.json")
    with pytest.raises(BackboneError) as err:
        load_backbone(tmp_path)
    missing = _missing_part(str(err.value))
    assert "preprocessor_config.json" in missing and "model.safetensors" in missing
    assert "config.json," not in missing.replace("preprocessor_config.json", "")


def test_unsupported_model_type_and_kind_mismatch(tmp_path, tiny_dirs):
    with pytest.raises(BackboneError, match="holds a wavlm model, but wav2vec2 was requested"):
        load_backbone(tiny_dirs["wavlm"], kind="wav2vec2")
    other = tmp_path / "bert"
    shutil.copytree(tiny_dirs["wavlm"], other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(BackboneError, match="model_type 'bert'"):
        load_backbone(other)


def test_lfs_pointer_and_corrupt_weights_are_one_line_errors(tmp_path, tiny_dirs):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dirs["wavlm"], broken)
    (broken / "model.safetensors").write_bytes(b"version https://git-lfs.github.com/spec/v1\n")
    with pytest.raises(BackboneError, match="Git LFS pointer"):
        load_backbone(broken)
    (broken / "model.safetensors").write_bytes(b"\xff" * 4096)
    with pytest.raises(BackboneError, match="could not load backbone") as err:
        load_backbone(broken)
    assert "\n" not in str(err.value)


def test_pytorch_model_bin_layout_loads_the_same_weights(tmp_path, tiny_dirs):
    source, _ = load_backbone(tiny_dirs["wavlm"])
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        shutil.copy(tiny_dirs["wavlm"] / name, legacy / name)
    torch.save(source.state_dict(), legacy / "pytorch_model.bin")
    loaded, _ = load_backbone(legacy)
    for key, value in source.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


def test_loading_never_touches_the_network(monkeypatch, tiny_dirs):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted while loading a local backbone")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    for name in ("wavlm", "wav2vec2"):
        model, _ = load_backbone(tiny_dirs[name])
        assert sum(p.numel() for p in model.parameters()) > 0


def test_normalisation_uses_valid_samples_only(tiny_dirs):
    _, info = load_backbone(tiny_dirs["wav2vec2"])  # do_normalize=True
    rng = np.random.default_rng(0)
    clip = torch.from_numpy((0.3 + 0.1 * rng.standard_normal(8_000)).astype(np.float32))
    batch = torch.zeros(2, 12_000)
    batch[0, :8_000] = clip
    batch[1, :8_000] = clip
    batch[1, 8_000:] = 5.0  # garbage beyond the valid length must be ignored
    wave, lengths = prepare_waveforms(batch, torch.tensor([8_000, 8_000]), info)
    valid = wave[:, :8_000]
    assert torch.allclose(valid.mean(dim=1), torch.zeros(2), atol=1e-4)
    assert torch.allclose(valid.std(dim=1, unbiased=False), torch.ones(2), atol=1e-3)
    assert torch.equal(wave[:, 8_000:], torch.zeros(2, 4_000))
    assert torch.allclose(wave[0], wave[1])
    assert lengths.tolist() == [8_000, 8_000]


def test_no_normalisation_when_the_preprocessor_says_so(tiny_dirs):
    _, info = load_backbone(tiny_dirs["wavlm"])  # do_normalize=False, as wavlm-base-plus
    wave = torch.full((1, 4_000), 0.25)
    out, _ = prepare_waveforms(wave, torch.tensor([4_000]), info)
    assert torch.equal(out, wave)


def test_very_short_clips_are_padded_to_one_frame(tiny_dirs):
    model, info = load_backbone(tiny_dirs["wavlm"])
    feats, feat_lengths = run_backbone(model, torch.randn(1, 100), torch.tensor([100]), info)
    assert feats.shape[2] >= 1 and int(feat_lengths[0]) >= 1
    _, lengths = prepare_waveforms(torch.randn(1, 100), torch.tensor([100]), info)
    assert int(lengths[0]) == MIN_SAMPLES


@pytest.mark.parametrize("name", ["wavlm", "wav2vec2", "wavlm-layer"])
def test_padding_does_not_change_hidden_states(tiny_dirs, name):
    model, info = load_backbone(tiny_dirs[name])
    torch.manual_seed(1)
    waves = [torch.randn(n) * 0.1 for n in (16_000, 11_000, 5_000)]
    batch = torch.zeros(3, 16_000)
    for row, w in zip(batch, waves):
        row[:len(w)] = w
    lengths = torch.tensor([len(w) for w in waves])
    with torch.no_grad():
        feats, feat_lengths = run_backbone(model, batch, lengths, info)
        for i, w in enumerate(waves):
            alone, alone_len = run_backbone(model, w[None], lengths[i:i + 1], info)
            n = int(alone_len[0])
            assert int(feat_lengths[i]) == n
            assert torch.allclose(feats[i, :, :n], alone[0, :, :n], atol=1e-5)
