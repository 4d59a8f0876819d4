"""Audio sources: a file replayed in real time or as fast as possible, and the microphone.

Both produce `AudioBlock`s (16 kHz mono int16) on the stream's sample clock.
`FileSource` checks the file when constructed (bad files raise `AudioFileError`, one
line, before any thread starts) and then streams it block by block: the file is
never loaded whole, so an hour-long recording costs one block of memory.
`MicrophoneSource` lives in realtime/microphone.py and is re-exported here.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf

from realtime.devices import (DeviceError, InputDevice, format_device_table, list_input_devices,
                              rescan_devices, resolve_input_device)
from realtime.microphone import MicrophoneConfig, MicrophoneSource
from realtime.resample import StreamResampler, float_to_int16
from realtime.source import END_OF_STREAM, TARGET_RATE_HZ, AudioBlock, ThreadedSource, put_dropping_oldest

__all__ = ["AudioFileError", "FileInfo", "FileSourceConfig", "FileSource", "probe_audio_file",
           "MicrophoneSource", "MicrophoneConfig", "DeviceError", "InputDevice", "list_input_devices",
           "format_device_table", "resolve_input_device", "rescan_devices"]

PACES = ("realtime", "fast")


class AudioFileError(ValueError):
    """The file cannot be used as audio; the message is one line meant for the user."""


@dataclass(frozen=True)
class FileInfo:
    """What the probe learned about an audio file. frames: what is present (libsndfile clamps a
    truncated file's count); declared_frames: what a WAV header promises (= frames otherwise)."""

    path: str
    sample_rate_hz: int
    channels: int
    frames: int
    format: str
    subtype: str
    declared_frames: int = 0

    @property
    def truncated(self) -> bool:
        return self.declared_frames > self.frames

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate_hz


@dataclass(frozen=True)
class FileSourceConfig:
    """pace: "realtime" (blocks released at the speed of the audio, like a microphone;
    when the consumer falls behind the oldest block is dropped and counted) or "fast"
    (as fast as the consumer takes them; waits on a full queue, nothing lost).
    block_ms: audio per block, in milliseconds of the source file."""

    pace: str = "realtime"
    block_ms: int = 100

    def __post_init__(self) -> None:
        if self.pace not in PACES:
            raise ValueError(f"pace must be one of {PACES}, got {self.pace!r}")
        if not 5 <= self.block_ms <= 5_000:
            raise ValueError(f"block_ms must be in 5-5000 ms, got {self.block_ms}")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _wav_declared_frames(path: Path, frames: int) -> int:
    """Frames the data chunk of a RIFF/WAVE header declares; `frames` for other formats,
    streamed WAVs (size 0xFFFFFFFF) and headers that cannot be walked."""
    present_total = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return frames
        while len(chunk := f.read(8)) == 8:
            size = int.from_bytes(chunk[4:], "little")
            if chunk[:4] == b"data":
                present = present_total - f.tell()
                if size == 0xFFFFFFFF or present <= 0 or size <= present:
                    return frames
                return round(frames * size / present)
            f.seek(size + (size & 1), os.SEEK_CUR)   # chunks are padded to even sizes
    return frames


def probe_audio_file(path: str | os.PathLike) -> FileInfo:
    """Open the file, check it holds decodable audio, read its header. Raises AudioFileError."""
    p = Path(path)
    try:
        if not p.exists():
            raise AudioFileError(f"audio file not found: {p}")
        if not p.is_file():
            raise AudioFileError(f"not a regular file: {p}")
        if p.stat().st_size == 0:
            raise AudioFileError(f"audio file is empty (0 bytes): {p}")
    except OSError as exc:   # name too long, permission denied on a parent folder...
        raise AudioFileError(f"cannot open audio file {p}: {exc.strerror or exc}") from None
    try:
        with sf.SoundFile(str(p)) as f:
            info = FileInfo(path=str(p), sample_rate_hz=int(f.samplerate), channels=int(f.channels),
                            frames=int(f.frames), format=str(f.format), subtype=str(f.subtype),
                            declared_frames=_wav_declared_frames(p, int(f.frames)))
            first = f.read(min(4096, max(info.frames, 1)), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, OSError, ValueError) as exc:
        raise AudioFileError(f"cannot read {p.name} as audio ({_one_line(exc)})") from exc
    if info.frames <= 0 or len(first) == 0:
        raise AudioFileError(f"{p.name} contains no audio samples")
    if not 1_000 <= info.sample_rate_hz <= 768_000:
        raise AudioFileError(f"{p.name} has an unusable sample rate of {info.sample_rate_hz} Hz")
    return info


class FileSource(ThreadedSource):
    """Replays an audio file (anything libsndfile reads: wav, flac, ogg...; any rate and
    channel count) as 16 kHz mono int16 `AudioBlock`s from a reader thread.

    Construction probes the file (raises AudioFileError). A file shorter than its header
    claims (truncated download) plays what is there. A file that cannot be read to its end
    (a decoding error mid-file, e.g. a FLAC that loses sync, or a file that shrinks while it
    plays) ends the stream there: `cut_short` then says where and why, and the same is reported
    through status_listener("warning", message); main.py turns it into exit 2.
    Counters: dropped_blocks, nonfinite_samples (NaN/inf replaced by 0), clipped_samples,
    samples_out (16 kHz samples produced). At the end, anything repaired (truncation, NaN/inf,
    clipping) is reported once through status_listener("warning", message) and kept in `warning`.
    """

    thread_name = "ved-file-reader"

    def __init__(self, path: str | os.PathLike, pace: str = "realtime", block_ms: int = 100,
                 clock: Callable[[], float] = time.monotonic,
                 wait: Callable[[threading.Event, float], bool] = threading.Event.wait) -> None:
        """clock() -> seconds and wait(stop_event, seconds) -> True when stopped pace the
        real-time replay; tests inject a virtual clock."""
        super().__init__()
        self.clock, self._wait = clock, wait
        self.cfg = FileSourceConfig(pace=pace, block_ms=block_ms)
        self.info = probe_audio_file(path)
        self.description = (f"file: {Path(self.info.path).name} ({self.info.sample_rate_hz} Hz, "
                            f"{self.info.channels} ch, {self.info.duration_s:.1f} s, {self.cfg.pace})")
        self.dropped_blocks = 0
        self.nonfinite_samples = 0
        self.clipped_samples = 0
        self.samples_out = 0
        self.cut_short = ""   # why the file could not be read to its end ("" when it was)
        self.warning = ""   # what was repaired in the input (truncation, NaN/inf, clipping), once finished

    @property
    def input_path(self) -> str | None:
        return self.info.path

    @property
    def finished(self) -> bool:
        """True once the reader thread has put END_OF_STREAM (or was stopped)."""
        return self._thread is not None and not self._thread.is_alive()

    # ---------------------------------------------------------------- reader thread
    def _stopping(self, stop_event: threading.Event) -> bool:
        return self._stop.is_set() or stop_event.is_set()

    def _run(self, out_q: "queue.Queue", stop_event: threading.Event) -> None:
        resampler = StreamResampler(self.info.sample_rate_hz, self.info.channels)
        frames_per_block = max(1, self.info.sample_rate_hz * self.cfg.block_ms // 1000)
        clock_start = self.clock()
        frames_read = 0
        try:
            with sf.SoundFile(self.info.path) as f:
                while not self._stopping(stop_event):
                    data = f.read(frames_per_block, dtype="float32", always_2d=True)
                    if len(data) == 0:
                        break
                    frames_read += len(data)
                    self._emit(resampler.push(data), out_q, stop_event, clock_start)
            if not self._stopping(stop_event):
                self._emit(resampler.flush(), out_q, stop_event, clock_start)
                # Tolerance: a container's frame count may be an estimate by a few frames.
                if frames_read < self.info.frames - self.info.sample_rate_hz // 100:
                    self._report_cut_short(frames_read, "the file ended early; did it shrink while playing?")
        except (sf.SoundFileError, RuntimeError, OSError, ValueError) as exc:
            self._report_cut_short(frames_read, f"decoding failed: {_one_line(exc)}")
        finally:
            self.nonfinite_samples = resampler.nonfinite_samples
            self.clipped_samples = resampler.clipped_samples
            self._report_repairs()
            self._put(END_OF_STREAM, out_q, stop_event)

    def _report_cut_short(self, frames_read: int, reason: str) -> None:
        rate = self.info.sample_rate_hz
        self.cut_short = (f"{Path(self.info.path).name} could only be read up to {frames_read / rate:.1f} s of "
                          f"{self.info.frames / rate:.1f} s ({reason})")
        if self.status_listener is not None:
            self.status_listener("warning", f"{self.cut_short}; the session ends here")

    def _report_repairs(self) -> None:
        """One "warning" status naming what was wrong with the input and repaired on the fly."""
        problems = []
        if self.info.truncated:
            problems.append(f"the file ends after {self.info.duration_s:.1f} s of the "
                            f"{self.info.declared_frames / self.info.sample_rate_hz:.1f} s its header declares "
                            "(truncated?)")
        if self.nonfinite_samples:
            problems.append(f"{self.nonfinite_samples:,} NaN/inf samples were replaced by silence")
        if self.clipped_samples:
            problems.append(f"{self.clipped_samples:,} samples beyond full scale were clipped")
        self.warning = "; ".join(problems)
        if self.warning and self.status_listener is not None:
            self.status_listener("warning", f"{Path(self.info.path).name}: {self.warning}")

    def _emit(self, audio: np.ndarray, out_q: "queue.Queue", stop_event: threading.Event,
              clock_start: float) -> None:
        if len(audio) == 0:
            return
        block = AudioBlock(start_s=self.samples_out / TARGET_RATE_HZ, samples=float_to_int16(audio))
        self.samples_out += len(audio)
        if self.cfg.pace == "realtime":
            # Release each block when its last sample would have been recorded, measured
            # against the start time so sleep jitter never accumulates.
            due = clock_start + self.samples_out / TARGET_RATE_HZ
            delay = due - self.clock()
            if delay > 0 and self._wait(stop_event, delay):
                return
            if self._stop.is_set():
                return
        self._put(block, out_q, stop_event)

    def _put(self, item: object, out_q: "queue.Queue", stop_event: threading.Event) -> None:
        """Real time: never wait (drop oldest). Fast: wait for room unless stopping.
        END_OF_STREAM always arrives, if need be by dropping the oldest block."""
        if self.cfg.pace == "fast":
            while not self._stopping(stop_event):
                try:
                    out_q.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue
            if item is not END_OF_STREAM:
                return
        self.dropped_blocks += put_dropping_oldest(out_q, item)
