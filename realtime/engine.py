"""The real-time engine: audio source -> segmentation thread -> inference worker -> timeline + listener.

Threads (all talk through bounded queues):
* the source's own thread/callback puts AudioBlocks into `audio_q` (drop-oldest when live);
* the segmentation thread runs the pure StreamSegmenter, sends LevelUpdates (a few per second),
  puts PartialWindows into `partial_q` (drop-oldest, counted) and Utterances into `utterance_q`
  (waits up to utterance_put_timeout_s when full; a drop there is counted and logged);
* the inference worker (realtime/worker.py) classifies and publishes EmotionPredictions;
* the speculation thread (realtime/speculation.py, when cfg.speculate) classifies an utterance
  during the VAD hangover, once its samples are fixed, when no utterance is queued or running.

Deadline feedback: after each live result the worker leaves a `PartialShown` for the
segmentation thread, which passes it to the window scheduler before the next block.

A thread that dies (any exception, MemoryError included) ends the session like stop():
one "error" status, the source stopped, queued work finished, the summary written;
`failure` then holds the cause (main.py turns it into one error line and an exit code).

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
from typing import Callable, Protocol, Union, runtime_checkable

import numpy as np

from models.classifier import Classifier
from realtime.engine_config import EngineConfig, EngineError
from realtime.metrics import SessionMetrics
from realtime.policy import FallbackPolicy
from realtime.source import END_OF_STREAM, AudioBlock, AudioSource, put_dropping_oldest
from realtime.speculation import Speculator
from realtime.timeline import TimelineError, TimelineWriter
from realtime.types import (DropNotice, EmotionPrediction, EngineEvent, EngineStatus, LevelUpdate,
                            PartialShown, PartialWindow, SessionSummary, SpeechResumed, Utterance,
                            UtteranceFixed)
from realtime.windows import StreamSegmenter
from realtime.worker import InferenceWorker, WorkItem

__all__ = ["Engine", "EngineConfig", "EngineError", "EngineFailure", "block_dbfs"]

log = logging.getLogger("ved.engine")
Listener = Callable[[EngineEvent], None]
@runtime_checkable
class NamedLoader(Protocol):
    """Deferred model loading (realtime.wiring.primary_loader): calling it loads the model; `name`
    (the folder's) names it in the status line when loading fails."""

    name: str

    def __call__(self) -> Classifier: ...


ClassifierOrLoader = Union[Classifier, NamedLoader, Callable[[], Classifier]]


class EngineFailure(RuntimeError):
    """An engine thread died; str() is one line for the user, `cause` the exception, `thread`
    the thread's role ("segmenter", "inference" or "speculation")."""

    def __init__(self, thread: str, cause: BaseException) -> None:
        text = " ".join(str(cause).split()) or "no message"
        super().__init__(f"internal error in the {thread} thread ({type(cause).__name__}: {text}); "
                         "session stopped, timeline kept")
        self.thread = thread
        self.cause = cause


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
    clock: seconds, monotonic; latencies are measured on it (tests inject one).
    """

    def __init__(self, source: AudioSource, fallback: Classifier, cfg: EngineConfig | None = None,
                 primary: ClassifierOrLoader | None = None, timeline: TimelineWriter | None = None,
                 listener: Listener | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.source = source
        self.clock = clock
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
        self._speculator: Speculator | None = None
        self._shown: PartialShown | None = None   # latest deadline feedback, taken by the segmenter
        self._failure: EngineFailure | None = None
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
        worker = self._worker = InferenceWorker(
            self.utterance_q, self.partial_q, self.fallback, self.primary, policy, self.metrics,
            self._publish, self._segmentation_done, self._stopping, self._abort, self._is_stale,
            fallback_flag=self._primary_spec is not None, clock=self.clock,
            on_partial_shown=self._on_partial_shown if self.cfg.partial_deadlines else None,
            partial_primary=self.live_trace_model())
        active = self.primary or self.fallback
        live = worker.partial_primary
        self._status("ready", f"models ready: {active.describe()}"
                     + (f", live traces {live.name}" if live is not None and live is not active else "")
                     + (f", fallback {self.fallback.describe()}" if self.primary else ""))
        # Joined in reverse order on stop: segmenter first (the worker waits for its flush),
        # then the worker, then the speculation thread (the worker may wait for its result).
        self._threads = []
        if self.cfg.speculate:
            self._speculator = worker.speculator = Speculator(
                worker.compute, worker.speculative_model, worker.speculation_allowed, self.metrics,
                done=lambda: self._abort.is_set() or worker.finished.is_set(), nice=self.cfg.speculation_nice)
            self._threads.append(self._thread("speculation", self._speculator.run))
        self._threads += [self._thread("inference", worker.run), self._thread("segmenter", self._segment_loop)]
        for thread in self._threads:
            thread.start()
        self.source.status_listener = self._on_source_status
        try:
            self.source.start(self.audio_q, self._source_stop)
        except BaseException:
            self.stop()
            raise
        self._status("running", f"listening to {self.source.description or 'input'}")

    def live_trace_model(self) -> Classifier | None:
        """The model for partial windows while the primary is in use (its cheapest branch),
        None when they always go to the fallback (no primary, or live_traces_on_primary off)."""
        if self.primary is None or not self.cfg.live_traces_on_primary:
            return None
        return self.primary.cheapest_branch()

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
        name = spec.name if isinstance(spec, (Classifier, NamedLoader)) else "primary"
        try:
            primary = spec if isinstance(spec, Classifier) else spec()
            if self.cfg.warmup_models:
                primary.warmup()
        except Exception as exc:  # BundleError, missing weights, CUDA errors...
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self._status("error", f"primary model {name} unavailable ({first_line}); "
                                  f"running on fallback {self.fallback.name}", fallback_active=True)
            return
        primary.reset_session()   # a new session: the speaker baseline (if any) starts empty
        self.primary = primary

    def reset_speaker(self) -> None:
        """The speaker changed: the primary forgets the speaker baseline it learnt (models/baseline.py)
        before its next classification. Safe from any thread; nothing happens for models without one."""
        if self._worker is not None:
            self._worker.speaker_reset.set()

    def _thread(self, role: str, body: Callable[[], None]) -> threading.Thread:
        def guarded() -> None:
            try:
                body()
            except BaseException as exc:  # noqa: BLE001 - MemoryError too: the session must end, not hang
                self._fail(role, exc)
        return threading.Thread(target=guarded, name=f"ved-{role}", daemon=True)

    def _fail(self, role: str, exc: BaseException) -> None:
        """A thread died: end the session as stop() would, keeping what was recorded."""
        log.debug("%s thread failed", role, exc_info=exc)   # the traceback, for debugging only
        with self._state_lock:
            first = self._failure is None
            if first:
                self._failure = EngineFailure(role, exc)
        if first:
            self._status("error", str(self._failure))
        self._source_stop.set()
        self._stopping.set()

    @property
    def failure(self) -> EngineFailure | None:
        """Set when an engine thread died (the session then ends on its own)."""
        return self._failure

    def wait(self, timeout_s: float | None = None) -> bool:
        """True once a finite source is exhausted and every queued item is processed, or an
        engine thread died (see `failure`)."""
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
            if self._failure is None:   # else the failure was the one error line
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
        self.metrics.set_audio_drops(int(self.source.dropped_blocks))
        return self.metrics.summary()

    # ------------------------------------------------------------ segmentation thread
    def _segment_loop(self) -> None:
        """Thread body; an exception ends the session (see _fail). The segmenter is built here:
        its buffers are sized by the settings."""
        try:
            segmenter = StreamSegmenter(self.cfg.vad, self.cfg.window_config())
            level_every_s = 1.0 / self.cfg.level_updates_per_s
            next_level_s = 0.0
            reported_at_s = 0.0
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
                end_s = self._push_block(segmenter, block)
                if end_s >= next_level_s:
                    next_level_s = end_s + level_every_s
                    self._notify(LevelUpdate(end_s, round(block_dbfs(block.samples), 1), segmenter.in_speech))
                if end_s - reported_at_s >= self.cfg.drop_report_interval_s:
                    reported_at_s = end_s
                    self._report_drops("queue full", time_s=end_s)
            self._drain_after_stop(segmenter)
            self._handle_events(segmenter.flush(), segmenter.scheduler.time_s)
        finally:
            self._segmentation_done.set()

    def _push_block(self, segmenter: StreamSegmenter, block: AudioBlock) -> float:
        """Deadline feedback first, then the block; returns the block's end (stream seconds)."""
        shown, self._shown = self._shown, None
        if shown is not None:
            segmenter.push(shown)
        end_s = block.start_s + len(block.samples) / self.cfg.vad.sample_rate_hz
        self._handle_events(segmenter.push(block), end_s)
        return end_s

    def _drain_after_stop(self, segmenter: StreamSegmenter) -> None:
        """Audio already captured when stop() was called still belongs to the session."""
        while True:
            try:
                block = self.audio_q.get_nowait()
            except queue.Empty:
                return
            if isinstance(block, AudioBlock):
                self._push_block(segmenter, block)

    def _handle_events(self, events: list, stream_s: float) -> None:
        """stream_s: where the stream stands (end of the block just segmented)."""
        now = self.clock()
        for event in events:
            if isinstance(event, Utterance):
                self._queue_utterance(WorkItem("utterance", event.start_s, event.end_s, event.audio, now,
                                               event.cut_at_max, emitted_s=stream_s))
            elif isinstance(event, PartialWindow) and not self._stopping.is_set():
                item = WorkItem("partial", event.start_s, event.end_s, event.audio, now, emitted_s=stream_s)
                if put_dropping_oldest(self.partial_q, item):
                    self.metrics.record_drops(partials=1)
            elif self._speculator is not None and isinstance(event, UtteranceFixed):
                self._speculator.offer(WorkItem("utterance", event.start_s, event.end_s, event.audio, now,
                                                emitted_s=stream_s))
            elif self._speculator is not None and isinstance(event, SpeechResumed):
                self._speculator.cancel()

    def _on_partial_shown(self, item: WorkItem, lag_s: float) -> None:
        """Worker thread: a live result is out lag_s after its window was made (stream seconds
        at real-time pace). One slot: only the latest matters to the scheduler."""
        self._shown = PartialShown(end_s=item.end_s, shown_s=item.emitted_s + lag_s)

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
        notice = self.metrics.set_audio_drops(int(self.source.dropped_blocks))
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
