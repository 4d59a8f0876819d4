"""Classifying an utterance during the VAD hangover, on a low-priority thread of its own.

The segmenter says when an utterance's samples can no longer change (`UtteranceFixed`);
the engine offers that span here (`offer`). The speculation thread classifies it once no
utterance is queued or being classified, so a speculative job never waits in front of an
utterance, and the OS runs the thread `nice` steps below the others, so a partial window or
utterance that runs meanwhile gets the CPU first. When the `Utterance` arrives, the worker
`claim`s the result: same span and same model -> the result is used (the same audio
array through the same model call, so it is what the worker would have computed);
otherwise it is discarded. `SpeechResumed` voids the offer (`cancel`). Discards are
counted in SessionMetrics, never logged. Only the state below is shared, under one lock.

Limit: on a GPU both threads share the device; a real job that starts while a speculative
one runs waits behind its kernels, and both hold memory at once.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np

from models.classifier import Classifier
from realtime.metrics import SessionMetrics

POLL_S = 0.01


@dataclass
class _Job:
    """One speculative classification: audio span, model, and (once done) probabilities."""

    item: object   # realtime.worker.WorkItem
    model: Classifier
    done: bool = False
    probs: np.ndarray | None = None
    void: bool = False


def same_span(a, b) -> bool:
    """Both WorkItems cover the same samples (times come from the same frame arithmetic)."""
    return a.start_s == b.start_s and a.end_s == b.end_s and len(a.audio) == len(b.audio)


def lower_thread_priority(steps: int) -> None:
    """Make the calling thread `steps` nicer (Linux: per thread). Threads it starts later,
    e.g. torch's OpenMP team, inherit it. Best effort: elsewhere it does nothing."""
    if steps <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + steps))
    except OSError:
        pass


class Speculator:
    """See the module docstring. `run` is the thread body; the other methods are called by the
    segmentation thread (offer, cancel) and the inference worker (claim).

    compute(model, item) -> probabilities [len(model.labels)] (raises on failure);
    choose_model() -> the model the policy would give the next utterance;
    worker_idle() -> True when speculative work may start (no utterance queued or running);
    done: set when the speculation thread should exit (worker finished, or abort).
    """

    def __init__(self, compute: Callable[[Classifier, object], np.ndarray], choose_model: Callable[[], Classifier],
                 worker_idle: Callable[[], bool], metrics: SessionMetrics, done: Callable[[], bool],
                 nice: int = 5) -> None:
        self._compute = compute
        self._choose_model = choose_model
        self._worker_idle = worker_idle
        self._metrics = metrics
        self._done = done
        self._nice = nice
        self._cond = threading.Condition()
        self._pending = None          # offered WorkItem, not started
        self._job: _Job | None = None  # running, or done and waiting for its claim
        self._closed = False           # the speculation thread has ended
        self.started = 0

    # ------------------------------------------------------------ segmentation thread
    def offer(self, item) -> None:
        """The samples of this utterance are fixed: classify it when the worker is idle."""
        with self._cond:
            if self._job is not None and not same_span(self._job.item, item):
                self._void(self._job)
            self._pending = item
            self._cond.notify_all()

    def cancel(self) -> None:
        """Speech resumed: the offered span will never be an utterance."""
        with self._cond:
            self._pending = None
            if self._job is not None:
                self._void(self._job)

    # ------------------------------------------------------------ inference worker
    def claim(self, item, model: Classifier) -> np.ndarray | None:
        """Probabilities for this utterance if a speculative job computed (or is computing) it
        with `model`, waiting for a running job to finish; None: classify it yourself."""
        with self._cond:
            if self._pending is not None and same_span(self._pending, item):
                self._pending = None   # never started: the worker classifies it now
            job = self._job
            if job is None or job.void:
                return None
            if not same_span(job.item, item) or job.model is not model:
                if job.item.end_s <= item.end_s:   # for this or an earlier span: obsolete now
                    self._void(job)
                return None
            self._job = None   # claimed: a later offer must not void it
            while not job.done and not self._closed:
                self._cond.wait(POLL_S)
            self._metrics.record_speculation(used=job.probs is not None)
            return job.probs

    # ------------------------------------------------------------ speculation thread
    def run(self) -> None:
        lower_thread_priority(self._nice)
        try:
            while not self._done():
                with self._cond:
                    if self._pending is None or self._job is not None or not self._worker_idle():
                        self._cond.wait(POLL_S)
                        continue
                    item, self._pending = self._pending, None
                    job = self._job = _Job(item, self._choose_model())
                    self.started += 1
                try:
                    probs = self._compute(job.model, item)
                except Exception:   # the worker re-runs the span and reports the failure itself
                    probs = None
                with self._cond:
                    job.probs, job.done = probs, True
                    if job.void:
                        self._void(job)
                    self._cond.notify_all()
        finally:   # also when this thread dies: no claim may wait for it any more
            with self._cond:
                self._closed = True
                if self._job is not None:
                    self._job.done = True
                    self._void(self._job)
                self._cond.notify_all()

    def _void(self, job: _Job) -> None:
        """Mark a job's result as not to be used; count it once it has run."""
        job.void = True
        if job.done:
            self._metrics.record_speculation(used=False)
            if self._job is job:
                self._job = None
