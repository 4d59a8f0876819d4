"""Log-mel architectures (cnn, transformer, conformer-*, doublestream-v4) and the eGeMAPS SVM."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from models.functionals import EGEMAPS_DIM, egemaps_batch
from models.features import pad_batch
from models.labels import NUM_CLASSES, normalise_label
from models.registry import UnknownModelError, available, build_model

LOGMEL = available("logmel")
RATE = 16_000


def _class_clips(per_class: int = 1, seconds: float = 0.8, seed: int = 0):
    """Tones whose pitch and loudness depend on the class, plus noise: waves, labels [N], egemaps-like [N, 88]."""
    rng = np.random.default_rng(seed)
    waves, labels = [], []
    t = np.arange(int(seconds * RATE)) / RATE
    for label in range(NUM_CLASSES):
        for _ in range(per_class):
            tone = (0.05 + 0.05 * label) * np.sin(2 * np.pi * (150 + 120 * label) * t)
            waves.append((tone + 0.01 * rng.standard_normal(t.shape[0])).astype(np.float32))
            labels.append(label)
    feats = rng.standard_normal((len(waves), EGEMAPS_DIM)).astype(np.float32) * 3 + 10
    return waves, np.array(labels), feats


def test_registry_lists_the_logmel_family():
    assert {"cnn", "transformer", "conformer-v1", "conformer-v3.1", "conformer-v3.2",
            "doublestream-v4"} <= set(LOGMEL)
    assert available("classical") == ["compare-logreg", "egemaps-svm"]


def test_unknown_registry_name_lists_choices():
    with pytest.raises(UnknownModelError) as info:
        build_model("conformer-v9")
    message = str(info.value)
    assert "conformer-v9" in message and "conformer-v3.2" in message and "egemaps-svm" in message


def test_unknown_model_argument_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown conformer argument.*d_modle.*valid:.*d_model"):
        build_model("conformer-v1", d_modle=64)
    with pytest.raises(ValueError, match="conv_kernel_size"):
        build_model("conformer-v1", conv_kernel_size=14)


@pytest.mark.parametrize("name", LOGMEL)
def test_logmel_model_trains(name):
    torch.manual_seed(0)
    model = build_model(name)
    waves, labels, feats = _class_clips()
    model.fit_normalisation(waves, feats)
    wave, lengths = pad_batch(waves)
    egemaps = torch.from_numpy(feats) if model.functionals_set is not None else None
    target = torch.from_numpy(labels)
    model.eval()
    with torch.no_grad():
        before = torch.nn.functional.cross_entropy(model(wave, lengths, egemaps), target).item()
    model.train()
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(8):
        optimiser.zero_grad()
        logits = model(wave, lengths, egemaps)
        assert logits.shape == (len(waves), NUM_CLASSES)
        loss = torch.nn.functional.cross_entropy(logits, target)
        loss.backward()
        optimiser.step()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        after = torch.nn.functional.cross_entropy(model(wave, lengths, egemaps), target).item()
    assert after < before - 0.05, f"{name}: loss {before:.3f} -> {after:.3f}"


@pytest.mark.parametrize("name", LOGMEL)
def test_padding_does_not_change_logits(name):
    torch.manual_seed(1)
    model = build_model(name).eval()
    waves = [np.random.default_rng(i).standard_normal(n).astype(np.float32) * 0.1
             for i, n in enumerate((40_000, 9_000, 23_456))]
    feats = torch.randn(len(waves), EGEMAPS_DIM) if model.functionals_set is not None else None
    with torch.inference_mode():
        batched = model(*pad_batch(waves), feats)
        single = torch.cat([model(*pad_batch([w]), None if feats is None else feats[i:i + 1])
                            for i, w in enumerate(waves)])
    torch.testing.assert_close(batched, single, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", LOGMEL)
def test_model_args_rebuild_the_same_architecture(name):
    model = build_model(name)
    args = json.loads(json.dumps(model.model_args()))
    rebuilt = build_model(name, **args)
    assert rebuilt.model_args() == args
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in rebuilt.state_dict().items()}
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < 2_000_000, f"{name} has {n_params} parameters; keep log-mel models small"


def test_registry_defaults_reach_the_conformer():
    assert build_model("conformer-v1").encoder.blocks[0].conv.depthwise.kernel_size == (15,)
    v32 = build_model("conformer-v3.2")
    assert v32.encoder.blocks[0].conv.depthwise.kernel_size == (31,)
    assert v32.model_args()["dropout"] == 0.3
    assert build_model("conformer-v3.2", conv_kernel_size=7).model_args()["conv_kernel_size"] == 7


def test_conformer_absolute_positions_and_mean_pooling_variant_work():
    model = build_model("conformer-v1", pos_enc="absolute", pooling="mean", n_blocks=1).eval()
    with torch.inference_mode():
        logits = model(*pad_batch([np.zeros(8_000, np.float32), np.ones(16_000, np.float32) * 0.1]))
    assert logits.shape == (2, NUM_CLASSES) and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", LOGMEL)
def test_stats_pooling_and_utterance_norm_variants_respect_padding(name):
    torch.manual_seed(2)
    model = build_model(name, pooling="stats", utterance_norm=True).eval()
    waves = [np.random.default_rng(i).standard_normal(n).astype(np.float32) * 0.1
             for i, n in enumerate((30_000, 7_000))]
    feats = torch.randn(len(waves), EGEMAPS_DIM) if model.functionals_set is not None else None
    with torch.inference_mode():
        batched = model(*pad_batch(waves), feats)
        single = torch.cat([model(*pad_batch([w]), None if feats is None else feats[i:i + 1])
                            for i, w in enumerate(waves)])
    assert batched.shape == (2, NUM_CLASSES)
    torch.testing.assert_close(batched, single, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="pooling"):
        build_model(name, pooling="max")


def test_utterance_norm_removes_a_constant_gain():
    """A fixed gain is a constant offset in log-mel; per-utterance normalisation cancels it."""
    model = build_model("conformer-v1", utterance_norm=True).eval()
    clip = np.random.default_rng(0).standard_normal(24_000).astype(np.float32) * 0.05
    with torch.inference_mode():
        quiet = model(*pad_batch([clip]))
        loud = model(*pad_batch([clip * 8.0]))
        plain = build_model("conformer-v1").eval()
        assert not torch.allclose(plain(*pad_batch([clip])), plain(*pad_batch([clip * 8.0])), atol=1e-3)
    torch.testing.assert_close(quiet, loud, atol=2e-3, rtol=1e-3)


def test_level_dbfs_hears_every_microphone_gain_as_one_level():
    """Scaled to one input level first, a clip gives the same output at -20..+20 dB of gain, in a
    padded batch as alone; without it the gain changes the output; silence is not lifted past 40 dB."""
    from models.features import MAX_LEVEL_GAIN_DB, LogMelConfig, LogMelFrontend, active_level_db

    torch.manual_seed(3)
    rng = np.random.default_rng(3)
    speech = (rng.standard_normal(24_000) * np.repeat(rng.uniform(0.01, 0.1, 24), 1_000)).astype(np.float32)
    speech[8_000:12_000] = 0.0   # a pause must not lower the measured level
    other = (rng.standard_normal(9_000) * 0.02).astype(np.float32)
    model = build_model("cnn", level_dbfs=-30.0).eval()
    plain = build_model("cnn").eval()
    plain.load_state_dict(model.state_dict())
    with torch.inference_mode():
        outputs = [model(*pad_batch([speech * 10 ** (db / 20), other]))[0] for db in (-20, 0, 20)]
        alone = model(*pad_batch([speech]))[0]
        assert not torch.allclose(plain(*pad_batch([speech * 10.0]))[0], plain(*pad_batch([speech]))[0], atol=1e-3)
    for out in outputs[1:] + [alone]:
        torch.testing.assert_close(out, outputs[0], atol=1e-4, rtol=1e-4)
    cfg = LogMelConfig()
    wave, lengths = pad_batch([speech, speech[:12_000]])
    level = active_level_db(wave, lengths, cfg)
    assert abs(level[0] - level[1]) < 3.0   # the first 0.75 s already hold the clip's level
    sine = torch.sin(torch.arange(16_000) / 5.0).unsqueeze(0) * 0.1
    assert abs(active_level_db(sine, torch.tensor([16_000]), cfg).item() - (-23.01)) < 0.05
    quiet = pad_batch([rng.standard_normal(16_000).astype(np.float32) * 1e-3])   # about -60 dB
    lifted = LogMelFrontend(level_dbfs=-10.0).log_mel(*quiet).features - LogMelFrontend().log_mel(*quiet).features
    assert abs(lifted.mean().item() - MAX_LEVEL_GAIN_DB / 10 * np.log(10)) < 0.05   # +40 dB, not +50
    with pytest.raises(ValueError, match="level_dbfs"):
        build_model("cnn", level_dbfs=5.0)


def test_set_spec_augment_switches_training_masks():
    torch.manual_seed(0)
    model = build_model("conformer-v1", dropout=0.0, time_mask_frames=80, freq_mask_bins=30)
    batch = pad_batch([np.random.default_rng(0).standard_normal(32_000).astype(np.float32) * 0.1])
    with torch.no_grad():
        reference = model.eval()(*batch)
        model.train()
        model.set_spec_augment(False)
        torch.testing.assert_close(model(*batch), reference)
        model.set_spec_augment(True)
        assert not torch.allclose(model(*batch), reference)


def test_doublestream_needs_and_standardises_egemaps():
    model = build_model("doublestream-v4")
    assert model.functionals_set == "eGeMAPSv02"
    waves, _, feats = _class_clips()
    with pytest.raises(ValueError, match="eGeMAPS"):
        model.fit_normalisation(waves, None)
    model.fit_normalisation(waves, feats)
    np.testing.assert_allclose(model.functionals_mean.numpy(), feats.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.functionals_std.numpy(), feats.std(0), rtol=1e-4, atol=1e-5)
    assert model.frontend.is_fitted
    with pytest.raises(ValueError, match="functionals"):
        model(*pad_batch(waves))


def test_doublestream_gated_fusion_uses_both_streams():
    torch.manual_seed(0)
    model = build_model("doublestream-v4", fusion="gated", n_blocks=1).eval()
    waves, _, feats = _class_clips()
    batch = pad_batch(waves)
    with torch.inference_mode():
        base = model(*batch, torch.from_numpy(feats))
        other = model(*batch, torch.from_numpy(feats[::-1].copy()))
    assert not torch.allclose(base, other)


def test_svm_fits_and_predicts_probabilities():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(NUM_CLASSES), 12)
    centres = rng.standard_normal((NUM_CLASSES, EGEMAPS_DIM)) * 2
    X = centres[labels] + rng.standard_normal((labels.shape[0], EGEMAPS_DIM)) * 0.5
    svm = build_model("egemaps-svm")
    assert svm.functionals_set == "eGeMAPSv02"
    svm.fit(X, labels)
    X_test = centres[labels] + rng.standard_normal(X.shape) * 0.5
    probs = svm.predict_proba(X_test)
    assert probs.shape == (labels.shape[0], NUM_CLASSES) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert (probs.argmax(1) == labels).mean() > 0.9
    assert build_model("egemaps-svm", **svm.model_args()).model_args() == svm.model_args()


def test_svm_with_missing_class_gives_zero_probability_for_it():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 2, 5], 6)
    X = rng.standard_normal((labels.shape[0], EGEMAPS_DIM)) + labels[:, None]
    probs = build_model("egemaps-svm").fit(X, labels).predict_proba(X)
    assert np.all(probs[:, [1, 3, 4]] == 0)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


def test_svm_rejects_bad_input():
    svm = build_model("egemaps-svm")
    with pytest.raises(RuntimeError, match="before fit"):
        svm.predict_proba(np.zeros((1, EGEMAPS_DIM)))
    with pytest.raises(ValueError, match="88"):
        svm.fit(np.zeros((4, 10)), np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="0..5"):
        svm.fit(np.zeros((4, EGEMAPS_DIM)), np.array([0, 1, 7, 1]))
    with pytest.raises(ValueError, match="C must be"):
        build_model("egemaps-svm", C=-1.0)


def test_svm_separates_real_emodb_emotions(emodb_dir):
    """Anger vs sadness on real EmoDB eGeMAPS: trained on 4 speakers, tested on 2 others."""
    rows = [line.split(",") for line in (emodb_dir / "labels.csv").read_text().splitlines()[1:]]
    wanted = {"anger": 0, "sad": 5}
    train, test = [], []
    for row in rows:
        label = normalise_label(row[4])
        if label not in wanted:
            continue
        (test if row[1] in ("14", "16") else train if row[1] in ("03", "08", "10", "11") else []).append(
            (row[0], wanted[label]))
    assert len(test) >= 8 and len(train) >= 20

    def features(items):
        waves = []
        for path, _ in items:
            audio, rate = sf.read(emodb_dir / path, dtype="float32")
            waves.append(soxr.resample(audio, rate, RATE).astype(np.float32))
        return egemaps_batch(waves), np.array([label for _, label in items])

    X_train, y_train = features(train)
    X_test, y_test = features(test)
    svm = build_model("egemaps-svm").fit(X_train, y_train)
    predicted = svm.predict_proba(X_test).argmax(1)
    assert set(predicted.tolist()) <= {0, 5}
    assert (predicted == y_test).mean() >= 0.8
