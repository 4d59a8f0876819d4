"""Log-mel front end and eGeMAPS functionals."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from models.audio_file import read_mono_16k
from models.functionals import EGEMAPS_DIM, cache_key, cached_functionals, egemaps_batch, functionals
from models.features import LogMelConfig, LogMelFrontend, SpecAugmentConfig, pad_batch


def _noise(samples: int, seed: int = 0, scale: float = 0.1) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal(samples)).astype(np.float32)


def _emodb_wave(emodb_dir, name: str = "03a01Wa.wav") -> np.ndarray:
    audio, rate = sf.read(emodb_dir / "wav" / name, dtype="float32")
    assert rate == 22_050
    return soxr.resample(audio, rate, 16_000).astype(np.float32)


@pytest.mark.parametrize("bad", [dict(hop_ms=30.0), dict(n_mels=4), dict(f_max_hz=9000.0),
                                 dict(log_floor=0.0), dict(min_clip_ms=10.0), dict(sample_rate_hz=0)])
def test_logmel_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        LogMelConfig(**bad)


def test_pad_batch_shapes_and_lengths():
    wave, lengths = pad_batch([np.ones(5, np.float32), np.ones(3, np.float32)])
    assert wave.shape == (2, 5) and wave.dtype == torch.float32
    assert lengths.tolist() == [5, 3]
    assert wave[1, 3:].abs().sum() == 0


def test_frontend_shapes_and_padding_is_zero():
    frontend = LogMelFrontend(LogMelConfig(n_mels=64)).eval()
    wave, lengths = pad_batch([_noise(40_000), _noise(20_000, seed=1)])
    out = frontend(wave, lengths)
    # center=False: (T - 400) // 160 + 1 frames
    assert out.features.shape == (2, 248, 64)
    assert out.frame_lengths.tolist() == [248, 123]
    assert out.features[1, 123:].abs().sum() == 0
    assert out.features[1, :123].abs().sum() > 0


def test_padding_does_not_change_valid_frames():
    frontend = LogMelFrontend().eval()
    clip = _noise(20_000, seed=2)
    alone = frontend(*pad_batch([clip]))
    batched = frontend(*pad_batch([_noise(45_000, seed=3), clip]))
    frames = int(alone.frame_lengths[0])
    assert int(batched.frame_lengths[1]) == frames
    torch.testing.assert_close(batched.features[1, :frames], alone.features[0])


def test_short_clip_is_padded_to_minimum():
    frontend = LogMelFrontend().eval()
    out = frontend(*pad_batch([_noise(100)]))
    assert out.frame_lengths.tolist() == [18]  # 200 ms -> (3200 - 400) // 160 + 1
    assert torch.isfinite(out.features).all()


def test_fit_stats_standardises_and_survives_state_dict(tmp_path):
    frontend = LogMelFrontend()
    with pytest.raises(ValueError, match="at least one"):
        frontend.fit_stats([])
    assert not frontend.is_fitted
    waves = [_noise(n, seed=i, scale=0.05 * (i + 1)) for i, n in enumerate([16_000, 24_000, 32_000])]
    frontend.fit_stats(waves)
    assert frontend.is_fitted
    assert frontend.stats_frames.item() == sum((n - 400) // 160 + 1 for n in (16_000, 24_000, 32_000))
    frontend.eval()
    out = frontend(*pad_batch(waves))
    valid = torch.cat([out.features[i, :n] for i, n in enumerate(out.frame_lengths.tolist())])
    assert valid.mean(0).abs().max() < 1e-3
    assert (valid.std(0) - 1).abs().max() < 1e-2

    torch.save(frontend.state_dict(), tmp_path / "fe.pt")
    restored = LogMelFrontend()
    restored.load_state_dict(torch.load(tmp_path / "fe.pt"))
    restored.eval()
    torch.testing.assert_close(restored.mel_mean, frontend.mel_mean)
    torch.testing.assert_close(restored.mel_std, frontend.mel_std)
    torch.testing.assert_close(restored(*pad_batch(waves)).features, out.features)


def test_spec_augment_only_in_training_and_switchable():
    torch.manual_seed(0)
    frontend = LogMelFrontend(spec_augment=SpecAugmentConfig(freq_mask_bins=20, time_mask_frames=60))
    batch = pad_batch([_noise(40_000, seed=s) for s in range(4)])
    reference = frontend.eval()(*batch).features
    torch.testing.assert_close(frontend(*batch).features, reference)  # eval: deterministic, no masks
    augmented = frontend.train()(*batch).features
    assert not torch.equal(augmented, reference)
    assert (augmented == 0).sum() > (reference == 0).sum()
    frontend.spec_augment_enabled = False
    torch.testing.assert_close(frontend(*batch).features, reference)


def test_egemaps_on_real_emodb_clip(emodb_dir):
    values = functionals(_emodb_wave(emodb_dir))
    assert values.shape == (EGEMAPS_DIM,) and values.dtype == np.float32
    assert np.isfinite(values).all()
    assert np.abs(values).sum() > 0
    # first functional is the mean F0 in semitones from 27.5 Hz: a speaking voice is 10..50 st
    assert 10 < values[0] < 50


def test_egemaps_handles_very_short_and_empty_clips():
    batch = egemaps_batch([_noise(50), np.zeros(0, np.float32), _noise(800)])
    assert batch.shape == (3, EGEMAPS_DIM)
    assert np.isfinite(batch).all()


def test_cached_functionals_reuses_and_invalidates(tmp_path, emodb_dir):
    clip = tmp_path / "clip.wav"
    sf.write(clip, sf.read(emodb_dir / "wav" / "03a01Wa.wav", dtype="float32")[0], 22_050)
    cache = tmp_path / "cache"
    calls = []

    def loader(path):
        calls.append(path)
        return read_mono_16k(path)

    first = cached_functionals([clip], cache, load_wave=loader, progress=False)
    second = cached_functionals([clip], cache, load_wave=loader, progress=False)
    assert len(calls) == 1 and len(list(cache.glob("*.npy"))) == 1
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first[0], functionals(_emodb_wave(emodb_dir)), rtol=1e-4, atol=1e-4)

    # a fresh copy of the corpus (another folder, a new mtime) is the same content: still cached
    copy = tmp_path / "copy" / "clip.wav"
    copy.parent.mkdir()
    shutil.copyfile(clip, copy)
    stat = copy.stat()
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10 ** 9))
    assert cache_key(copy) == cache_key(clip)
    np.testing.assert_array_equal(cached_functionals([copy], cache, load_wave=loader, progress=False), first)
    assert len(calls) == 1
    # changed samples are a new entry
    wave, rate = sf.read(clip, dtype="float32")
    sf.write(clip, 0.5 * wave, rate)
    assert cache_key(clip) != cache_key(copy)
    cached_functionals([clip], cache, load_wave=loader, progress=False)
    assert len(calls) == 2 and len(list(cache.glob("*.npy"))) == 2


def test_cached_functionals_recomputes_corrupt_entry(tmp_path):
    clip = tmp_path / "tone.wav"
    t = np.arange(16_000) / 16_000
    sf.write(clip, (0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32), 16_000)
    cache = tmp_path / "cache"
    good = cached_functionals([clip], cache, progress=False)
    entry = cache / f"{cache_key(clip)}.npy"
    entry.write_bytes(b"not a numpy file")
    again = cached_functionals([clip], cache, progress=False)
    np.testing.assert_allclose(again, good, rtol=1e-5)
    assert np.load(entry).shape == (EGEMAPS_DIM,)
