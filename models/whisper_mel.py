"""Whisper's log-mel front end for unpadded clips.

Whisper (openai/whisper audio.py, also faster-whisper and transformers'
WhisperFeatureExtractor) computes: 16 kHz audio, 400-point Hann STFT, hop 160
(10 ms), centred with reflect padding, power spectrum, 80 Slaney mel filters,
log10 of max(mel, 1e-10), floor at (clip maximum - 8), then (x + 4) / 4.
It pads every input with 30 s of zeros first and reads n // 160 frames of real
content. Here the clip is followed by only N_FFT zeros, which gives the same
n // 160 content frames (the STFT window never reaches past those zeros), so
short clips need no 30 s of padding. The one difference: the "- 8" floor uses
the maximum over the content frames (whisper's also sees the tail frame half
into the zeros, which is never louder in practice).
"""
from __future__ import annotations

import functools

import numpy as np
import torch

SAMPLE_RATE_HZ = 16_000
N_FFT = 400
HOP_SAMPLES = 160  # 10 ms per mel frame
N_MELS = 80
MIN_SAMPLES = 2 * HOP_SAMPLES  # two mel frames -> one encoder frame


def _hz_to_mel(freq: np.ndarray) -> np.ndarray:
    """Slaney mel scale (librosa htk=False): linear below 1 kHz, logarithmic above."""
    freq = np.asarray(freq, dtype=np.float64)
    mel = freq / (200.0 / 3)
    log_region = freq >= 1000.0
    mel[log_region] = 15.0 + np.log(freq[log_region] / 1000.0) / (np.log(6.4) / 27.0)
    return mel


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    freq = mel * (200.0 / 3)
    log_region = mel >= 15.0
    freq[log_region] = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel[log_region] - 15.0))
    return freq


@functools.lru_cache(maxsize=4)
def mel_filters(n_mels: int = N_MELS) -> torch.Tensor:
    """Slaney-normalised triangular filters [n_mels, N_FFT // 2 + 1] (librosa.filters.mel defaults)."""
    fft_freqs = np.linspace(0.0, SAMPLE_RATE_HZ / 2, N_FFT // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array([0.0]))[0],
                                   _hz_to_mel(np.array([SAMPLE_RATE_HZ / 2]))[0], n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]  # equal area per filter (Slaney norm)
    return torch.from_numpy(weights.astype(np.float32))


def num_mel_frames(num_samples: int) -> int:
    """Content frames of a clip of num_samples (at least MIN_SAMPLES after padding)."""
    return max(num_samples, MIN_SAMPLES) // HOP_SAMPLES


def log_mel(wave: torch.Tensor, n_mels: int = N_MELS) -> torch.Tensor:
    """Equal-length clips -> Whisper log-mel features.

    wave: [B, T] float32 16 kHz in [-1, 1] (no padding inside: every row is a whole clip;
    clips shorter than MIN_SAMPLES are zero-padded up to it).
    Returns [B, n_mels, T // 160] float32, roughly in [-1, 1.5].
    """
    if wave.shape[1] < MIN_SAMPLES:
        wave = torch.nn.functional.pad(wave, (0, MIN_SAMPLES - wave.shape[1]))
    frames = wave.shape[1] // HOP_SAMPLES
    padded = torch.nn.functional.pad(wave.float(), (0, N_FFT))
    window = torch.hann_window(N_FFT, device=wave.device)
    spec = torch.stft(padded, N_FFT, HOP_SAMPLES, window=window, center=True, pad_mode="reflect",
                      return_complex=True)[..., :frames]
    power = spec.abs() ** 2
    mel = mel_filters(n_mels).to(wave.device) @ power
    logs = torch.clamp(mel, min=1e-10).log10()
    logs = torch.maximum(logs, logs.amax(dim=(1, 2), keepdim=True) - 8.0)
    return (logs + 4.0) / 4.0
