"""models/audio_file.py, the one reader: any file -> float32 mono 16 kHz, the same samples every caller sees."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import sine
from models.audio_file import TARGET_RATE_HZ, read_mono_16k, to_mono_16k


def peak_hz(audio: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.argmax(spectrum) * TARGET_RATE_HZ / len(audio))


@pytest.mark.parametrize("fmt, subtype, rate_hz", [("WAV", "PCM_16", 44_100), ("WAV", "FLOAT", 22_050),
                                                   ("FLAC", "PCM_16", 48_000), ("FLAC", "PCM_24", 8_000),
                                                   ("OGG", "OPUS", 48_000), ("OGG", "OPUS", 24_000)])
def test_any_format_and_rate_comes_back_16k_mono_float32(tmp_path: Path, fmt, subtype, rate_hz):
    """Stereo, 2 s: left 440 Hz, right silent -> mono at half amplitude, 440 Hz, 2 s at 16 kHz."""
    stereo = np.stack([sine(440.0, 2.0, rate_hz, 0.6), np.zeros(2 * rate_hz, np.float32)], axis=1)
    path = tmp_path / f"clip.{'opus' if subtype == 'OPUS' else fmt.lower()}"
    sf.write(str(path), stereo, rate_hz, format=fmt, subtype=subtype)
    wave = read_mono_16k(path)
    assert wave.dtype == np.float32 and wave.ndim == 1 and wave.flags["C_CONTIGUOUS"]
    assert abs(len(wave) - 2 * TARGET_RATE_HZ) <= (400 if subtype == "OPUS" else 2)  # Opus pre-skip/padding
    assert abs(peak_hz(wave) - 440.0) < 2.0
    middle = wave[len(wave) // 4: -len(wave) // 4]
    assert abs(np.abs(middle).max() - 0.3) < 0.03


def test_16k_file_is_returned_sample_for_sample(tmp_path: Path):
    pcm = (sine(300.0, 0.5, TARGET_RATE_HZ, 0.5) * 32767).astype(np.int16)
    sf.write(str(tmp_path / "a.wav"), pcm, TARGET_RATE_HZ, subtype="PCM_16")
    assert np.array_equal(read_mono_16k(tmp_path / "a.wav"), pcm.astype(np.float32) / np.float32(32768.0))


@pytest.mark.parametrize("folder, pattern", [("crema-d/AudioFLAC", "*.flac"), ("emodb/wav", "*.wav"),
                                             ("ravdess-speech/Actor_01", "*.opus")])
def test_shared_corpus_clip_decodes_to_16k(shared_data: Path, folder, pattern):
    """CREMA-D FLAC (16 kHz), EmoDB WAV (22.05 kHz), RAVDESS Ogg Opus: float32 mono, duration kept."""
    files = sorted((shared_data / folder).glob(pattern))
    if not files:
        pytest.skip(f"no {pattern} under {shared_data / folder}")
    info = sf.info(str(files[0]))
    wave = read_mono_16k(files[0])
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - info.frames * TARGET_RATE_HZ / info.samplerate) <= 1


def test_to_mono_16k_averages_channels_before_resampling():
    audio = np.stack([np.full(22_050, 0.5, np.float32), np.full(22_050, -0.1, np.float32)], axis=1)
    out = to_mono_16k(audio, 22_050)
    assert out.dtype == np.float32 and len(out) == 16_000
    assert np.allclose(out[2_000:-2_000], 0.2, atol=1e-3)
