"""On-the-fly waveform augmentation and Mixup.

Waveform augmentations work on one float32 16 kHz clip at a time (numpy, in the data
loader). Mixup works on a padded batch (torch) and mixes waveforms, eGeMAPS functionals and
targets with the same lambda.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from train.room import NOISE_COLOURS, add_noise_at_snr, add_reverb, band_limit

SAMPLE_RATE_HZ = 16_000


def _check_prob(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")


@dataclass(frozen=True)
class AugmentConfig:
    """Each augmentation fires independently with its probability."""

    gain_prob: float = 0.5
    min_gain_db: float = -6.0
    max_gain_db: float = 6.0
    noise_prob: float = 0.3
    min_snr_db: float = 10.0
    max_snr_db: float = 30.0
    shift_prob: float = 0.5
    max_shift_ms: float = 200.0
    speed_prob: float = 0.3
    min_speed_factor: float = 0.9
    max_speed_factor: float = 1.1
    noise_colours: tuple[str, ...] = ("white",)
    # Room and microphone (train.room); off in the seed's recipes, on in AugmentConfig.microphone().
    reverb_prob: float = 0.0
    min_rt60_s: float = 0.2
    max_rt60_s: float = 0.8
    band_limit_prob: float = 0.0
    min_low_cut_hz: float = 50.0
    max_low_cut_hz: float = 400.0
    min_high_cut_hz: float = 3_000.0
    max_high_cut_hz: float = 7_500.0

    def __post_init__(self) -> None:
        for name in ("gain_prob", "noise_prob", "shift_prob", "speed_prob", "reverb_prob", "band_limit_prob"):
            _check_prob(name, getattr(self, name))
        if self.min_gain_db > self.max_gain_db or self.min_snr_db > self.max_snr_db:
            raise ValueError("min_gain_db/min_snr_db must not exceed their max")
        if not self.noise_colours or any(c not in NOISE_COLOURS for c in self.noise_colours):
            raise ValueError(f"noise_colours must be a non-empty subset of {NOISE_COLOURS}, got {self.noise_colours}")
        if not 0.05 <= self.min_rt60_s <= self.max_rt60_s <= 3.0:
            raise ValueError("need 0.05 <= min_rt60_s <= max_rt60_s <= 3.0 seconds")
        if not 0 < self.min_low_cut_hz <= self.max_low_cut_hz < self.min_high_cut_hz <= self.max_high_cut_hz < 8_000:
            raise ValueError("band limits must satisfy 0 < low cuts < high cuts < 8000 Hz")
        if self.max_shift_ms < 0:
            raise ValueError(f"max_shift_ms must be >= 0, got {self.max_shift_ms}")
        if not 0 < self.min_speed_factor <= self.max_speed_factor:
            raise ValueError("speed factors must satisfy 0 < min_speed_factor <= max_speed_factor")

    @classmethod
    def off(cls) -> "AugmentConfig":
        return cls(gain_prob=0.0, noise_prob=0.0, shift_prob=0.0, speed_prob=0.0)

    @classmethod
    def microphone(cls) -> "AugmentConfig":
        """Live capture in an ordinary room: gain +-12 dB, white/pink/brown noise at 5-30 dB SNR,
        reverb RT60 0.2-0.8 s and band limiting, on top of the seed's shift and speed perturbation."""
        return cls(gain_prob=0.8, min_gain_db=-12.0, max_gain_db=12.0, noise_prob=0.6, min_snr_db=5.0,
                   max_snr_db=30.0, noise_colours=NOISE_COLOURS, reverb_prob=0.5, band_limit_prob=0.3)


def apply_gain(wave: np.ndarray, gain_db: float) -> np.ndarray:
    """Scale by gain_db decibels and clip to [-1, 1]."""
    return np.clip(wave * np.float32(10.0 ** (gain_db / 20.0)), -1.0, 1.0).astype(np.float32)


def time_shift(wave: np.ndarray, shift_samples: int) -> np.ndarray:
    """Circular shift by shift_samples (positive = later); length unchanged."""
    return np.roll(wave, shift_samples).astype(np.float32)


def speed_perturb(wave: np.ndarray, factor: float) -> np.ndarray:
    """Play `factor` times faster (pitch and tempo, like Kaldi's speed perturbation).

    Resamples so the clip becomes round(len / factor) samples long.
    """
    import soxr

    out = soxr.resample(wave, SAMPLE_RATE_HZ * factor, SAMPLE_RATE_HZ, quality="HQ")
    return np.ascontiguousarray(out, dtype=np.float32)


class WaveAugmenter:
    """Random waveform augmentation with its own seeded generator. Call: float32 [T] -> float32 [T']."""

    def __init__(self, cfg: AugmentConfig, seed: int) -> None:
        self.cfg = cfg
        self.rng = np.random.default_rng(seed)

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        cfg, rng = self.cfg, self.rng
        out = wave.astype(np.float32, copy=True)
        if rng.random() < cfg.speed_prob:
            out = speed_perturb(out, float(rng.uniform(cfg.min_speed_factor, cfg.max_speed_factor)))
        if rng.random() < cfg.shift_prob:
            max_shift = int(cfg.max_shift_ms * SAMPLE_RATE_HZ / 1000)
            out = time_shift(out, int(rng.integers(-max_shift, max_shift + 1)))
        # Room before microphone before noise: reverb, then the mic's band, then gain and noise.
        if cfg.reverb_prob and rng.random() < cfg.reverb_prob:
            out = add_reverb(out, float(rng.uniform(cfg.min_rt60_s, cfg.max_rt60_s)), rng)
        if cfg.band_limit_prob and rng.random() < cfg.band_limit_prob:
            out = band_limit(out, float(rng.uniform(cfg.min_low_cut_hz, cfg.max_low_cut_hz)),
                             float(rng.uniform(cfg.min_high_cut_hz, cfg.max_high_cut_hz)))
        if rng.random() < cfg.gain_prob:
            out = apply_gain(out, float(rng.uniform(cfg.min_gain_db, cfg.max_gain_db)))
        if rng.random() < cfg.noise_prob:
            colour = cfg.noise_colours[int(rng.integers(len(cfg.noise_colours)))] if len(cfg.noise_colours) > 1 \
                else cfg.noise_colours[0]
            out = add_noise_at_snr(out, float(rng.uniform(cfg.min_snr_db, cfg.max_snr_db)), rng, colour)
        return out


@dataclass(frozen=True)
class MixedBatch:
    """A Mixup batch. waves [B, T], lengths [B], egemaps [B, 88] | None, targets [B, C] soft."""

    waves: torch.Tensor
    lengths: torch.Tensor
    egemaps: torch.Tensor | None
    targets: torch.Tensor
    lam: float
    perm: torch.Tensor


def mixup(waves: torch.Tensor, lengths: torch.Tensor, egemaps: torch.Tensor | None, targets: torch.Tensor,
          alpha: float, generator: torch.Generator) -> MixedBatch:
    """Mix each sample with a random partner: x = lam * x_i + (1 - lam) * x_perm(i), same for targets.

    lam ~ Beta(alpha, alpha), folded to >= 0.5 so the first clip dominates. The mixed length is
    the longer of the two (padding is zeros, so the shorter clip simply ends early).
    """
    if alpha <= 0:
        raise ValueError(f"mixup alpha must be > 0, got {alpha}")
    beta = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha)))
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lam = float(beta.sample())
    lam = max(lam, 1.0 - lam)
    perm = torch.randperm(waves.shape[0], generator=generator).to(waves.device)
    mixed_waves = lam * waves + (1.0 - lam) * waves[perm]
    mixed_egemaps = None if egemaps is None else lam * egemaps + (1.0 - lam) * egemaps[perm]
    mixed_targets = lam * targets + (1.0 - lam) * targets[perm]
    return MixedBatch(mixed_waves, torch.maximum(lengths, lengths[perm]), mixed_egemaps, mixed_targets, lam, perm)
