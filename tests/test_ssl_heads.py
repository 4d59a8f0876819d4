"""models/arch/ssl_heads.py: wavlm-ultimate and wav2vec2-bilstm on tiny random backbones."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from models.backbone import BackboneError, make_tiny_backbone
from models.labels import NUM_CLASSES
from models.registry import build_model

# transformers' WavLM attention mixes a bool padding mask with a float position bias; harmless.
pytestmark = pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask:UserWarning")


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ssl-backbones")
    return {
        "wavlm": str(make_tiny_backbone(root / "wavlm", "wavlm")),
        "wav2vec2": str(make_tiny_backbone(root / "wav2vec2", "wav2vec2")),
        "wavlm-layer": str(make_tiny_backbone(root / "wavlm-layer", "wavlm", feat_extract_norm="layer")),
    }


def _batch(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    clips = [0.1 * torch.randn(n, generator=gen) for n in lengths]
    wave = torch.zeros(len(clips), max(lengths))
    for row, clip in zip(wave, clips):
        row[:len(clip)] = clip
    return wave, torch.tensor(lengths), clips


def test_contract_shapes_and_flags(tiny_dirs):
    model = build_model("wavlm-ultimate", backbone_dir=tiny_dirs["wavlm"]).eval()
    wave, lengths, _ = _batch([16_000, 9_000])
    logits = model(wave, lengths)
    assert logits.shape == (2, NUM_CLASSES) and torch.isfinite(logits).all()
    assert model.functionals_set is None
    assert model.frozen_backbone and model.frontend_cacheable
    model.fit_normalisation([np.zeros(100, np.float32)], None)  # a no-op that must accept the call
    rebuilt = build_model("wavlm-ultimate", **model.model_args())
    assert rebuilt.model_args() == model.model_args()


def test_layer_weights_sum_to_one_and_receive_gradients(tiny_dirs):
    model = build_model("wavlm-ultimate", backbone_dir=tiny_dirs["wavlm"], dropout=0.0)
    weights = model.layer_weights()
    assert weights.shape == (3,)  # embedding output + 2 transformer layers
    assert abs(float(weights.sum()) - 1.0) < 1e-6
    with torch.no_grad():
        model.layer_logits.copy_(torch.tensor([0.5, -1.0, 2.0]))
    assert abs(float(model.layer_weights().sum()) - 1.0) < 1e-6
    model.train()
    wave, lengths, _ = _batch([16_000, 12_000])
    loss = torch.nn.functional.cross_entropy(model(wave, lengths), torch.tensor([0, 3]))
    loss.backward()
    grad = model.layer_logits.grad
    assert grad is not None and float(grad.abs().sum()) > 0
    assert all(p.grad is None for p in model.backbone.parameters())


@pytest.mark.parametrize("name,backbone,mode", [
    ("wavlm-ultimate", "wavlm", "frozen"),
    ("wavlm-ultimate", "wavlm-layer", "frozen"),
    ("wav2vec2-bilstm", "wav2vec2", "top"),
])
def test_padding_a_clip_does_not_change_its_prediction(tiny_dirs, name, backbone, mode):
    model = build_model(name, backbone_dir=tiny_dirs[backbone], train_mode=mode).eval()
    wave, lengths, clips = _batch([16_000, 10_000, 4_000], seed=3)
    with torch.no_grad():
        batched = model(wave, lengths)
        for i, clip in enumerate(clips):
            alone = model(clip[None], lengths[i:i + 1])
            padded = torch.nn.functional.pad(clip[None], (0, 7_000), value=0.3)  # garbage padding
            again = model(padded, lengths[i:i + 1])
            assert torch.allclose(batched[i], alone[0], atol=1e-5)
            assert torch.allclose(again[0], alone[0], atol=1e-5)


def test_frontend_then_head_equals_forward(tiny_dirs):
    model = build_model("wavlm-ultimate", backbone_dir=tiny_dirs["wavlm"]).eval()
    wave, lengths, _ = _batch([16_000, 8_000])
    with torch.no_grad():
        feats, feat_lengths = model.frontend_features(wave, lengths)
        assert feats.shape[:2] == (2, 3) and feats.shape[3] == 32
        assert feats.shape[model.frontend_time_axis] == int(feat_lengths.max())
        assert torch.allclose(model.forward_features(feats.half(), feat_lengths), model(wave, lengths),
                              atol=5e-2)  # fp16 features, as the training cache stores them
        assert torch.allclose(model.forward_features(feats, feat_lengths), model(wave, lengths), atol=1e-6)


def test_unpadded_batch_skips_packing_and_scores_as_the_packed_batch(tiny_dirs, monkeypatch):
    from models.arch import ssl_heads
    packs = []
    real_pack = ssl_heads.pack_padded_sequence
    monkeypatch.setattr(ssl_heads, "pack_padded_sequence", lambda *a, **k: packs.append(1) or real_pack(*a, **k))
    model = build_model("wavlm-ultimate", backbone_dir=tiny_dirs["wavlm"]).eval()
    wave, lengths, _ = _batch([16_000, 8_000])
    with torch.no_grad():
        feats, feat_lengths = model.frontend_features(wave, lengths)
        batched = model.forward_features(feats, feat_lengths)  # row 1 is padded: packed
        assert len(packs) == 1
        alone = model.forward_features(feats[:1], feat_lengths[:1])  # row 0 fills its frames: not packed
        assert len(packs) == 1
    assert torch.allclose(alone[0], batched[0], atol=1e-5)


def test_frozen_state_dict_holds_only_the_head_and_round_trips(tiny_dirs, tmp_path):
    model = build_model("wavlm-ultimate", backbone_dir=tiny_dirs["wavlm"], lstm_hidden=16).eval()
    with torch.no_grad():
        model.layer_logits.copy_(torch.tensor([1.0, 0.0, -1.0]))
        model.classifier.bias.add_(0.5)
    state = model.state_dict()
    assert state and not any(k.startswith("backbone.") for k in state)
    assert "layer_logits" in state
    save_file(state, str(tmp_path / "model.safetensors"))
    assert (tmp_path / "model.safetensors").stat().st_size < 200_000
    rebuilt = build_model("wavlm-ultimate", **model.model_args()).eval()
    rebuilt.load_state_dict(load_file(str(tmp_path / "model.safetensors")))
    wave, lengths, _ = _batch([12_000])
    with torch.no_grad():
        assert torch.allclose(model(wave, lengths), rebuilt(wave, lengths), atol=1e-6)

    class Wrapper(torch.nn.Module):  # nested inside another module (as a classifier wrapper would)
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

    wrapped_state = Wrapper(model).state_dict()
    assert not any(".backbone." in k for k in wrapped_state)
    Wrapper(rebuilt).load_state_dict(wrapped_state)


def test_top_mode_trains_only_the_top_layers_and_keeps_them_in_the_bundle(tiny_dirs):
    model = build_model("wav2vec2-bilstm", backbone_dir=tiny_dirs["wav2vec2"], top_layers=1)
    assert not model.frozen_backbone and not model.frontend_cacheable
    encoder = model.backbone.encoder
    assert all(p.requires_grad for p in encoder.layers[-1].parameters())
    assert not any(p.requires_grad for p in encoder.layers[0].parameters())
    assert not any(p.requires_grad for p in model.backbone.feature_extractor.parameters())
    model.train()
    assert encoder.layers[-1].training and not encoder.layers[0].training
    assert any(k.startswith("backbone.encoder.layers.1.") for k in model.state_dict())
    model.eval()
    assert not encoder.layers[-1].training


def test_full_mode_freezes_only_the_conv_encoder(tiny_dirs):
    model = build_model("wavlm-ultimate", backbone_dir=tiny_dirs["wavlm"], train_mode="full")
    assert all(p.requires_grad for p in model.backbone.encoder.parameters())
    assert not any(p.requires_grad for p in model.backbone.feature_extractor.parameters())


def test_frozen_training_mode_keeps_the_backbone_in_eval(tiny_dirs):
    model = build_model("wavlm-ultimate", backbone_dir=tiny_dirs["wavlm"]).train()
    assert model.lstm.training and not model.backbone.training


def test_clear_errors_for_bad_arguments(tiny_dirs):
    with pytest.raises(BackboneError, match="--backbone-dir"):
        build_model("wavlm-ultimate")
    with pytest.raises(ValueError, match="train_mode"):
        build_model("wavlm-ultimate", backbone_dir=tiny_dirs["wavlm"], train_mode="half")
    with pytest.raises(ValueError, match="top_layers"):
        build_model("wav2vec2-bilstm", backbone_dir=tiny_dirs["wav2vec2"], top_layers=5)
    with pytest.raises(BackboneError, match="holds a wav2vec2 model"):
        build_model("wavlm-ultimate", backbone_dir=tiny_dirs["wav2vec2"])


def test_cli_string_arguments_are_cast(tiny_dirs):
    model = build_model("wav2vec2-bilstm", backbone_dir=tiny_dirs["wav2vec2"], top_layers="1",
                        lstm_hidden="8", dropout="0.1")
    assert model.model_args()["top_layers"] == 1 and model.lstm.hidden_size == 8


def test_short_clip_still_gives_probabilities(tiny_dirs):
    model = build_model("wavlm-ultimate", backbone_dir=tiny_dirs["wavlm"]).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 200), torch.tensor([200, 50]))
    assert logits.shape == (2, NUM_CLASSES) and torch.isfinite(logits).all()


def test_focal_loss_equals_cross_entropy_at_gamma_zero():
    losses = pytest.importorskip("train.losses")
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(8, NUM_CLASSES, generator=gen)
    targets = losses.one_hot(torch.randint(0, NUM_CLASSES, (8,), generator=gen), NUM_CLASSES)
    weights = torch.rand(NUM_CLASSES, generator=gen) + 0.5
    focal = losses.focal_loss(logits, targets, gamma=0.0, weights=weights)
    ce = torch.nn.functional.cross_entropy(logits, targets.argmax(1), weight=weights)
    assert torch.allclose(focal, ce, atol=1e-6)
    assert float(losses.focal_loss(logits, targets, gamma=2.0, weights=weights)) < float(ce)
