"""ProbabilitySmoother: exponential smoothing for display, fresh start after a long silence."""
from __future__ import annotations

import numpy as np
import pytest

from models.labels import EMOTIONS
from realtime.smoothing import ProbabilitySmoother, SmoothingConfig
from realtime.types import EmotionPrediction


def one_hot(label: str, start_s: float, end_s: float) -> EmotionPrediction:
    probs = np.array([1.0 if name == label else 0.0 for name in EMOTIONS])
    return EmotionPrediction.from_probs(start_s, end_s, probs, model="m", latency_ms=1.0, kind="partial")


def test_exponential_average_and_label():
    smoother = ProbabilitySmoother(SmoothingConfig(alpha=0.25))
    (first,) = smoother.push(one_hot("anger", 0.0, 1.0))
    assert first.probs["anger"] == pytest.approx(1.0) and first.label == "anger" and first.time_s == 1.0
    (second,) = smoother.push(one_hot("sad", 0.5, 1.5))
    assert second.probs["sad"] == pytest.approx(0.25) and second.probs["anger"] == pytest.approx(0.75)
    assert second.label == "anger"
    for k in range(10):
        (latest,) = smoother.push(one_hot("sad", 1.0 + 0.5 * k, 2.0 + 0.5 * k))
    assert latest.label == "sad" and sum(latest.probs.values()) == pytest.approx(1.0)
    assert smoother.flush() == []


def test_long_gap_and_reset_start_fresh():
    smoother = ProbabilitySmoother(SmoothingConfig(alpha=0.2, reset_after_gap_s=2.0))
    smoother.push(one_hot("anger", 0.0, 1.0))
    (after_gap,) = smoother.push(one_hot("happy", 5.0, 6.0))
    assert after_gap.probs["happy"] == pytest.approx(1.0)
    (close,) = smoother.push(one_hot("fear", 6.5, 7.0))
    assert close.probs["fear"] == pytest.approx(0.2)
    smoother.reset()
    (fresh,) = smoother.push(one_hot("fear", 7.0, 8.0))
    assert fresh.probs["fear"] == pytest.approx(1.0)


@pytest.mark.parametrize("kwargs", [{"alpha": 0.0}, {"alpha": 1.5}, {"reset_after_gap_s": 0}])
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        SmoothingConfig(**kwargs)
