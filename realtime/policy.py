"""Which model classifies the next item: the accurate primary or the fast fallback.

Pure and deterministic (no clock, no threads): the engine asks `route(kind)` before each
classification and reports what happened with `push(LatencyObservation)`.

* Partial windows always go to the fallback (live traces must be cheap).
* In primary mode, the moving p95 of the last `window_size` primary latencies is watched;
  once at least `min_samples` are in, p95 > budget_ms (or an inference queue deeper than
  max_queue_depth) switches to the fallback.
* In fallback mode, every `probe_every_n`-th utterance still goes to the primary as a probe.
  The policy returns to the primary only when the last `recover_after_n` probes have a p95
  below `recover_fraction * budget_ms` and the queue is at most half the depth limit.
  The gap between the switch-off threshold (budget) and the switch-back threshold
  (0.7 x budget) plus the probe count is the hysteresis that prevents flapping.
* `disable_primary(reason)` (primary crashed or ran out of memory) switches for good.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import math

import numpy as np

PRIMARY = "primary"
FALLBACK = "fallback"


@dataclass(frozen=True)
class FallbackPolicyConfig:
    """budget_ms: end-of-utterance -> result latency the primary must keep (p95)."""

    budget_ms: float = 300.0
    window_size: int = 20
    min_samples: int = 5
    max_queue_depth: int = 8
    probe_every_n: int = 4
    recover_after_n: int = 3
    recover_fraction: float = 0.7

    def __post_init__(self) -> None:
        if not (math.isfinite(self.budget_ms) and self.budget_ms > 0):
            raise ValueError(f"budget_ms must be a finite number > 0, got {self.budget_ms}")
        if not 1 <= self.min_samples <= self.window_size:
            raise ValueError(f"need 1 <= min_samples <= window_size, got {self.min_samples}, {self.window_size}")
        if self.max_queue_depth < 1:
            raise ValueError(f"max_queue_depth must be >= 1, got {self.max_queue_depth}")
        if self.probe_every_n < 1 or self.recover_after_n < 1:
            raise ValueError("probe_every_n and recover_after_n must be >= 1")
        if not 0.0 < self.recover_fraction < 1.0:
            raise ValueError(f"recover_fraction must be in (0, 1), got {self.recover_fraction}")


@dataclass(frozen=True)
class Route:
    """Decision for one item: model is PRIMARY or FALLBACK; probe marks a recovery probe."""

    model: str
    probe: bool = False


@dataclass(frozen=True)
class LatencyObservation:
    """One finished classification: which model ran, its latency and the queue depth then."""

    model: str
    latency_ms: float
    queue_depth: int = 0
    kind: str = "utterance"


@dataclass(frozen=True)
class PolicySwitch:
    """Emitted when the active model changes; reason is one human line."""

    to_model: str
    reason: str
    p95_ms: float


def p95(values) -> float:
    """95th percentile (linear interpolation) of a non-empty sequence."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), 95))


class FallbackPolicy:
    """See the module docstring. State: mode, recent primary latencies, recent probe latencies."""

    def __init__(self, cfg: FallbackPolicyConfig | None = None, primary_available: bool = True) -> None:
        self.cfg = cfg or FallbackPolicyConfig()
        self._primary_available_at_start = primary_available
        self.reset()

    def reset(self) -> None:
        self.primary_available = self._primary_available_at_start
        self.mode = PRIMARY if self.primary_available else FALLBACK
        self._latencies: deque[float] = deque(maxlen=self.cfg.window_size)
        self._probes: deque[float] = deque(maxlen=self.cfg.recover_after_n)
        self._utterances_since_probe = 0
        self.switches = 0

    def use_primary(self) -> bool:
        return self.mode == PRIMARY

    def route(self, kind: str = "utterance") -> Route:
        """Model for the next item; counts utterances in fallback mode to schedule probes."""
        if kind != "utterance" or not self.primary_available:
            return Route(FALLBACK)
        if self.mode == PRIMARY:
            return Route(PRIMARY)
        self._utterances_since_probe += 1
        if self._utterances_since_probe >= self.cfg.probe_every_n:
            self._utterances_since_probe = 0
            return Route(PRIMARY, probe=True)
        return Route(FALLBACK)

    def peek(self, kind: str = "utterance") -> str:
        """The model `route(kind)` would pick next, without counting anything (for speculation)."""
        if kind != "utterance" or not self.primary_available:
            return FALLBACK
        if self.mode == PRIMARY or self._utterances_since_probe + 1 >= self.cfg.probe_every_n:
            return PRIMARY
        return FALLBACK

    def push(self, obs: LatencyObservation) -> list[PolicySwitch]:
        """Record a finished classification; returns the switch it caused, if any."""
        if not self.primary_available or (obs.model != PRIMARY and self.mode == FALLBACK):
            return []
        if self.mode == PRIMARY:
            if obs.model == PRIMARY:
                self._latencies.append(obs.latency_ms)
            if obs.queue_depth > self.cfg.max_queue_depth:
                return self._switch(FALLBACK, f"inference queue depth {obs.queue_depth} > "
                                              f"{self.cfg.max_queue_depth}", self._current_p95())
            if len(self._latencies) >= self.cfg.min_samples:
                value = p95(self._latencies)
                if value > self.cfg.budget_ms:
                    return self._switch(FALLBACK, f"primary p95 latency {value:.0f} ms > budget "
                                                  f"{self.cfg.budget_ms:.0f} ms", value)
            return []
        self._probes.append(obs.latency_ms)
        if len(self._probes) < self.cfg.recover_after_n:
            return []
        value = p95(self._probes)
        limit = self.cfg.recover_fraction * self.cfg.budget_ms
        if value < limit and obs.queue_depth <= self.cfg.max_queue_depth // 2:
            return self._switch(PRIMARY, f"primary recovered: probe p95 {value:.0f} ms < {limit:.0f} ms", value)
        return []

    def flush(self) -> list[PolicySwitch]:
        return []

    def disable_primary(self, reason: str) -> list[PolicySwitch]:
        """Stop using the primary for the rest of the session (it failed)."""
        if not self.primary_available:
            return []
        self.primary_available = False
        was_primary = self.mode == PRIMARY
        self.mode = FALLBACK
        if was_primary:
            self.switches += 1
            return [PolicySwitch(FALLBACK, reason, self._current_p95())]
        return []

    def _current_p95(self) -> float:
        return p95(self._latencies) if self._latencies else 0.0

    def _switch(self, to_model: str, reason: str, value: float) -> list[PolicySwitch]:
        self.mode = to_model
        self.switches += 1
        # Start each mode with fresh evidence: old slow samples must not re-trigger a
        # switch right after recovery, nor old probes end the next fallback period early.
        self._latencies.clear()
        self._probes.clear()
        self._utterances_since_probe = 0
        return [PolicySwitch(to_model, reason, value)]
