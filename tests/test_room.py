"""Room and microphone simulation: reverb, band limiting, coloured noise, the seeded test corruption."""
from __future__ import annotations

import numpy as np
import pytest

from train.augment import AugmentConfig, WaveAugmenter
from train.recipes import augment_preset, build_train_config
from train.room import (CorruptionConfig, add_noise_at_snr, add_reverb, band_limit, coloured_noise, corrupt,
                        room_impulse_response)

SR = 16_000


def _tone(freq_hz: float, seconds: float = 1.0, amp: float = 0.2) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def _band_power(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(x.shape[0], 1 / SR)
    return float(spec[(f >= lo) & (f < hi)].sum())


def test_rir_decays_by_60_db_over_rt60():
    rir = room_impulse_response(0.5, np.random.default_rng(0))
    assert rir.shape == (8000,) and rir[0] == 1.0
    early = np.mean(rir[1:400] ** 2)       # first 25 ms of the tail
    late = np.mean(rir[7600:8000] ** 2)    # last 25 ms, ~57 dB further down
    assert 10 * np.log10(early / late) == pytest.approx(60 * (7600 - 200) / 8000, abs=6)


def test_reverb_keeps_length_and_level_and_smears_an_onset():
    rng = np.random.default_rng(0)
    burst = np.zeros(SR, np.float32)
    burst[4000:4800] = _tone(500, 0.05)
    wet = add_reverb(burst, 0.6, rng)
    assert wet.shape == burst.shape and wet.dtype == np.float32
    assert np.sqrt(np.mean(wet ** 2)) == pytest.approx(np.sqrt(np.mean(burst ** 2)), rel=1e-4)
    # after the burst the dry clip is silent; the reverberant one still rings
    assert np.abs(burst[6000:8000]).max() == 0
    assert np.sqrt(np.mean(wet[6000:8000] ** 2)) > 1e-3


def test_band_limit_removes_out_of_band_energy():
    wave = _tone(100) + _tone(1000) + _tone(7000)
    out = band_limit(wave, 300, 3400)
    assert out.shape == wave.shape and out.dtype == np.float32
    assert _band_power(out, 900, 1100) > 0.8 * _band_power(wave, 900, 1100)
    assert _band_power(out, 90, 110) < 0.05 * _band_power(wave, 90, 110)
    assert _band_power(out, 6900, 7100) < 0.01 * _band_power(wave, 6900, 7100)
    with pytest.raises(ValueError, match="high_hz"):
        band_limit(wave, 300, 9000)


@pytest.mark.parametrize("colour", ["white", "pink", "brown"])
def test_noise_is_added_at_the_requested_snr(colour):
    wave = _tone(440, 2.0)
    noisy = add_noise_at_snr(wave, 10.0, np.random.default_rng(3), colour)
    snr = 10 * np.log10(np.mean(wave.astype(np.float64) ** 2) / np.mean((noisy - wave).astype(np.float64) ** 2))
    assert snr == pytest.approx(10.0, abs=0.3)


def test_noise_colours_tilt_the_spectrum():
    low_over_high = {}
    for colour in ("white", "pink", "brown"):
        n = coloured_noise(64_000, colour, np.random.default_rng(1))
        low_over_high[colour] = _band_power(n, 100, 500) / _band_power(n, 4000, 4400)
    assert low_over_high["white"] == pytest.approx(1.0, rel=0.3)
    assert low_over_high["white"] < low_over_high["pink"] < low_over_high["brown"]
    with pytest.raises(ValueError, match="choose one of"):
        coloured_noise(10, "blue", np.random.default_rng(0))


def test_corruption_is_seeded_per_clip():
    wave = _tone(300, 1.5)
    cfg = CorruptionConfig(snr_db=10.0, rt60_s=0.5)
    a, b = corrupt(wave, cfg, 7), corrupt(wave, cfg, 7)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, corrupt(wave, cfg, 8))
    assert not np.array_equal(a, corrupt(wave, CorruptionConfig(seed=1), 7))
    assert a.shape == wave.shape
    with pytest.raises(ValueError, match="snr_db"):
        CorruptionConfig(snr_db=100)


def test_microphone_preset_changes_audio_and_stays_reproducible():
    wave = _tone(220, 1.0)
    cfg = AugmentConfig.microphone()
    assert (cfg.min_gain_db, cfg.max_gain_db, cfg.min_snr_db, cfg.max_snr_db) == (-12, 12, 5, 30)
    assert cfg.reverb_prob > 0 and cfg.band_limit_prob > 0
    outs = [WaveAugmenter(cfg, seed=s)(wave) for s in range(8)]
    assert all(np.isfinite(o).all() and o.dtype == np.float32 for o in outs)
    assert np.array_equal(outs[3], WaveAugmenter(cfg, seed=3)(wave))
    assert len({o.tobytes() for o in outs}) == 8


def test_presets_reach_the_training_config():
    assert build_train_config("conformer-v3.1", {}, augment="microphone").augment == AugmentConfig.microphone()
    assert build_train_config("conformer-v3.1", {}).augment == AugmentConfig()
    assert build_train_config("conformer-v3.1", {}, augment="off").augment == AugmentConfig.off()
    with pytest.raises(ValueError, match="choose one of"):
        augment_preset("studio")
    with pytest.raises(ValueError, match="noise_colours"):
        AugmentConfig(noise_colours=("purple",))
