"""The one way VED reads an audio file for a model: float32 mono at 16 kHz.

    read_mono_16k(path)          any soundfile-readable file (WAV, FLAC, Ogg Opus ...) -> float32 [T] 16 kHz
    to_mono_16k(audio, rate_hz)  float32 [T, C] or [T] at rate_hz                       -> float32 [T'] 16 kHz

Channels are averaged, then soxr resamples at quality "HQ" (skipped when the file is already at
16 kHz, so 16 kHz files come back sample for sample). train, bench, realtime and models all read
through here, so a clip gives the same samples everywhere (feature caches key on them).
Torch-free and imports nothing else of VED. The live microphone path streams instead
(realtime/resample.py), because it must keep filter state across blocks.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

TARGET_RATE_HZ = 16_000


def to_mono_16k(audio: np.ndarray, rate_hz: int) -> np.ndarray:
    """float32 [T, C] or [T] at rate_hz -> float32 mono [T'] at 16 kHz (channel mean, then soxr HQ)."""
    mono = audio.mean(axis=1) if audio.ndim == 2 else audio
    if rate_hz != TARGET_RATE_HZ:
        import soxr  # only files at another rate need it

        mono = soxr.resample(mono, rate_hz, TARGET_RATE_HZ, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def read_mono_16k(path: str | Path) -> np.ndarray:
    """Decode an audio file with soundfile -> float32 mono [T] at 16 kHz, full scale 1.0."""
    audio, rate_hz = sf.read(str(path), dtype="float32", always_2d=True)
    return to_mono_16k(audio, rate_hz)
