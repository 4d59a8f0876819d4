"""The real-time engine: audio source -> segmentation thread -> inference worker -> timeline + listener.

Threads (all talk through bounded queues):
* the source's own thread/callback puts AudioBlocks into `audio_q` (drop-oldest when live);
* the segmentation thread runs the pure StreamSegmenter, sends LevelUpdates (a few per second),
  puts PartialWindows into `partial_q` (drop-oldest, counted) and Utterances into `utterance_q`
  (waits up to utterance_put_timeout_s when full; a drop there is counted and logged);
* the inference worker (realtime/worker.py) classifies and publishes EmotionPredictions.

Everything the listener gets is also written to the timeline (except level updates).
The listener runs on engine threads: it must be cheap and thread-safe.
Torch-free at import time: the models passed in bring torch with them.
"""
from __future__ import annotations

import logging
import math
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Union

import numpy as np

from models.classifier import Classifier
from realtime.metrics import SessionMetrics
from realtime.policy import FallbackPolicy, FallbackPolicyConfig
from realtime.source import END_OF_STREAM, AudioBlock, AudioSource, put_dropping_oldest
from realtime.timeline import TimelineError, TimelineWriter
from realtime.types import (DropNotice, EmotionPrediction, EngineEvent, EngineStatus, LevelUpdate,
                            PartialWindow, SessionSummary, Utterance)
from realtime.vad import SegmenterConfig
from realtime.windows import PartialWindowConfig, StreamSegmenter
from realtime.worker import InferenceWorker, WorkItem

log = logging.getLogger("ved.engine")
Listener = Callable[[EngineEvent], None]
ClassifierOrLoader = Union[Classifier, Callable[[], Classifier]]


class EngineError(RuntimeError):
    """The engine cannot run (e.g. the fallback model fails its warm-up); one line for the user."""


@dataclass(frozen=True)
class EngineConfig:
    """Engine settings. Times in ms unless named otherwise; queue sizes in items.

    partial_queue_items is small on purpose: a stale live window is worth nothing, so
    when the worker falls behind the oldest windows are dropped (and counted).
    """

    hop_ms: int = 500
    window_ms: int = 2_000
    min_window_ms: int = 1_000
    partials_enabled: bool = True
    latency_budget_ms: float = 300.0
    compute_device: str = "auto"
    smoothing_alpha: float = 0.4
    audio_queue_blocks: int = 256
    partial_queue_items: int = 2
    utterance_queue_items: int = 32
    utterance_put_timeout_s: float = 5.0
    level_updates_per_s: float = 10.0
    drop_report_interval_s: float = 1.0
    policy_window_size: int = 20
    policy_max_queue_depth: int = 8
    probe_every_n: int = 4
    recover_after_n: int = 3
    recover_fraction: float = 0.7
    warmup_models: bool = True
    vad: SegmenterConfig = field(default_factory=SegmenterConfig)

    def __post_init__(self) -> None:
        for name in ("audio_queue_blocks", "partial_queue_items", "utterance_queue_items"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.compute_device not in ("auto", "cpu", "cuda") and not self.compute_device.startswith("cuda:"):
            raise ValueError(f"compute_device must be auto, cpu, cuda or cuda:N, got {self.compute_device!r}")
        if not 0.0 < self.smoothing_alpha <= 1.0:
            raise ValueError(f"smoothing_alpha must be in (0, 1], got {self.smoothing_alpha}")
        for name in ("utterance_put_timeout_s", "level_updates_per_s", "drop_report_interval_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        self.window_config()   # validates hop_ms / window_ms / min_window_ms
        self.policy_config()   # validates the latency budget and hysteresis settings

    def window_config(self) -> PartialWindowConfig:
        return PartialWindowConfig(hop_ms=self.hop_ms, window_ms=self.window_ms,
                                   min_window_ms=min(self.min_window_ms, self.window_ms),
                                   sample_rate_hz=self.vad.sample_rate_hz, enabled=self.partials_enabled)

    def policy_config(self) -> FallbackPolicyConfig:
        return FallbackPolicyConfig(budget_ms=self.latency_budget_ms, window_size=self.policy_window_size,
                                    min_samples=min(5, self.policy_window_size),
                                    max_queue_depth=self.policy_max_queue_depth,
                                    probe_every_n=self.probe_every_n, recover_after_n=self.recover_after_n,
                                    recover_fraction=self.recover_fraction)

    def to_dict(self) -> dict:
        """JSON-serialisable settings for the timeline header."""
        return asdict(self)


def block_dbfs(samples: np.ndarray) -> float:
    """RMS level of an int16 block [n] in dBFS, floored at -120."""
    if samples.size == 0:
        return -120.0
    rms = math.sqrt(float(np.mean(np.square(samples, dtype=np.float64)))) / 32768.0
    return max(-120.0, 20.0 * math.log10(max(rms, 1e-6)))


class Engine:
    """See the module docstring. Use as a context manager, or start() ... stop().

    primary may be a Classifier or a zero-argument loader called in start(); a primary that
    fails to load or warm up gives one "error" status and the session runs on the fallback.
    """

    def __init__(self, source: AudioSource, fallback: Classifier, cfg: EngineConfig | None = None,
                 primary: ClassifierOrLoader | None = None, timeline: TimelineWriter | None = None,
                 listener: Listener | None = None) -> None:
        self.source = source
        self.fallback = fallback
        self.cfg = cfg or EngineConfig()
        self._primary_spec = primary
        self.primary: Classifier | None = None
        self.timeline = timeline
        self.listener = listener
        self.metrics = SessionMetrics()
        self.audio_q: queue.Queue = queue.Queue(maxsize=self.cfg.audio_queue_blocks)
        self.partial_q: queue.Queue = queue.Queue(maxsize=self.cfg.partial_queue_items)
        self.utterance_q: queue.Queue = queue.Queue(maxsize=self.cfg.utterance_queue_items)
        self._source_stop = threading.Event()
        self._stopping = threading.Event()
        self._segmentation_done = threading.Event()
        self._abort = threading.Event()
        self._state_lock = threading.Lock()
        self._started = False
        self._stopped = False
        self._latest_utterance_end_s = -math.inf
        self._latest_speech_end_s = -math.inf
        self._threads: list[threading.Thread] = []
        self._worker: InferenceWorker | None = None
        self._listener_errors = 0
        self._final_summary: SessionSummary | None = None
        self._last_drops = DropNotice(0, 0, 0)

    # ------------------------------------------------------------ lifecycle
    def __enter__(self) -> "Engine":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def fallback_active(self) -> bool:
        """True while a requested primary is not the model classifying utterances."""
        return self._primary_spec is not None and (self._worker is None or not self._worker.policy.use_primary())

    def start(self) -> None:
        """Load/warm up models, start the threads and the source. Raises EngineError when the
        fallback cannot run; anything the source raises at start propagates after cleanup."""
        with self._state_lock:
            if self._started:
                raise EngineError("engine already started; create a new Engine for a new session")
            self._started = True
        self._status("starting", f"input: {self.source.description or type(self.source).__name__}")
        self._prepare_models()
        policy = FallbackPolicy(self.cfg.policy_config(), primary_available=self.primary is not None)
        self._worker = InferenceWorker(
            self.utterance_q, self.partial_q, self.fallback, self.primary, policy, self.metrics,
            self._publish, self._segmentation_done, self._stopping, self._abort, self._is_stale,
            fallback_flag=self._primary_spec is not None)
        active = self.primary or self.fallback
        self._status("ready", f"models ready: {active.describe()}"
                     + (f", fallback {self.fallback.describe()}" if self.primary else ""))
        self._threads = [threading.Thread(target=self._worker.run, name="ved-inference", daemon=True),
                         threading.Thread(target=self._segment_loop, name="ved-segmenter", daemon=True)]
        for thread in self._threads:
            thread.start()
        self.source.status_listener = self._on_source_status
        try:
            self.source.start(self.audio_q, self._source_stop)
        except BaseException:
            self.stop()
            raise
        self._status("running", f"listening to {self.source.description or 'input'}")

    def _prepare_models(self) -> None:
        if self.cfg.warmup_models:
            try:
                self.fallback.warmup()
            except Exception as exc:
                message = f"fallback model {self.fallback.name} cannot run: {exc}"
                self._status("error", message)
                raise EngineError(message) from None
        spec = self._primary_spec
        if spec is None:
            return
        name = getattr(spec, "name", "primary")
        try:
            primary = spec if isinstance(spec, Classifier) else spec()
            if self.cfg.warmup_models:
                primary.warmup()
        except Exception as exc:  # BundleError, missing weights, CUDA errors...
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self._status("error", f"primary model {name} unavailable ({first_line}); "
                                  f"running on fallback {self.fallback.name}", fallback_active=True)
            return
        self.primary = primary

    def wait(self, timeout_s: float | None = None) -> bool:
        """True once a finite source is exhausted and every queued item is processed."""
        if self._worker is None:
            return False
        return self._worker.finished.wait(timeout_s)

    def stop(self, timeout_s: float = 10.0) -> SessionSummary:
        """Idempotent. Stops the source, classifies the utterance in progress, joins the threads
        (each within timeout_s), writes the summary line and closes the timeline."""
        with self._state_lock:
            if self._stopped:
                return self._final_summary or self.summary()
            self._stopped = True
        deadline = time.monotonic() + timeout_s
        self._source_stop.set()
        self.source.stop(timeout_s=min(timeout_s, 2.0))
        self._stopping.set()
        for thread in reversed(self._threads):   # segmenter first: the worker waits for its flush
            thread.join(max(0.05, deadline - time.monotonic()))
        self._abort.set()
        abandoned = self.utterance_q.qsize()
        if any(thread.is_alive() for thread in self._threads) or abandoned:
            self.metrics.record_drops(utterances=abandoned)
            self._status("error", f"shutdown timed out after {timeout_s:.0f} s; "
                                  f"{abandoned} queued utterances not classified")
        self._report_drops("end of session")
        summary = self.summary()
        self._final_summary = summary
        self._status("stopped", f"{summary.utterances} utterances, p95 latency {summary.latency_p95_ms:.0f} ms")
        if self.timeline is not None:
            self._write_timeline(self.timeline.write_summary, summary)   # last line of a clean stop
            self.timeline.close()
        self._notify(summary)
        return summary

    @property
    def skipped_stale_partials(self) -> int:
        """Partial windows not classified because their utterance's final result was already due."""
        return self._worker.skipped_stale_partials if self._worker is not None else 0

    def summary(self) -> SessionSummary:
        self.metrics.set_audio_drops(int(getattr(self.source, "dropped_blocks", 0)))
        return self.metrics.summary()

    # ------------------------------------------------------------ segmentation thread
    def _segment_loop(self) -> None:
        segmenter = StreamSegmenter(self.cfg.vad, self.cfg.window_config())
        level_every_s = 1.0 / self.cfg.level_updates_per_s
        next_level_s = 0.0
        reported_at_s = 0.0
        try:
            while True:
                try:
                    block = self.audio_q.get(timeout=0.05)
                except queue.Empty:
                    if self._stopping.is_set():
                        break
                    continue
                if block is END_OF_STREAM:
                    break
                if not isinstance(block, AudioBlock):
                    continue
                self._handle_events(segmenter.push(block))
                end_s = block.start_s + len(block.samples) / self.cfg.vad.sample_rate_hz
                if end_s >= next_level_s:
                    next_level_s = end_s + level_every_s
                    self._notify(LevelUpdate(end_s, round(block_dbfs(block.samples), 1), segmenter.in_speech))
                if end_s - reported_at_s >= self.cfg.drop_report_interval_s:
                    reported_at_s = end_s
                    self._report_drops("queue full", time_s=end_s)
            self._drain_after_stop(segmenter)
            self._handle_events(segmenter.flush())
        except Exception as exc:  # keep the session (and its timeline) alive enough to stop cleanly
            log.exception("segmentation thread failed")
            self._status("error", f"audio processing failed: {type(exc).__name__}: {exc}")
        finally:
            self._segmentation_done.set()

    def _drain_after_stop(self, segmenter: StreamSegmenter) -> None:
        """Audio already captured when stop() was called still belongs to the session."""
        while True:
            try:
                block = self.audio_q.get_nowait()
            except queue.Empty:
                return
            if isinstance(block, AudioBlock):
                self._handle_events(segmenter.push(block))

    def _handle_events(self, events: list) -> None:
        now = time.monotonic()
        for event in events:
            if isinstance(event, Utterance):
                self._queue_utterance(WorkItem("utterance", event.start_s, event.end_s, event.audio, now,
                                                event.cut_at_max))
            elif isinstance(event, PartialWindow) and not self._stopping.is_set():
                item = WorkItem("partial", event.start_s, event.end_s, event.audio, now)
                if put_dropping_oldest(self.partial_q, item):
                    self.metrics.record_drops(partials=1)

    def _queue_utterance(self, item: WorkItem) -> None:
        self._latest_utterance_end_s = max(self._latest_utterance_end_s, item.end_s)
        if not item.cut_at_max:
            self._latest_speech_end_s = max(self._latest_speech_end_s, item.end_s)
        try:
            self.utterance_q.put(item, timeout=self.cfg.utterance_put_timeout_s)
        except queue.Full:
            self.metrics.record_drops(utterances=1)
            message = (f"utterance {item.start_s:.2f}-{item.end_s:.2f} s dropped: the model is "
                       f"{self.cfg.utterance_queue_items} utterances behind")
            log.warning(message)
            self._status("error", message)
            self._report_drops("utterance queue full", time_s=item.end_s, force=True)

    def _is_stale(self, item: WorkItem) -> bool:
        """A partial window whose utterance is already queued: it lies wholly inside it, or it
        starts inside an utterance that ended (windows continue through the VAD hangover)."""
        return item.kind == "partial" and (item.end_s <= self._latest_utterance_end_s + 1e-6
                                           or item.start_s < self._latest_speech_end_s)

    # ------------------------------------------------------------ publishing
    def _report_drops(self, reason: str, time_s: float = 0.0, force: bool = False) -> None:
        notice = self.metrics.set_audio_drops(int(getattr(self.source, "dropped_blocks", 0)))
        if notice == self._last_drops and not force:
            return
        self._last_drops = notice
        if self.timeline is not None:
            self._write_timeline(self.timeline.write_drops, notice, time_s=time_s, reason=reason)
        self._notify(notice)

    def _on_source_status(self, state: str, message: str) -> None:
        self._status(state, message)

    def _status(self, state: str, message: str, fallback_active: bool | None = None) -> None:
        active = self.fallback_active if fallback_active is None else fallback_active
        model = self.fallback.name if active or self.primary is None else self.primary.name
        self._publish(EngineStatus(state, message, model=model, fallback_active=active))

    def _publish(self, event: object) -> None:
        """Timeline first (the record must survive a crash), then the listener."""
        if self.timeline is not None:
            if isinstance(event, EmotionPrediction):
                self._write_timeline(self.timeline.write_prediction, event)
            elif isinstance(event, EngineStatus):
                self._write_timeline(self.timeline.write_status, event)
        self._notify(event)

    def _write_timeline(self, write: Callable[..., None], *args: object, **kwargs: object) -> None:
        """A failed write (disk full) is reported once; classification and the listener go on."""
        try:
            write(*args, **kwargs)
        except TimelineError as exc:
            self._notify(EngineStatus("error", str(exc), model=self.fallback.name,
                                      fallback_active=self.fallback_active))

    def _notify(self, event: object) -> None:
        if self.listener is None:
            return
        try:
            self.listener(event)
        except Exception:  # a broken display must not stop the recording
            self._listener_errors += 1
            if self._listener_errors == 1:
                log.exception("engine listener raised; further listener errors are counted only")
