"""Resampling to 16 kHz mono: frequency kept for every supported rate, channels averaged,
bad samples repaired and counted, streaming equal to one-shot."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import sine
from realtime.resample import (ResampleError, StreamResampler, float_to_int16, resample_to_16k,
                               resample_to_16k_int16)


def peak_hz(audio: np.ndarray, rate_hz: int = 16_000) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.argmax(spectrum) * rate_hz / len(audio))


@pytest.mark.parametrize("rate_hz", [8_000, 22_050, 44_100, 48_000, 96_000])
def test_sine_frequency_and_length_kept(rate_hz):
    out = resample_to_16k(sine(1_000.0, 2.0, rate_hz), rate_hz)
    assert out.dtype == np.float32
    assert abs(len(out) - 32_000) <= 2
    assert abs(peak_hz(out) - 1_000.0) < 2.0
    assert abs(np.sqrt(np.mean(out[1000:-1000] ** 2)) - 0.5 / np.sqrt(2)) < 0.01


def test_stereo_and_multichannel_are_averaged():
    left, right = sine(440.0, 1.0, 44_100, 0.4), sine(2_000.0, 1.0, 44_100, 0.4)
    stereo = np.stack([left, right], axis=1)
    out = resample_to_16k(stereo, 44_100)
    spectrum = np.abs(np.fft.rfft(out))
    freqs = np.fft.rfftfreq(len(out), 1 / 16_000)
    for f in (440.0, 2_000.0):   # both channels present at half amplitude
        assert spectrum[np.argmin(np.abs(freqs - f))] > 0.3 * spectrum.max()
    six = np.zeros((48_000, 6), np.float32)
    six[:, 3] = sine(700.0, 1.0, 48_000, 0.6)
    out6 = resample_to_16k(six, 48_000)
    assert abs(peak_hz(out6) - 700.0) < 2.0
    assert abs(np.abs(out6[500:-500]).max() - 0.1) < 0.005   # 0.6 / 6 channels


def test_streaming_in_odd_blocks_equals_one_shot():
    audio = sine(523.0, 1.5, 22_050)
    one_shot = resample_to_16k(audio, 22_050)
    stream = StreamResampler(22_050)
    pieces = [stream.push(audio[i:i + 333]) for i in range(0, len(audio), 333)] + [stream.flush()]
    np.testing.assert_allclose(np.concatenate(pieces), one_shot, atol=1e-6)


def test_nonfinite_samples_zeroed_and_counted_clipping_counted():
    audio = sine(300.0, 0.5, 16_000, 0.5)
    audio[10] = np.nan
    audio[20] = np.inf
    audio[30] = -np.inf
    audio[100:110] = 3.0
    stream = StreamResampler(16_000)
    out = stream.push(audio)
    assert stream.nonfinite_samples == 3 and stream.clipped_samples == 10
    assert np.isfinite(out).all() and np.abs(out).max() <= 1.0
    assert out[10] == 0.0 and out[100] == 1.0


def test_integer_pcm_inputs_and_int16_output():
    pcm = float_to_int16(sine(1_000.0, 1.0, 48_000, 0.5))
    out = resample_to_16k_int16(pcm, 48_000)
    assert out.dtype == np.int16
    assert abs(int(np.abs(out[100:-100]).max()) - 16_384) < 200
    as_int32 = pcm.astype(np.int32) << 16
    np.testing.assert_allclose(resample_to_16k(as_int32, 48_000), resample_to_16k(pcm, 48_000), atol=1e-4)
    assert float_to_int16(np.array([2.0, -2.0], np.float32)).tolist() == [32767, -32768]


def test_bad_requests_raise_resample_error():
    with pytest.raises(ResampleError):
        StreamResampler(0)
    with pytest.raises(ResampleError):
        StreamResampler(48_000, channels=2).push(np.zeros((10, 3), np.float32))
    with pytest.raises(ResampleError):
        resample_to_16k(np.array(["a", "b"]), 16_000)
