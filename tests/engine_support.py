"""Helpers for the engine, timeline, main and crash tests (not a test module).

Real audio: EmoDB clips joined with silence. Real models: the trained default bundle
(models/default/) when present, else an untrained-but-real registry Conformer saved as a
bundle with models.bundle.save_bundle (plumbing tests only: its probabilities mean nothing).
"""
from __future__ import annotations

import csv
import math
import os
import queue
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import soundfile as sf

from models.classifier import Classifier
from realtime.resample import float_to_int16
from realtime.source import END_OF_STREAM, AudioBlock, AudioSource, put_dropping_oldest

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUNDLE = REPO_ROOT / "models" / "default"
EMODB_RATE_HZ = 22_050


def emodb_clips(emodb_dir: Path, count: int, offset: int = 0) -> list[Path]:
    """The first `count` EmoDB clips (after `offset`) of the six CREMA-D emotions, sorted by name."""
    with open(emodb_dir / "labels.csv", newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["emotion"] != "boredom"]
    rows.sort(key=lambda r: r["file"])
    return [emodb_dir / r["file"] for r in rows[offset:offset + count]]


def write_speech_file(emodb_dir: Path, out: Path, clips: int, gap_s: float = 1.5, joined: bool = False,
                      lead_s: float = 0.5, offset: int = 0) -> Path:
    """Write a WAV (22,050 Hz) of `clips` EmoDB clips: separated by `gap_s` of silence, or, when
    joined=True, back to back (one long utterance). A little noise keeps it realistic."""
    rng = np.random.default_rng(1)
    parts = [np.zeros(int(lead_s * EMODB_RATE_HZ), np.float32)]
    for path in emodb_clips(emodb_dir, clips, offset):
        audio, rate = sf.read(str(path), dtype="float32")
        assert rate == EMODB_RATE_HZ, f"unexpected rate {rate} in {path}"
        parts.append(audio)
        if not joined:
            parts.append(np.zeros(int(gap_s * EMODB_RATE_HZ), np.float32))
    parts.append(np.zeros(int(gap_s * EMODB_RATE_HZ), np.float32))
    audio = np.concatenate(parts)
    audio += (1e-4 * rng.standard_normal(len(audio))).astype(np.float32)
    sf.write(str(out), audio, EMODB_RATE_HZ, subtype="PCM_16")
    return out


def write_silence_file(out: Path, seconds: float = 3.0) -> Path:
    rng = np.random.default_rng(2)
    sf.write(str(out), (1e-4 * rng.standard_normal(int(seconds * 16_000))).astype(np.float32), 16_000)
    return out


def make_bundle(folder: Path) -> Path:
    """$VED_TEST_BUNDLE if set, else the default bundle when trained, else a small untrained
    Conformer bundle written to `folder`."""
    override = os.environ.get("VED_TEST_BUNDLE")
    if override:
        return Path(override)
    if (DEFAULT_BUNDLE / "bundle.json").is_file() or (DEFAULT_BUNDLE / "ensemble.json").is_file():
        return DEFAULT_BUNDLE
    from models.bundle import save_bundle
    from models.registry import build_model

    target = folder / "tiny-conformer"
    if not (target / "bundle.json").is_file():
        model = build_model("conformer-v1", d_model=64, n_blocks=1, n_heads=2, subsampling_channels=16)
        save_bundle(target, model, "conformer-v1", meta={"training": {"note": "untrained, tests only"}})
    return target


class FakeClock:
    """An injected engine clock (seconds) that moves only when told: latencies in a test then
    depend on what the code did, not on how fast this machine is."""

    def __init__(self) -> None:
        self._now = 1_000.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


class SlowClassifier(Classifier):
    """Wraps a real Classifier and sleeps `delay_s(call_index)` seconds before each prediction
    (with `clock`: advances that FakeClock instead of sleeping).

    Also records every call (audio length in samples) so tests can see what ran where;
    fail_at: call indices that raise RuntimeError(message) instead.
    """

    def __init__(self, inner: Classifier, name: str, delay_s: Callable[[int], float] = lambda i: 0.0,
                 fail_at: Sequence[int] = (), message: str = "simulated failure",
                 clock: FakeClock | None = None) -> None:
        self.inner = inner
        self.name = name
        self.labels = inner.labels
        self.device = inner.device
        self.delay_s = delay_s
        self.fail_at = set(fail_at)
        self.message = message
        self.clock = clock
        self.calls: list[int] = []
        self._lock = threading.Lock()

    def warmup(self, seconds: float = 1.0) -> None:
        self.inner.warmup(seconds)

    def predict(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        with self._lock:
            index = len(self.calls)
            self.calls.append(len(waveforms[0]))
        delay = self.delay_s(index)
        if delay > 0 and self.clock is not None:
            self.clock.advance(delay)
        elif delay > 0:
            time.sleep(delay)
        if index in self.fail_at:
            raise RuntimeError(self.message)
        return self.inner.predict(waveforms)


class EventLog:
    """Thread-safe listener that keeps every engine event."""

    def __init__(self) -> None:
        self.events: list[object] = []
        self._lock = threading.Lock()

    def __call__(self, event: object) -> None:
        with self._lock:
            self.events.append(event)

    def of(self, kind: type) -> list:
        with self._lock:
            return [e for e in self.events if isinstance(e, kind)]


class PacedArraySource(AudioSource):
    """Test source: a 16 kHz float32 array released as int16 AudioBlocks at `speed` x real time
    from its own thread (speed=inf: as fast as the queue takes them, never dropping).

    Like a live source at finite speed: when the queue is full the oldest block is dropped
    and counted.
    """

    def __init__(self, audio: np.ndarray, speed: float = 8.0, block_ms: int = 30, hold_after_s: float | None = None) -> None:
        """hold_after_s: release only that much audio, then wait for stop() (no end of stream),
        like a microphone the user stops mid-sentence."""
        super().__init__()
        self.hold_after_s = hold_after_s
        self.audio = audio
        self.speed = speed
        self.block = 16 * block_ms
        self.description = f"test array ({len(audio) / 16_000:.1f} s at {speed}x)"
        self.dropped_blocks = 0
        self.samples_out = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @classmethod
    def from_file(cls, path: Path, **kwargs) -> "PacedArraySource":
        import soxr

        audio, rate = sf.read(str(path), dtype="float32")
        return cls(soxr.resample(audio, rate, 16_000).astype(np.float32), **kwargs)

    def start(self, out_q: queue.Queue, stop_event: threading.Event) -> None:
        self._thread = threading.Thread(target=self._run, args=(out_q, stop_event), daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self, out_q: queue.Queue, stop_event: threading.Event) -> None:
        started = time.monotonic()
        end = len(self.audio) if self.hold_after_s is None else int(self.hold_after_s * 16_000)
        for offset in range(0, end, self.block):
            if self._stop.is_set() or stop_event.is_set():
                return
            piece = float_to_int16(self.audio[offset:min(offset + self.block, end)])
            block = AudioBlock(start_s=offset / 16_000, samples=piece)
            self.samples_out = offset + len(piece)
            if math.isinf(self.speed):
                while not (self._stop.is_set() or stop_event.is_set()):
                    try:
                        out_q.put(block, timeout=0.05)
                        break
                    except queue.Full:
                        continue
                continue
            delay = started + self.samples_out / 16_000 / self.speed - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            self.dropped_blocks += put_dropping_oldest(out_q, block)
        if self.hold_after_s is not None:
            self._stop.wait()
            return
        self.dropped_blocks += put_dropping_oldest(out_q, END_OF_STREAM)


def wait_until(condition: Callable[[], bool], timeout_s: float = 60.0) -> bool:
    """Poll condition until it holds; False after timeout_s (a bound against hangs, not a timing claim)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def offline_utterances(audio: np.ndarray, cfg=None) -> list:
    """Utterances the engine's segmenter finds in a whole 16 kHz float32 array."""
    from realtime.types import Utterance
    from realtime.windows import StreamSegmenter

    segmenter = StreamSegmenter(cfg)
    events = segmenter.push(float_to_int16(audio)) + segmenter.flush()
    return [e for e in events if isinstance(e, Utterance)]


def offline_partial_windows(audio: np.ndarray, window_cfg=None) -> list:
    """Partial windows the engine's segmenter schedules over a whole 16 kHz float32 array."""
    from realtime.types import PartialWindow
    from realtime.windows import StreamSegmenter

    segmenter = StreamSegmenter(None, window_cfg)
    events = segmenter.push(float_to_int16(audio)) + segmenter.flush()
    return [e for e in events if isinstance(e, PartialWindow)]
