"""Exponential smoothing of class probabilities for display (pure, no threads, no I/O).

The raw per-utterance probabilities jump around; the GUI's "Smooth" toggle draws the
utterance trace as smoothed = alpha * new + (1 - alpha) * smoothed (gui/plots.py). After a silence longer than
`reset_after_gap_s` the history is dropped, so a new speaker turn starts fresh.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.labels import EMOTIONS
from realtime.types import EmotionPrediction


@dataclass(frozen=True)
class SmoothingConfig:
    """alpha in (0, 1]: weight of the newest prediction (1 = no smoothing)."""

    alpha: float = 0.4
    reset_after_gap_s: float = 3.0

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha}")
        if self.reset_after_gap_s <= 0:
            raise ValueError(f"reset_after_gap_s must be > 0, got {self.reset_after_gap_s}")


@dataclass(frozen=True)
class SmoothedProbs:
    """Smoothed distribution at time_s (the prediction's end): probs in EMOTIONS order."""

    time_s: float
    probs: dict[str, float]
    label: str

    @property
    def confidence(self) -> float:
        return self.probs[self.label]


class ProbabilitySmoother:
    """push(prediction) -> [SmoothedProbs]; flush() -> []; reset()."""

    def __init__(self, cfg: SmoothingConfig | None = None) -> None:
        self.cfg = cfg or SmoothingConfig()
        self.reset()

    def reset(self) -> None:
        self._state: np.ndarray | None = None   # [6] probabilities
        self._last_end_s: float | None = None

    def push(self, prediction: EmotionPrediction) -> list[SmoothedProbs]:
        new = np.array([prediction.probs.get(name, 0.0) for name in EMOTIONS], dtype=np.float64)
        gap = None if self._last_end_s is None else prediction.start_s - self._last_end_s
        if self._state is None or (gap is not None and gap > self.cfg.reset_after_gap_s):
            self._state = new
        else:
            self._state = self.cfg.alpha * new + (1.0 - self.cfg.alpha) * self._state
        self._last_end_s = prediction.end_s if self._last_end_s is None else max(self._last_end_s,
                                                                                 prediction.end_s)
        total = float(self._state.sum())
        values = self._state / total if total > 0 else np.full(len(EMOTIONS), 1.0 / len(EMOTIONS))
        probs = {name: float(v) for name, v in zip(EMOTIONS, values)}
        return [SmoothedProbs(time_s=prediction.end_s, probs=probs, label=max(probs, key=probs.__getitem__))]

    def flush(self) -> list[SmoothedProbs]:
        return []
