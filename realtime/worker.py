"""The engine's inference worker thread: queued spans in, EmotionPredictions out.

It takes utterances first (final results matter most), then partial windows. Utterances go
to whichever model the FallbackPolicy picks; partial windows likewise to the primary's
cheapest branch (`partial_primary`, e.g. tiny.en and its heads for the Whisper ensemble) or
the fallback, so live traces and final results come from one model family while the
primary keeps its budgets.
An utterance a Speculator already classified during the VAD hangover (same span, same
model) takes that result instead of running the model again.
Latency runs from `WorkItem.available_at` (the engine's clock, time.monotonic unless a
test injects one, stamped by the segmentation thread when the span's end was available)
to the moment the probabilities are ready.
A primary (or its branch) that raises (including running out of GPU memory) is disabled
with one status message and the item is re-run on the fallback; the fallback failing on an item is
reported and the item skipped, the worker carries on.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from models.classifier import Classifier
from models.labels import EMOTIONS
from realtime.metrics import SessionMetrics
from realtime.policy import FALLBACK, PRIMARY, UTTERANCE, FallbackPolicy, LatencyObservation, PolicySwitch
from realtime.types import EmotionPrediction, EngineStatus

log = logging.getLogger("ved.engine")
POLL_S = 0.01


@dataclass(frozen=True)
class WorkItem:
    """One span to classify. audio: float32 [samples] at 16 kHz; available_at: engine clock (s);
    cut_at_max: an utterance the segmenter cut at max length (speech goes on);
    emitted_s: where the stream stood (end of the audio block being segmented) when it was made."""

    kind: str
    start_s: float
    end_s: float
    audio: np.ndarray = field(repr=False)
    available_at: float
    cut_at_max: bool = False
    emitted_s: float = 0.0


def is_out_of_memory(exc: BaseException) -> bool:
    """torch.cuda.OutOfMemoryError and allocator RuntimeErrors, without importing torch."""
    return "out of memory" in str(exc).lower() or type(exc).__name__ == "OutOfMemoryError"


def reorder_to_emotions(labels: tuple[str, ...]) -> np.ndarray | None:
    """Column indices mapping a classifier's label order to EMOTIONS (None when identical)."""
    if tuple(labels) == EMOTIONS:
        return None
    missing = set(EMOTIONS) - set(labels)
    if missing:
        raise ValueError(f"classifier labels {labels} lack {sorted(missing)}")
    return np.array([list(labels).index(name) for name in EMOTIONS])


class InferenceWorker:
    """Runs in its own thread (`run`). Talks to the engine only through the two bounded
    queues, the events, and `publish` (which writes the timeline and calls the listener).

    is_stale(item) -> True for a partial window an already queued utterance covers.
    fallback_flag: mark predictions `fallback=True` when the fallback model made them
    (only meaningful when a primary was requested).
    partial_primary: the model for partial windows when the policy picks the primary (the
    primary's cheapest branch), None: partial windows always go to the fallback.
    clock() -> seconds (monotonic); on_partial_shown(item, lag_s): a partial result was
    published lag_s after item.available_at (deadline feedback for the window scheduler).
    speculator: set by the engine when speculation is on (see realtime/speculation.py).
    """

    def __init__(self, utterance_q: queue.Queue, partial_q: queue.Queue, fallback: Classifier,
                 primary: Classifier | None, policy: FallbackPolicy, metrics: SessionMetrics,
                 publish: Callable[[object], None], segmentation_done: threading.Event,
                 stopping: threading.Event, abort: threading.Event,
                 is_stale: Callable[[WorkItem], bool], fallback_flag: bool,
                 clock: Callable[[], float] = time.monotonic,
                 on_partial_shown: Callable[[WorkItem, float], None] | None = None,
                 partial_primary: Classifier | None = None) -> None:
        self.utterance_q = utterance_q
        self.partial_q = partial_q
        self.fallback = fallback
        self.primary = primary
        self.partial_primary = partial_primary if primary is not None else None
        self.policy = policy
        self.metrics = metrics
        self.publish = publish
        self.segmentation_done = segmentation_done
        self.stopping = stopping
        self.abort = abort
        self.is_stale = is_stale
        self.fallback_flag = fallback_flag
        self.clock = clock
        self.on_partial_shown = on_partial_shown
        self.speculator = None
        self.finished = threading.Event()
        self.running_kind: str | None = None   # kind of the item being classified
        self.speaker_reset = threading.Event()
        self.skipped_stale_partials = 0
        self._orders = {id(fallback): reorder_to_emotions(fallback.labels)}
        for model in (primary, self.partial_primary):
            if model is not None:
                self._orders[id(model)] = reorder_to_emotions(model.labels)

    def queue_depth(self) -> int:
        return self.utterance_q.qsize() + self.partial_q.qsize()

    def speculation_allowed(self) -> bool:
        """No utterance queued or being classified: speculative work may start. Partial windows
        may run meanwhile; the speculation thread runs at a lower OS priority than this one."""
        return self.running_kind != "utterance" and self.utterance_q.empty()

    def speculative_model(self) -> Classifier:
        """The model the policy would give the next utterance (nothing counted)."""
        primary = self.primary
        return primary if primary is not None and self.policy.peek() == PRIMARY else self.fallback

    def run(self) -> None:
        try:
            while not self.abort.is_set():
                item = self._next_item()
                if item is not None:
                    self.running_kind = item.kind
                    try:
                        self._process(item)
                    finally:
                        self.running_kind = None
                elif self.segmentation_done.is_set() and self.utterance_q.empty() and self.partial_q.empty():
                    break
        finally:
            self.finished.set()

    def _next_item(self) -> WorkItem | None:
        try:
            return self.utterance_q.get_nowait()
        except queue.Empty:
            pass
        try:
            item = self.partial_q.get(timeout=POLL_S)
        except queue.Empty:
            return None
        if self.stopping.is_set():
            self.metrics.record_drops(partials=1)
            return None
        if self.is_stale(item):
            # The utterance covering this window is already queued: its live trace point
            # would arrive after the final result. Skipped by design, not a capacity drop.
            self.skipped_stale_partials += 1
            return None
        return item

    def apply_speaker_reset(self) -> None:
        """Before each job: the primary forgets its speaker baseline when Engine.reset_speaker asked
        (from any thread) since the last job."""
        if self.speaker_reset.is_set():
            self.speaker_reset.clear()
            for model in (self.primary, self.partial_primary):
                if model is not None:
                    model.reset_session()

    def _process(self, item: WorkItem) -> None:
        self.apply_speaker_reset()
        primary = self.primary if item.kind == UTTERANCE else self.partial_primary
        watched = primary is not None   # the policy hears only about kinds it routes
        use_primary = watched and self.policy.route(item.kind).model == PRIMARY
        model = primary if use_primary else self.fallback
        probs = None
        if self.speculator is not None and item.kind == "utterance" and not model.learns_speaker:
            # a model that learns the speaker adds the final utterance to its baseline below; its
            # speculative pass already computed the encoder states, so that costs only the heads
            probs = self.speculator.claim(item, model)
        if probs is None:
            probs = self._predict(model, item)
        if probs is None and use_primary:
            use_primary, model = False, self.fallback
            probs = self._predict(model, item)
        if probs is None:
            return
        latency_s = self.clock() - item.available_at
        latency_ms = latency_s * 1000.0
        depth = self.queue_depth()
        order = self._orders[id(model)]
        if order is not None:
            probs = probs[order]
        prediction = EmotionPrediction.from_probs(
            item.start_s, item.end_s, probs, model=model.name, latency_ms=round(latency_ms, 1),
            kind=item.kind, queue_depth=depth, fallback=self.fallback_flag and not use_primary,
            uncertain_below=model.uncertain_below)
        self.metrics.record_prediction(prediction)
        self.publish(prediction)
        if item.kind == "partial" and self.on_partial_shown is not None:
            self.on_partial_shown(item, latency_s)
        if not watched:
            return
        observed = LatencyObservation(PRIMARY if use_primary else FALLBACK, latency_ms, depth, item.kind)
        for switch in self.policy.push(observed):
            self._announce(switch)

    @staticmethod
    def compute(model: Classifier, item: WorkItem, final: bool = False) -> np.ndarray:
        """-> probabilities [len(model.labels)] of one span; raises on failure or an invalid output.
        The one model call both the worker and the Speculator make. final: the span is a finished
        utterance of the session's speaker (Classifier.predict_utterance), not a live window or a
        speculative span."""
        call = model.predict_utterance if final else model.predict
        out = np.asarray(call([item.audio]), dtype=np.float64)
        if out.ndim != 2 or out.shape[0] != 1 or not np.all(np.isfinite(out)):
            raise ValueError(f"predict returned an invalid array of shape {out.shape}")
        return out[0]

    def _predict(self, model: Classifier, item: WorkItem) -> np.ndarray | None:
        """-> probabilities [len(model.labels)], or None after reporting a failure."""
        try:
            return self.compute(model, item, final=item.kind == UTTERANCE)
        except Exception as exc:  # a model must never take the engine down
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".strip()
            if model is self.primary or model is self.partial_primary:
                what = "ran out of GPU memory" if is_out_of_memory(exc) else "failed"
                message = f"primary model {model.name} {what} ({reason}); continuing on fallback " \
                          f"{self.fallback.name}"
                log.warning(message)
                self.policy.disable_primary(message)
                self.primary = self.partial_primary = None
                self.publish(EngineStatus("error", message, model=self.fallback.name, fallback_active=True))
            else:
                self.metrics.record_failure()
                message = f"model {model.name} failed on {item.kind} {item.start_s:.2f}-{item.end_s:.2f} s " \
                          f"({reason}); skipped"
                log.warning(message)
                self.publish(EngineStatus("error", message, model=model.name,
                                          fallback_active=not self.policy.use_primary()))
            return None

    def _announce(self, switch: PolicySwitch) -> None:
        to_fallback = switch.to_model == FALLBACK
        primary = self.primary if switch.kind == UTTERANCE else self.partial_primary
        model = self.fallback if to_fallback or primary is None else primary
        verb = "switched to fallback" if to_fallback else "back on primary"
        message = f"{'' if switch.kind == UTTERANCE else 'live traces '}{verb} {model.name}: {switch.reason}"
        log.info(message)
        # The status bar's model is the one making final results.
        active = self.fallback if not self.policy.use_primary() or self.primary is None else self.primary
        self.publish(EngineStatus("running", message, model=active.name, fallback_active=active is self.fallback))
