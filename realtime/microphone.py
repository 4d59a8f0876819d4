"""Live microphone source with device-loss recovery.

Threads: PortAudio's callback only copies each block into a bounded raw queue (drop
oldest when full, counted; never blocks). A consumer thread owned by the source
resamples to 16 kHz mono int16, stamps blocks on the sample clock and puts them into
the engine's queue (drop oldest, counted). The same thread opens the stream and, when
the device disappears (stream error, stream finished on its own, or no audio for
stall_timeout_s), reports status_listener("device-lost", msg), retries with
exponential backoff and reports ("running", msg) once audio flows again. The sample
clock advances by the wall time lost, so timestamps keep matching the real world.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

from realtime.devices import DeviceError, InputDevice, _sounddevice, rescan_devices, resolve_input_device
from realtime.resample import StreamResampler, float_to_int16
from realtime.source import END_OF_STREAM, TARGET_RATE_HZ, AudioBlock, ThreadedSource, put_dropping_oldest


@dataclass(frozen=True)
class MicrophoneConfig:
    """block_ms: audio per PortAudio callback; raw_queue_blocks: callback -> consumer queue
    size; max_channels: channels opened (averaged to mono; 'pulse' offers 32 virtual ones);
    reconnect_initial_s doubling up to reconnect_max_s between reopen attempts;
    stall_timeout_s: silence from the driver treated as device loss;
    give_up_after_s: stop retrying after this long (0 = retry until stopped)."""

    block_ms: int = 30
    raw_queue_blocks: int = 100
    max_channels: int = 2
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 8.0
    stall_timeout_s: float = 2.0
    give_up_after_s: float = 0.0

    def __post_init__(self) -> None:
        if not 5 <= self.block_ms <= 1_000:
            raise ValueError(f"block_ms must be in 5-1000 ms, got {self.block_ms}")
        if self.raw_queue_blocks < 2:
            raise ValueError(f"raw_queue_blocks must be >= 2, got {self.raw_queue_blocks}")
        if self.max_channels < 1:
            raise ValueError(f"max_channels must be >= 1, got {self.max_channels}")
        if not 0 < self.reconnect_initial_s <= self.reconnect_max_s:
            raise ValueError("need 0 < reconnect_initial_s <= reconnect_max_s")
        if self.stall_timeout_s <= 0 or self.give_up_after_s < 0:
            raise ValueError("stall_timeout_s must be > 0 and give_up_after_s >= 0")


class MicrophoneSource(ThreadedSource):
    """Live input from a sound device, as 16 kHz mono int16 AudioBlocks.

    device: index, case-insensitive name substring, or None for the default input;
    block_ms is used when no cfg is given (cfg.block_ms otherwise).
    Raises DeviceError (one line listing the inputs) when the device does not exist.
    Counters: dropped_blocks (engine queue full), dropped_raw_blocks (consumer too slow),
    input_overflows (driver overruns), reconnects.
    """

    thread_name = "ved-microphone"

    def __init__(self, device: int | str | None = None, block_ms: int = 30,
                 cfg: MicrophoneConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or MicrophoneConfig(block_ms=block_ms)
        self._device_spec = device
        self.device: InputDevice = resolve_input_device(device)
        self.description = f"mic: {self.device.name} (index {self.device.index})"
        self.dropped_blocks = 0
        self.dropped_raw_blocks = 0
        self.input_overflows = 0
        self.reconnects = 0
        self.stream_rate_hz = 0.0
        self.stream_channels = 0
        self._raw_q: queue.Queue = queue.Queue(maxsize=self.cfg.raw_queue_blocks)
        self._lost = threading.Event()
        self._lost_reason = ""
        self._closing = False
        self._last_audio_wall = time.monotonic()

    @property
    def is_live(self) -> bool:
        return True

    # ---------------------------------------------------------------- PortAudio side
    def _callback(self, indata: np.ndarray, frames: int, time_info, status) -> None:
        if status.input_overflow:
            self.input_overflows += 1
        self._last_audio_wall = time.monotonic()
        self.dropped_raw_blocks += put_dropping_oldest(self._raw_q, indata.copy())

    def _finished(self) -> None:
        if not self._closing:
            self._lost_reason = f"input stream of {self.device.name} ended unexpectedly"
            self._lost.set()

    def _open(self, reconnecting: bool):
        """Open and start an InputStream at the device's native rate (else 16 kHz)."""
        sd = _sounddevice()
        if reconnecting:
            rescan_devices()
            spec = self._device_spec if self._device_spec is None or isinstance(self._device_spec, str) \
                else self.device.name
            self.device = resolve_input_device(spec)
        dev = self.device
        channels = min(dev.max_input_channels, self.cfg.max_channels)
        attempts = [(dev.default_samplerate_hz, channels), (TARGET_RATE_HZ, channels),
                    (dev.default_samplerate_hz, 1), (TARGET_RATE_HZ, 1)]
        errors = []
        for rate, ch in dict.fromkeys(attempts):
            try:
                sd.check_input_settings(device=dev.index, channels=ch, samplerate=rate, dtype="float32")
                stream = sd.InputStream(device=dev.index, channels=ch, samplerate=rate, dtype="float32",
                                        blocksize=int(rate * self.cfg.block_ms / 1000),
                                        callback=self._callback, finished_callback=self._finished)
            except (sd.PortAudioError, ValueError) as exc:
                errors.append(f"{rate:.0f} Hz x{ch}: {' '.join(str(exc).split())}")
                continue
            self._closing = False
            self._lost.clear()
            self._last_audio_wall = time.monotonic()
            stream.start()
            self.stream_rate_hz, self.stream_channels = float(rate), int(ch)
            self.description = f"mic: {dev.name} (index {dev.index}, {rate:.0f} Hz, {ch} ch)"
            return stream
        raise DeviceError(f"cannot open {dev.name}: " + "; ".join(errors))

    def _close(self, stream) -> None:
        self._closing = True
        try:
            stream.abort()
            stream.close()
        except _sounddevice().PortAudioError:
            pass   # the device is already gone; nothing left to release

    # ---------------------------------------------------------------- consumer thread
    def _stopping(self, stop_event: threading.Event) -> bool:
        return self._stop.is_set() or stop_event.is_set()

    def _report(self, state: str, message: str) -> None:
        if self.status_listener is not None:
            self.status_listener(state, message)

    def _run(self, out_q: "queue.Queue", stop_event: threading.Event) -> None:
        clock_samples = 0          # 16 kHz samples on the stream clock
        lost_since: float | None = None
        backoff = self.cfg.reconnect_initial_s
        try:
            sd = _sounddevice()
            while not self._stopping(stop_event):
                try:
                    stream = self._open(reconnecting=lost_since is not None)
                except (sd.PortAudioError, DeviceError, OSError) as exc:
                    if lost_since is None:
                        lost_since = time.monotonic()
                        self._report("device-lost", " ".join(str(exc).split()))
                    if self.cfg.give_up_after_s and time.monotonic() - lost_since > self.cfg.give_up_after_s:
                        self._report("error", f"gave up reconnecting to {self.device.name} after "
                                              f"{self.cfg.give_up_after_s:.0f} s")
                        return
                    self._report("reconnecting", f"retrying {self.device.name} in {backoff:.1f} s")
                    if self._stop.wait(backoff) or stop_event.is_set():
                        return
                    backoff = min(backoff * 2, self.cfg.reconnect_max_s)
                    continue
                if lost_since is not None:
                    # Keep timestamps meaningful: the clock jumps over the time without audio.
                    clock_samples += int((time.monotonic() - lost_since) * TARGET_RATE_HZ)
                    self.reconnects += 1
                    self._report("running", f"audio input resumed on {self.device.name}")
                lost_since = None
                backoff = self.cfg.reconnect_initial_s
                resampler = StreamResampler(self.stream_rate_hz, self.stream_channels)
                reason, clock_samples = self._pump(stream, resampler, out_q, stop_event, clock_samples)
                self._close(stream)
                if reason:
                    lost_since = self._last_audio_wall
                    self._drain_raw()
                    self._report("device-lost", reason)
        finally:
            self.dropped_blocks += put_dropping_oldest(out_q, END_OF_STREAM)

    def _pump(self, stream, resampler: StreamResampler, out_q: "queue.Queue",
              stop_event: threading.Event, clock_samples: int) -> tuple[str, int]:
        """Move audio until stop ("") or device loss (reason). Returns (reason, clock)."""
        while not self._stopping(stop_event):
            if self._lost.is_set() and self._raw_q.empty():
                return self._lost_reason, clock_samples
            try:
                raw = self._raw_q.get(timeout=0.1)
            except queue.Empty:
                silent_s = time.monotonic() - self._last_audio_wall
                if not stream.active:
                    return f"input stream of {self.device.name} stopped", clock_samples
                if silent_s > self.cfg.stall_timeout_s:
                    return f"no audio from {self.device.name} for {silent_s:.1f} s", clock_samples
                continue
            audio = resampler.push(raw)
            if len(audio):
                block = AudioBlock(start_s=clock_samples / TARGET_RATE_HZ, samples=float_to_int16(audio))
                clock_samples += len(audio)
                self.dropped_blocks += put_dropping_oldest(out_q, block)
        return "", clock_samples

    def _drain_raw(self) -> None:
        while True:
            try:
                self._raw_q.get_nowait()
            except queue.Empty:
                return
