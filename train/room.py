"""What a real room and a cheap microphone do to speech: reverb, band limiting, coloured noise.

All functions work on one float32 16 kHz clip ([T], roughly in [-1, 1]) and return a clip of the
same length. They are used two ways:
* as training augmentation (`train.augment.WaveAugmenter`, probabilities in `AugmentConfig`);
* as a fixed, seeded test corruption (`corrupt`), so that clean and corrupted CV scores are
  measured on the same folds and the same clips.

The room impulse response is synthetic (exponentially decaying noise after a direct path): no
recorded RIRs are available offline here, and a decay with the right RT60 is what smears the
spectro-temporal cues an emotion model reads.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

SAMPLE_RATE_HZ = 16_000
NOISE_COLOURS = ("white", "pink", "brown")
_EXPONENT = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power falls as 1 / f**exponent


def room_impulse_response(rt60_s: float, rng: np.random.Generator, direct_to_reverb_db: float = 0.0
                          ) -> np.ndarray:
    """Synthetic RIR float32 [L]: a unit direct path, then Gaussian noise decaying by 60 dB in rt60_s.

    L = rt60_s seconds of samples. direct_to_reverb_db sets the energy ratio of the direct path to
    the tail (0 dB = equal energy, a talker about a metre from a laptop in an office)."""
    if not 0.05 <= rt60_s <= 3.0:
        raise ValueError(f"rt60_s must be in [0.05, 3.0] s, got {rt60_s}")
    n = max(2, int(rt60_s * SAMPLE_RATE_HZ))
    t = np.arange(n) / SAMPLE_RATE_HZ
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60_s)  # ln(1000): -60 dB at rt60
    tail[0] = 0.0
    tail *= np.sqrt(10.0 ** (-direct_to_reverb_db / 10.0) / max(float(np.sum(tail ** 2)), 1e-12))
    tail[0] = 1.0
    return tail.astype(np.float32)


def add_reverb(wave: np.ndarray, rt60_s: float, rng: np.random.Generator,
               direct_to_reverb_db: float = 0.0) -> np.ndarray:
    """Convolve with a synthetic RIR, keep the first len(wave) samples and the clip's RMS level."""
    if wave.size == 0:
        return wave.astype(np.float32, copy=True)
    wet = signal.fftconvolve(wave.astype(np.float64), room_impulse_response(rt60_s, rng, direct_to_reverb_db))
    wet = wet[:wave.shape[0]]
    rms_in, rms_out = _rms(wave), _rms(wet)
    if rms_out > 0:
        wet *= rms_in / rms_out
    return wet.astype(np.float32)


def band_limit(wave: np.ndarray, low_hz: float, high_hz: float) -> np.ndarray:
    """Keep low_hz..high_hz (4th-order Butterworth band-pass, zero phase), like a cheap microphone
    or a narrow-band link. high_hz must stay below the 8 kHz Nyquist frequency."""
    if not 0 < low_hz < high_hz < SAMPLE_RATE_HZ / 2:
        raise ValueError(f"need 0 < low_hz < high_hz < {SAMPLE_RATE_HZ // 2} Hz, got {low_hz}, {high_hz}")
    if wave.shape[0] < 64:  # too short for the zero-phase filter's edge padding
        return wave.astype(np.float32, copy=True)
    sos = signal.butter(4, [low_hz, high_hz], btype="bandpass", fs=SAMPLE_RATE_HZ, output="sos")
    return signal.sosfiltfilt(sos, wave.astype(np.float64)).astype(np.float32)


def coloured_noise(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-power noise float64 [n] whose power spectrum falls as 1/f**k (white 0, pink 1, brown 2)."""
    if colour not in _EXPONENT:
        raise ValueError(f"unknown noise colour {colour!r}; choose one of: {', '.join(NOISE_COLOURS)}")
    white = rng.standard_normal(n)
    if colour == "white" or n < 4:
        return white
    spectrum = np.fft.rfft(white)
    freqs = np.fft.rfftfreq(n)
    freqs[0] = freqs[1]  # no infinite gain at DC
    shaped = np.fft.irfft(spectrum / freqs ** (_EXPONENT[colour] / 2.0), n)
    return shaped / max(_rms(shaped), 1e-12)


def add_noise_at_snr(wave: np.ndarray, snr_db: float, rng: np.random.Generator, colour: str = "white"
                     ) -> np.ndarray:
    """Add noise of `colour` at `snr_db` relative to the clip's mean power."""
    power = float(np.mean(np.square(wave, dtype=np.float64))) if wave.size else 0.0
    if power <= 0.0:
        return wave.astype(np.float32, copy=True)
    noise = coloured_noise(wave.shape[0], colour, rng) * np.sqrt(power / 10.0 ** (snr_db / 10.0))
    return (wave + noise).astype(np.float32)


@dataclass(frozen=True)
class CorruptionConfig:
    """A fixed test corruption: reverb of rt60_s, then noise at snr_db. Seeded per clip."""

    snr_db: float = 10.0
    rt60_s: float = 0.5
    noise_colour: str = "pink"
    seed: int = 0

    def __post_init__(self) -> None:
        if not -10.0 <= self.snr_db <= 60.0:
            raise ValueError(f"snr_db must be in [-10, 60] dB, got {self.snr_db}")
        if not 0.05 <= self.rt60_s <= 3.0:
            raise ValueError(f"rt60_s must be in [0.05, 3.0] s, got {self.rt60_s}")
        if self.noise_colour not in NOISE_COLOURS:
            raise ValueError(f"noise_colour must be one of {NOISE_COLOURS}, got {self.noise_colour!r}")

    @property
    def label(self) -> str:
        return f"{self.noise_colour} noise {self.snr_db:g} dB SNR + reverb RT60 {self.rt60_s:g} s"


def corrupt(wave: np.ndarray, cfg: CorruptionConfig, clip_index: int) -> np.ndarray:
    """The test-time corruption of one clip: the same clip index always gets the same noise and RIR."""
    rng = np.random.default_rng([cfg.seed, clip_index])
    return add_noise_at_snr(add_reverb(wave, cfg.rt60_s, rng), cfg.snr_db, rng, cfg.noise_colour)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0
