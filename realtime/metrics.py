"""Session bookkeeping: latencies, drop counters, model usage -> SessionSummary.

Thread-safe (the segmentation thread counts drops, the inference worker counts predictions);
no I/O. Latency percentiles are over final (utterance) predictions, the ones with a budget;
partial-window latencies are kept separately for the benchmarks.
"""
from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

import numpy as np

from realtime.types import DropNotice, EmotionPrediction, SessionSummary


@dataclass(frozen=True)
class LatencyStats:
    """Percentiles in milliseconds over `count` samples (all 0 when empty)."""

    count: int
    p50_ms: float
    p95_ms: float
    max_ms: float


def latency_stats(values_ms) -> LatencyStats:
    values = np.asarray(list(values_ms), dtype=np.float64)
    if values.size == 0:
        return LatencyStats(0, 0.0, 0.0, 0.0)
    p50, p95 = np.percentile(values, [50, 95])
    return LatencyStats(int(values.size), float(p50), float(p95), float(values.max()))


class SessionMetrics:
    """Counts everything a SessionSummary reports."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._utterance_latencies: list[float] = []
            self._partial_latencies: list[float] = []
            self._models: Counter[str] = Counter()
            self._fallback_utterances = 0
            self.dropped_partials = 0
            self.dropped_utterances = 0
            self.dropped_audio_blocks = 0
            self.failed_items = 0
            self.speculative_used = 0
            self.speculative_discarded = 0

    def record_prediction(self, prediction: EmotionPrediction) -> None:
        with self._lock:
            if prediction.kind == "utterance":
                self._utterance_latencies.append(prediction.latency_ms)
                self._models[prediction.model] += 1
                self._fallback_utterances += int(prediction.fallback)
            else:
                self._partial_latencies.append(prediction.latency_ms)

    def record_drops(self, partials: int = 0, utterances: int = 0) -> DropNotice:
        """Add drops; returns the cumulative notice (audio blocks as last set by set_audio_drops)."""
        with self._lock:
            self.dropped_partials += partials
            self.dropped_utterances += utterances
            return self._notice()

    def set_audio_drops(self, blocks: int) -> DropNotice:
        """The source keeps its own cumulative count; mirror it here."""
        with self._lock:
            self.dropped_audio_blocks = blocks
            return self._notice()

    def record_speculation(self, used: bool) -> None:
        """One speculative classification that ran: its result was published (used) or thrown away."""
        with self._lock:
            if used:
                self.speculative_used += 1
            else:
                self.speculative_discarded += 1

    def record_failure(self) -> None:
        with self._lock:
            self.failed_items += 1

    def drop_notice(self) -> DropNotice:
        with self._lock:
            return self._notice()

    def _notice(self) -> DropNotice:
        return DropNotice(partial_windows=self.dropped_partials, utterances=self.dropped_utterances,
                          audio_blocks=self.dropped_audio_blocks)

    def utterance_latency(self) -> LatencyStats:
        with self._lock:
            return latency_stats(self._utterance_latencies)

    def partial_latency(self) -> LatencyStats:
        with self._lock:
            return latency_stats(self._partial_latencies)

    def summary(self) -> SessionSummary:
        with self._lock:
            stats = latency_stats(self._utterance_latencies)
            n = len(self._utterance_latencies)
            return SessionSummary(
                utterances=n, partials=len(self._partial_latencies),
                latency_p50_ms=round(stats.p50_ms, 1), latency_p95_ms=round(stats.p95_ms, 1),
                dropped_partials=self.dropped_partials, dropped_utterances=self.dropped_utterances,
                dropped_audio_blocks=self.dropped_audio_blocks,
                fallback_share=round(self._fallback_utterances / n, 4) if n else 0.0,
                models=dict(self._models), speculative_used=self.speculative_used,
                speculative_discarded=self.speculative_discarded)
