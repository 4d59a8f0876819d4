"""Confidence calibration: temperature scaling fitted on out-of-fold predictions, its quality
measures, and the "not sure" threshold, stored in a bundle's or ensemble's JSON.

A model's probabilities p [N, C] become p^(1/T) renormalised, i.e. softmax(log p / T): for a
single network that is softmax(logits / T); for an ensemble it scales the log of the averaged
probabilities. T > 1 softens an overconfident model, T < 1 sharpens an underconfident one; the
arg-max never changes. T is fitted by minimising the negative log-likelihood of the true classes
on out-of-fold predictions (Guo et al., 2017, "On calibration of modern neural networks").

The JSON field (optional; a bundle without it loads uncalibrated):

    "calibration": {"version": 1, "method": "temperature", "temperature": T,
                    "uncertain_below": threshold or null, "fitted_on": "...", "clips": N,
                    "nll_before": ..., "nll_after": ..., "ece_before": ..., "ece_after": ...,
                    "brier_before": ..., "brier_after": ...}

`uncertain_below`: a calibrated top probability under it reads "uncertain"; picked on the same
out-of-fold predictions as the lowest confidence at which the predictions at or above it reach
`TARGET_ACCURACY`. numpy only when applied; fitting uses scipy.optimize.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

from models.classifier import Classifier

CALIBRATION_VERSION = 1
METHODS = ("temperature",)
ECE_BINS = 15
TARGET_ACCURACY = 0.80
# The threshold must rest on enough clips: at least this many, and this share of all.
MIN_SUPPORT_CLIPS, MIN_SUPPORT_SHARE = 20, 0.05
T_BOUNDS = (0.05, 20.0)
_EPS = 1e-12


class CalibrationError(ValueError):
    """A calibration field that cannot be used, or data that cannot be fitted (one line)."""


# ---------------------------------------------------------------- measures
def _checked(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    if p.ndim != 2 or p.shape[0] != y.shape[0] or p.shape[0] == 0:
        raise CalibrationError(f"probabilities {p.shape} and labels {y.shape} do not match (need [N, C] and [N])")
    if (y < 0).any() or (y >= p.shape[1]).any():
        raise CalibrationError(f"labels must be class indices 0..{p.shape[1] - 1}")
    if not np.isfinite(p).all():
        raise CalibrationError("probabilities must be finite")
    return p, y


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean -log p(true class) over N clips (nats); probs [N, C], labels [N] class indices."""
    p, y = _checked(probs, labels)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], _EPS, 1.0))))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label ECE: sum over `bins` equal-width confidence bins of (share of clips) x
    |accuracy - mean confidence| in that bin; 0 is perfect, range 0..1."""
    p, y = _checked(probs, labels)
    confidence, predicted = p.max(axis=1), p.argmax(axis=1)
    correct = (predicted == y).astype(np.float64)
    # bin b holds confidences in (b/bins, (b+1)/bins]; a confidence of exactly 0 joins bin 0
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(total)


def brier_score(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier score: mean over clips of sum_c (p_c - [c == true])^2; 0 best, 2 worst."""
    p, y = _checked(probs, labels)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(y)), y] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def calibration_measures(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """{"nll", "ece", "brier", "accuracy"} of probabilities [N, C] against labels [N]."""
    p, y = _checked(probs, labels)
    return {"nll": negative_log_likelihood(p, y), "ece": expected_calibration_error(p, y),
            "brier": brier_score(p, y), "accuracy": float(np.mean(p.argmax(axis=1) == y))}


# ---------------------------------------------------------------- temperature scaling
def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """p [..., C] -> softmax(log p / T) [..., C] (same dtype as float32/float64 input)."""
    p = np.asarray(probs)
    logs = np.log(np.clip(p.astype(np.float64), _EPS, 1.0)) / float(temperature)
    logs -= logs.max(axis=-1, keepdims=True)
    out = np.exp(logs)
    out /= out.sum(axis=-1, keepdims=True)
    return out.astype(p.dtype if p.dtype in (np.float32, np.float64) else np.float64)


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The T in T_BOUNDS minimising the NLL of apply_temperature(probs, T) on (probs [N, C], labels [N])."""
    from scipy.optimize import minimize_scalar

    p, y = _checked(probs, labels)
    logs = np.log(np.clip(p, _EPS, 1.0))

    def nll(log_t: float) -> float:
        z = logs / math.exp(log_t)
        z -= z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]))

    found = minimize_scalar(nll, bounds=tuple(math.log(b) for b in T_BOUNDS), method="bounded",
                            options={"xatol": 1e-5})
    return float(math.exp(found.x))


def uncertain_threshold(probs: np.ndarray, labels: np.ndarray, target_accuracy: float = TARGET_ACCURACY) -> float | None:
    """The lowest top probability t such that the predictions with confidence >= t are right at
    least `target_accuracy` of the time, over at least MIN_SUPPORT_CLIPS clips and MIN_SUPPORT_SHARE
    of all; 0.0 when every prediction together already is; None when no such t exists."""
    p, y = _checked(probs, labels)
    confidence = p.max(axis=1)
    order = np.argsort(-confidence, kind="stable")
    correct = (p.argmax(axis=1) == y)[order].astype(np.float64)
    accuracy_of_top = np.cumsum(correct) / np.arange(1, len(y) + 1)   # accuracy of the k most confident
    support = max(MIN_SUPPORT_CLIPS, math.ceil(MIN_SUPPORT_SHARE * len(y)))
    sorted_conf = confidence[order]
    # a cut can only fall between distinct confidences: keep the last index of each tie group
    last_of_tie = np.append(sorted_conf[1:] != sorted_conf[:-1], True)
    ok = (accuracy_of_top >= target_accuracy) & (np.arange(1, len(y) + 1) >= support) & last_of_tie
    if not ok.any():
        return None
    k = int(np.flatnonzero(ok)[-1])
    return 0.0 if k == len(y) - 1 else float(sorted_conf[k])


@dataclass(frozen=True)
class Calibration:
    """A fitted temperature and the "not sure" threshold; the optional JSON field of a bundle."""

    temperature: float = 1.0
    uncertain_below: float | None = None
    method: str = "temperature"
    fitted_on: str = ""
    clips: int = 0
    nll_before: float | None = None
    nll_after: float | None = None
    ece_before: float | None = None
    ece_after: float | None = None
    brier_before: float | None = None
    brier_after: float | None = None
    version: int = CALIBRATION_VERSION

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise CalibrationError(f"calibration method {self.method!r} is unknown; this VED reads {list(METHODS)}")
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
                and T_BOUNDS[0] <= self.temperature <= T_BOUNDS[1]):
            raise CalibrationError(f"calibration temperature must be a number in {list(T_BOUNDS)}, "
                                   f"got {self.temperature!r}")
        if self.uncertain_below is not None and not (isinstance(self.uncertain_below, (int, float))
                                                     and 0.0 <= self.uncertain_below <= 1.0):
            raise CalibrationError(f"calibration uncertain_below must be within 0..1 or null, "
                                   f"got {self.uncertain_below!r}")
        if self.version != CALIBRATION_VERSION:
            raise CalibrationError(f"calibration version {self.version!r} is not {CALIBRATION_VERSION}; "
                                   "update VED to read it")

    def apply(self, probs: np.ndarray) -> np.ndarray:
        """Calibrated probabilities, same shape [..., C]."""
        return apply_temperature(probs, self.temperature)

    def to_json(self) -> dict[str, Any]:
        return {key: (round(value, 6) if isinstance(value, float) else value) for key, value in asdict(self).items()}

    @classmethod
    def from_json(cls, field: Any) -> "Calibration | None":
        """The stored field -> Calibration; None when absent (an older, uncalibrated bundle);
        CalibrationError (one line) when it is present but unusable."""
        if field is None:
            return None
        if not isinstance(field, Mapping):
            raise CalibrationError(f"calibration must be a JSON object, got {type(field).__name__}")
        known = {key: field[key] for key in cls.__dataclass_fields__ if key in field}
        if "temperature" not in known:
            raise CalibrationError("calibration has no temperature")
        return cls(**known)


def fit_calibration(probs: np.ndarray, labels: np.ndarray, fitted_on: str,
                    target_accuracy: float = TARGET_ACCURACY) -> Calibration:
    """Temperature and threshold from out-of-fold probabilities [N, C] and true classes [N],
    with the measures before and after (recorded so model cards can quote them)."""
    p, y = _checked(probs, labels)
    temperature = fit_temperature(p, y)
    after = apply_temperature(p, temperature)
    before_m, after_m = calibration_measures(p, y), calibration_measures(after, y)
    return Calibration(temperature=temperature, uncertain_below=uncertain_threshold(after, y, target_accuracy),
                       fitted_on=fitted_on, clips=len(y),
                       nll_before=before_m["nll"], nll_after=after_m["nll"],
                       ece_before=before_m["ece"], ece_after=after_m["ece"],
                       brier_before=before_m["brier"], brier_after=after_m["brier"])


class CalibratedClassifier(Classifier):
    """Another Classifier's probabilities, calibrated: predict() returns calibration.apply(inner's).

    Everything else (name, labels, device, checkpoint hash) is the inner model's; `inner` stays
    reachable for what needs the raw model (member probabilities, distillation)."""

    def __init__(self, inner: Classifier, calibration: Calibration) -> None:
        self.inner = inner
        self.calibration = calibration
        self.name, self.labels, self.device = inner.name, inner.labels, inner.device
        self.uncertain_below = calibration.uncertain_below

    def predict(self, waveforms) -> np.ndarray:
        return self.calibration.apply(self.inner.predict(waveforms)).astype(np.float32)

    def predict_utterance(self, waveforms) -> np.ndarray:
        return self.calibration.apply(self.inner.predict_utterance(waveforms)).astype(np.float32)

    def reset_session(self) -> None:
        self.inner.reset_session()

    @property
    def learns_speaker(self) -> bool:
        return self.inner.learns_speaker

    def warmup(self, *args, **kwargs) -> np.ndarray:
        """The inner model's warm-up (its own defaults: an ensemble warms up longer), calibrated."""
        return self.calibration.apply(self.inner.warmup(*args, **kwargs)).astype(np.float32)

    def describe(self) -> str:
        return f"{self.inner.describe()}, calibrated (T={self.calibration.temperature:.2f})"

    def cheapest_branch(self) -> Classifier:
        """The inner model's cheapest branch under the same calibration (fitted on the whole model;
        the branch of one model family is overconfident the same way, which is what T corrects)."""
        branch = self.inner.cheapest_branch()
        return self if branch is self.inner else CalibratedClassifier(branch, self.calibration)

    @property
    def checkpoint_hash(self) -> str:
        return self.inner.checkpoint_hash


def without_calibration(classifier: Classifier) -> tuple[Classifier, Calibration | None]:
    """(the model's raw classifier, its calibration or None): for before/after measures."""
    if isinstance(classifier, CalibratedClassifier):
        return classifier.inner, classifier.calibration
    return classifier, None
