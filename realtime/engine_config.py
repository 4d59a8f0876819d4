"""Engine settings (one frozen config) and the engine's user-facing error type.

Torch-free. `realtime.engine` re-exports both; import them from there.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from realtime.policy import FallbackPolicyConfig
from realtime.vad import SegmenterConfig
from realtime.windows import PartialWindowConfig


class EngineError(RuntimeError):
    """The engine cannot run (e.g. the fallback model fails its warm-up); one line for the user."""


@dataclass(frozen=True)
class EngineConfig:
    """Engine settings. Times in ms unless named otherwise; queue sizes in items.

    partial_queue_items is small on purpose: a stale live window is worth nothing, so
    when the worker falls behind the oldest windows are dropped (and counted).
    partial_deadlines: hop_ms is the longest gap between live updates; each window is cut
    early enough for its result to land by then (see realtime/windows.py).
    speculate: classify an utterance during the VAD hangover once its samples are fixed
    (realtime/speculation.py), on a thread speculation_nice steps nicer (0 = same priority).
    live_traces_on_primary: partial windows go to the primary's cheapest branch
    (Classifier.cheapest_branch) under partial_budget_ms, like utterances under
    latency_budget_ms; False: always to the fallback (cheaper, but then the live traces come
    from another model family than the final results).
    """

    hop_ms: int = 500
    window_ms: int = 2_000
    min_window_ms: int = 1_000
    partials_enabled: bool = True
    latency_budget_ms: float = 300.0
    partial_budget_ms: float = 250.0
    live_traces_on_primary: bool = True
    compute_device: str = "auto"
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
    partial_deadlines: bool = True
    speculate: bool = True
    speculation_nice: int = 5
    vad: SegmenterConfig = field(default_factory=SegmenterConfig)

    def __post_init__(self) -> None:
        for name in ("audio_queue_blocks", "partial_queue_items", "utterance_queue_items"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.compute_device not in ("auto", "cpu", "cuda") and not self.compute_device.startswith("cuda:"):
            raise ValueError(f"compute_device must be auto, cpu, cuda or cuda:N, got {self.compute_device!r}")
        for name in ("utterance_put_timeout_s", "level_updates_per_s", "drop_report_interval_s"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {getattr(self, name)}")
        if not 0 <= self.speculation_nice <= 19:
            raise ValueError(f"speculation_nice must be in [0, 19], got {self.speculation_nice}")
        self.window_config()   # validates hop_ms / window_ms / min_window_ms
        self.policy_config()   # validates the latency budget and hysteresis settings

    def window_config(self) -> PartialWindowConfig:
        return PartialWindowConfig(hop_ms=self.hop_ms, window_ms=self.window_ms,
                                   min_window_ms=min(self.min_window_ms, self.window_ms),
                                   sample_rate_hz=self.vad.sample_rate_hz, enabled=self.partials_enabled)

    def policy_config(self) -> FallbackPolicyConfig:
        return FallbackPolicyConfig(budget_ms=self.latency_budget_ms, partial_budget_ms=self.partial_budget_ms,
                                    window_size=self.policy_window_size,
                                    min_samples=min(5, self.policy_window_size),
                                    max_queue_depth=self.policy_max_queue_depth,
                                    probe_every_n=self.probe_every_n, recover_after_n=self.recover_after_n,
                                    recover_fraction=self.recover_fraction)

    def to_dict(self) -> dict:
        """JSON-serialisable settings for the timeline header."""
        return asdict(self)
