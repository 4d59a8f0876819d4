"""Waveform augmentation keeps dtype/shape; speed perturbation scales length by the factor."""
from __future__ import annotations

import numpy as np
import pytest

from train.augment import AugmentConfig, WaveAugmenter, apply_gain, speed_perturb, time_shift
from train.room import add_noise_at_snr as add_noise


def _tone(seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * 16_000)) / 16_000
    return (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_gain_noise_shift_keep_shape_and_dtype():
    wave = _tone()
    rng = np.random.default_rng(0)
    for out in (apply_gain(wave, 6.0), add_noise(wave, 10.0, rng), time_shift(wave, 400)):
        assert out.shape == wave.shape and out.dtype == np.float32
    assert np.max(np.abs(apply_gain(wave, 6.0))) == pytest.approx(0.2 * 10 ** (6 / 20), rel=1e-3)
    noisy = add_noise(wave, 10.0, np.random.default_rng(1))
    snr = 10 * np.log10(np.mean(wave ** 2) / np.mean((noisy - wave) ** 2))
    assert snr == pytest.approx(10.0, abs=0.5)
    assert np.array_equal(time_shift(wave, 400)[400:], wave[:-400])


@pytest.mark.parametrize("factor", [0.9, 1.1, 1.25])
def test_speed_perturb_changes_length_by_factor(factor):
    wave = _tone(2.0)
    out = speed_perturb(wave, factor)
    assert out.dtype == np.float32
    assert abs(len(out) - len(wave) / factor) <= 2


def test_augmenter_is_seeded_and_config_validated():
    cfg = AugmentConfig(gain_prob=1.0, noise_prob=1.0, shift_prob=1.0, speed_prob=0.0)
    wave = _tone()
    a, b = WaveAugmenter(cfg, seed=5)(wave), WaveAugmenter(cfg, seed=5)(wave)
    assert np.array_equal(a, b) and a.shape == wave.shape and a.dtype == np.float32
    assert not np.array_equal(a, WaveAugmenter(cfg, seed=6)(wave))
    assert np.array_equal(WaveAugmenter(AugmentConfig.off(), seed=0)(wave), wave)
    with pytest.raises(ValueError):
        AugmentConfig(gain_prob=1.5)
    with pytest.raises(ValueError):
        AugmentConfig(min_speed_factor=1.2, max_speed_factor=1.1)
