"""Any rate, any channel count -> 16 kHz mono float32 (and int16), one-shot or streaming.

Input blocks may be int16/int32/uint8 PCM or float arrays, shaped [samples] (mono)
or [samples, channels]. Channels are averaged first (cheaper than resampling
every channel), non-finite samples (NaN/inf from broken float files or drivers)
become 0 and are counted, and everything is clipped to [-1, 1] (also counted)
because the classifiers were trained on that range.
"""
from __future__ import annotations

import numpy as np
import soxr

TARGET_RATE_HZ = 16_000
SUPPORTED_INPUT_RATES_HZ = (8_000, 11_025, 16_000, 22_050, 32_000, 44_100, 48_000, 88_200, 96_000)


class ResampleError(ValueError):
    """Invalid resampling request (bad rate or array shape)."""


def to_float32(block: np.ndarray) -> np.ndarray:
    """PCM or float array of shape [n] or [n, ch] -> float32 of the same shape, full scale 1.0."""
    block = np.asarray(block)
    if block.dtype == np.int16:
        return block.astype(np.float32) / 32768.0
    if block.dtype == np.int32:
        return (block.astype(np.float64) / 2147483648.0).astype(np.float32)
    if block.dtype == np.uint8:
        return (block.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(block.dtype, np.floating):
        return block.astype(np.float32, copy=False)
    raise ResampleError(f"unsupported sample type {block.dtype}; expected int16, int32, uint8 or float")


def downmix(block: np.ndarray) -> np.ndarray:
    """[n] or [n, channels] float32 -> mono [n] (mean over channels)."""
    if block.ndim == 1:
        return block
    if block.ndim == 2:
        return block[:, 0] if block.shape[1] == 1 else block.mean(axis=1, dtype=np.float32)
    raise ResampleError(f"audio must have shape [samples] or [samples, channels], got {block.shape}")


def float_to_int16(audio: np.ndarray) -> np.ndarray:
    """float32 [n] in [-1, 1] -> int16 [n] (rounded, saturating)."""
    return np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)


def int16_to_float(audio: np.ndarray) -> np.ndarray:
    """int16 [n] -> float32 [n] in [-1, 1)."""
    return audio.astype(np.float32) / 32768.0


class StreamResampler:
    """Streaming converter to 16 kHz mono float32 that keeps filter state across blocks.

    push(block [n] or [n, channels]) -> float32 [m] with m ~= n * 16000 / in_rate_hz
    (soxr may hold back a few samples of filter delay; flush() returns them).
    Counters: nonfinite_samples (replaced by 0), clipped_samples (clipped to +-1),
    both counted on the input before downmixing.
    """

    def __init__(self, in_rate_hz: float, channels: int = 1, out_rate_hz: int = TARGET_RATE_HZ,
                 quality: str = "HQ") -> None:
        if not np.isfinite(in_rate_hz) or in_rate_hz < 1000 or in_rate_hz > 768_000:
            raise ResampleError(f"input sample rate {in_rate_hz} Hz is outside 1,000-768,000 Hz")
        if channels < 1:
            raise ResampleError(f"channel count must be >= 1, got {channels}")
        self.in_rate_hz = float(in_rate_hz)
        self.out_rate_hz = int(out_rate_hz)
        self.channels = int(channels)
        self.nonfinite_samples = 0
        self.clipped_samples = 0
        self._quality = quality
        self._stream = self._new_stream()

    def _new_stream(self) -> soxr.ResampleStream | None:
        if self.in_rate_hz == self.out_rate_hz:
            return None  # identity: no filter delay, no cost
        return soxr.ResampleStream(self.in_rate_hz, self.out_rate_hz, 1, dtype="float32",
                                   quality=self._quality)

    def sanitise(self, block: np.ndarray) -> np.ndarray:
        """Any input block -> finite, clipped float32 mono [n]; updates the counters."""
        audio = to_float32(block)
        if audio.ndim == 2 and audio.shape[1] != self.channels:
            raise ResampleError(f"block has {audio.shape[1]} channels, resampler expects {self.channels}")
        finite = np.isfinite(audio)
        if not finite.all():
            self.nonfinite_samples += int(audio.size - np.count_nonzero(finite))
            audio = np.where(finite, audio, np.float32(0.0))
        over = np.abs(audio) > 1.0
        if over.any():
            self.clipped_samples += int(np.count_nonzero(over))
            audio = np.clip(audio, -1.0, 1.0)
        return np.ascontiguousarray(downmix(audio), dtype=np.float32)

    def push(self, block: np.ndarray) -> np.ndarray:
        """block [n] or [n, channels] at in_rate_hz -> float32 [m] at out_rate_hz."""
        mono = self.sanitise(block)
        if self._stream is None:
            return mono.copy()
        out = self._stream.resample_chunk(mono, last=False)
        # Sinc filters ring slightly above full scale on clipped input.
        return np.clip(out, -1.0, 1.0).astype(np.float32, copy=False)

    def flush(self) -> np.ndarray:
        """Return the samples still inside the filter; the stream then restarts clean."""
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        out = self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        self._stream = self._new_stream()
        return np.clip(out, -1.0, 1.0).astype(np.float32, copy=False)

    def reset(self) -> None:
        """Forget the filter state and the counters."""
        self._stream = self._new_stream()
        self.nonfinite_samples = 0
        self.clipped_samples = 0


def resample_to_16k(audio: np.ndarray, rate_hz: float) -> np.ndarray:
    """One-shot: audio [n] or [n, channels] at rate_hz -> float32 mono [m] at 16 kHz in [-1, 1]."""
    resampler = StreamResampler(rate_hz, channels=1 if np.ndim(audio) == 1 else np.shape(audio)[1])
    head = resampler.push(audio)
    return np.concatenate([head, resampler.flush()])


def resample_to_16k_int16(audio: np.ndarray, rate_hz: float) -> np.ndarray:
    """One-shot: audio [n] or [n, channels] at rate_hz -> int16 mono [m] at 16 kHz."""
    return float_to_int16(resample_to_16k(audio, rate_hz))
