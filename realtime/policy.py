"""Which model classifies the next item: the accurate primary or the fast fallback.

Pure and deterministic (no clock, no threads): the engine asks `route(kind)` before each
classification and reports what happened with `push(LatencyObservation)`.

Utterances and partial windows (live traces) follow the same rules, each kind on its own
track with its own budget (budget_ms for utterances, partial_budget_ms for partial windows,
which the primary's cheapest branch classifies; see Classifier.cheapest_branch):
* In primary mode, the moving p95 of the last `window_size` primary latencies is watched;
  once at least `min_samples` are in, p95 > budget (or an inference queue deeper than
  max_queue_depth) switches that kind to the fallback.
* In fallback mode, every `probe_every_n`-th item still goes to the primary as a probe.
  The track returns to the primary only when the last `recover_after_n` probes have a p95
  below `recover_fraction * budget` and the queue is at most half the depth limit.
  The gap between the switch-off threshold (budget) and the switch-back threshold
  (0.7 x budget) plus the probe count is the hysteresis that prevents flapping.
* Partial windows go to the primary only while utterances do: live traces and final
  results then come from one model family, and a primary too slow for utterances is not
  asked for live windows either (nothing is counted on the partial track meanwhile).
* `disable_primary(reason)` (primary crashed or ran out of memory) switches both for good.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import math

import numpy as np

PRIMARY = "primary"
FALLBACK = "fallback"
UTTERANCE = "utterance"
PARTIAL = "partial"
KINDS = (UTTERANCE, PARTIAL)


@dataclass(frozen=True)
class FallbackPolicyConfig:
    """budget_ms: end-of-utterance -> result latency the primary must keep (p95);
    partial_budget_ms: the same for a live window (window end -> result) on the primary's
    cheapest branch. The other settings apply to both tracks."""

    budget_ms: float = 300.0
    partial_budget_ms: float = 250.0
    window_size: int = 20
    min_samples: int = 5
    max_queue_depth: int = 8
    probe_every_n: int = 4
    recover_after_n: int = 3
    recover_fraction: float = 0.7

    def __post_init__(self) -> None:
        for name in ("budget_ms", "partial_budget_ms"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {getattr(self, name)}")
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
    """Emitted when the active model of one kind (UTTERANCE or PARTIAL) changes; reason is one human line."""

    to_model: str
    reason: str
    p95_ms: float
    kind: str = UTTERANCE


def p95(values) -> float:
    """95th percentile (linear interpolation) of a non-empty sequence."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), 95))


class _Track:
    """One kind's state: mode, recent primary latencies, recent probe latencies."""

    def __init__(self, cfg: FallbackPolicyConfig, kind: str, budget_ms: float, mode: str) -> None:
        self.cfg, self.kind, self.budget_ms, self.mode = cfg, kind, budget_ms, mode
        self.latencies: deque[float] = deque(maxlen=cfg.window_size)
        self.probes: deque[float] = deque(maxlen=cfg.recover_after_n)
        self.since_probe = 0

    def route(self) -> Route:
        if self.mode == PRIMARY:
            return Route(PRIMARY)
        self.since_probe += 1
        if self.since_probe >= self.cfg.probe_every_n:
            self.since_probe = 0
            return Route(PRIMARY, probe=True)
        return Route(FALLBACK)

    def peek(self) -> str:
        if self.mode == PRIMARY or self.since_probe + 1 >= self.cfg.probe_every_n:
            return PRIMARY
        return FALLBACK

    def push(self, obs: LatencyObservation) -> list[PolicySwitch]:
        if obs.model != PRIMARY and self.mode == FALLBACK:
            return []
        what = "primary" if self.kind == UTTERANCE else "primary branch for live windows:"
        if self.mode == PRIMARY:
            if obs.model == PRIMARY:
                self.latencies.append(obs.latency_ms)
            if obs.queue_depth > self.cfg.max_queue_depth:
                return self.switch(FALLBACK, f"inference queue depth {obs.queue_depth} > "
                                             f"{self.cfg.max_queue_depth}", self.current_p95())
            if len(self.latencies) >= self.cfg.min_samples:
                value = p95(self.latencies)
                if value > self.budget_ms:
                    return self.switch(FALLBACK, f"{what} p95 latency {value:.0f} ms > budget "
                                                 f"{self.budget_ms:.0f} ms", value)
            return []
        self.probes.append(obs.latency_ms)
        if len(self.probes) < self.cfg.recover_after_n:
            return []
        value = p95(self.probes)
        limit = self.cfg.recover_fraction * self.budget_ms
        if value < limit and obs.queue_depth <= self.cfg.max_queue_depth // 2:
            return self.switch(PRIMARY, f"{what} recovered: probe p95 {value:.0f} ms < {limit:.0f} ms", value)
        return []

    def current_p95(self) -> float:
        return p95(self.latencies) if self.latencies else 0.0

    def switch(self, to_model: str, reason: str, value: float) -> list[PolicySwitch]:
        self.mode = to_model
        # Start each mode with fresh evidence: old slow samples must not re-trigger a
        # switch right after recovery, nor old probes end the next fallback period early.
        self.latencies.clear()
        self.probes.clear()
        self.since_probe = 0
        return [PolicySwitch(to_model, reason, value, self.kind)]


class FallbackPolicy:
    """See the module docstring. State: one _Track per kind (UTTERANCE, PARTIAL)."""

    def __init__(self, cfg: FallbackPolicyConfig | None = None, primary_available: bool = True) -> None:
        self.cfg = cfg or FallbackPolicyConfig()
        self._primary_available_at_start = primary_available
        self.reset()

    def reset(self) -> None:
        self.primary_available = self._primary_available_at_start
        mode = PRIMARY if self.primary_available else FALLBACK
        self._tracks = {UTTERANCE: _Track(self.cfg, UTTERANCE, self.cfg.budget_ms, mode),
                        PARTIAL: _Track(self.cfg, PARTIAL, self.cfg.partial_budget_ms, mode)}
        self.switches = 0

    @property
    def mode(self) -> str:
        """The utterances' mode (what the status bar shows)."""
        return self._tracks[UTTERANCE].mode

    def use_primary(self, kind: str = UTTERANCE) -> bool:
        return self._tracks[kind].mode == PRIMARY and (kind == UTTERANCE or self.use_primary())

    def route(self, kind: str = UTTERANCE) -> Route:
        """Model for the next item of `kind`; counts items in fallback mode to schedule probes."""
        if not self.primary_available or (kind != UTTERANCE and not self.use_primary()):
            return Route(FALLBACK)
        return self._track(kind).route()

    def peek(self, kind: str = UTTERANCE) -> str:
        """The model `route(kind)` would pick next, without counting anything (for speculation)."""
        if not self.primary_available or (kind != UTTERANCE and not self.use_primary()):
            return FALLBACK
        return self._track(kind).peek()

    def push(self, obs: LatencyObservation) -> list[PolicySwitch]:
        """Record a finished classification; returns the switch it caused, if any."""
        if not self.primary_available:
            return []
        switches = self._track(obs.kind).push(obs)
        self.switches += len(switches)
        return switches

    def flush(self) -> list[PolicySwitch]:
        return []

    def disable_primary(self, reason: str) -> list[PolicySwitch]:
        """Stop using the primary for the rest of the session (it failed); one switch per kind
        that was on it."""
        if not self.primary_available:
            return []
        on_primary = [kind for kind in KINDS if self.use_primary(kind)]
        self.primary_available = False
        switches = []
        for kind, track in self._tracks.items():
            value = track.current_p95()
            track.mode = FALLBACK
            if kind in on_primary:
                switches.append(PolicySwitch(FALLBACK, reason, value, kind))
        self.switches += len(switches)
        return switches

    def _track(self, kind: str) -> _Track:
        try:
            return self._tracks[kind]
        except KeyError:
            raise ValueError(f"unknown item kind {kind!r}; choose one of: {', '.join(KINDS)}") from None
