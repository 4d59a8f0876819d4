"""Scores: macro-F1, accuracy, UAR, per-class precision/recall/F1, confusion matrix."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from models.labels import EMOTIONS


@dataclass(frozen=True)
class ClassScores:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class EvalResult:
    """confusion[i][j] counts clips of true class i predicted as class j (order of `labels`)."""

    macro_f1: float
    accuracy: float
    uar: float
    per_class: dict[str, ClassScores]
    confusion: list[list[int]]
    labels: tuple[str, ...]
    n: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EvalResult":
        return cls(d["macro_f1"], d["accuracy"], d["uar"],
                   {k: ClassScores(**v) for k, v in d["per_class"].items()},
                   d["confusion"], tuple(d["labels"]), d["n"])


def score(y_true: Sequence[int], y_pred: Sequence[int], labels: tuple[str, ...] = EMOTIONS) -> EvalResult:
    """Metrics from integer class indices. Classes absent from y_true get recall/F1 0 and
    are left out of the UAR (which averages recall over classes that occur)."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape or t.size == 0:
        raise ValueError(f"need equal-length non-empty label arrays, got {t.shape} and {p.shape}")
    c = len(labels)
    confusion = np.zeros((c, c), dtype=np.int64)
    np.add.at(confusion, (t, p), 1)
    tp = np.diag(confusion).astype(np.float64)
    support = confusion.sum(1)
    predicted = confusion.sum(0)
    precision = np.divide(tp, predicted, out=np.zeros(c), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(c), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(c), where=denom > 0)
    per_class = {labels[i]: ClassScores(float(precision[i]), float(recall[i]), float(f1[i]), int(support[i]))
                 for i in range(c)}
    present = support > 0
    return EvalResult(
        macro_f1=float(f1.mean()),
        accuracy=float(tp.sum() / t.size),
        uar=float(recall[present].mean()),
        per_class=per_class,
        confusion=confusion.tolist(),
        labels=tuple(labels),
        n=int(t.size),
    )


@dataclass(frozen=True)
class PresentClassEval:
    """Scores of a set that holds only some of the classes (e.g. IEMOCAP's four).

    restricted: predictions are the argmax over the scored classes only; its labels are `scored`.
    six_way: the unrestricted argmax over every class, so its confusion shows clips that went to
    a class the set does not have.
    """

    scored: tuple[str, ...]
    restricted: EvalResult
    six_way: EvalResult


def score_present_classes(y_true: Sequence[int], probs: np.ndarray,
                          labels: tuple[str, ...] = EMOTIONS) -> PresentClassEval:
    """Score probabilities [N, len(labels)] on the classes that occur in y_true (indices into labels).

    With every class present, restricted and six_way are the same scores."""
    t = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs)
    present = np.unique(t)
    if present.size < 2:
        raise ValueError(f"scoring needs clips of at least two classes, got only {[labels[i] for i in present]}")
    restricted_pred = present[probs[:, present].argmax(1)]
    position = np.full(len(labels), -1, dtype=np.int64)
    position[present] = np.arange(present.size)
    scored = tuple(labels[i] for i in present)
    return PresentClassEval(scored, score(position[t], position[restricted_pred], scored),
                            score(t, probs.argmax(1), labels))


def summarise_folds(results: list[EvalResult]) -> dict:
    """Mean and (population) std over folds of macro-F1, accuracy, UAR and per-class F1."""
    def stats(values: list[float]) -> dict:
        arr = np.asarray(values, dtype=np.float64)
        return {"mean": float(arr.mean()), "std": float(arr.std()), "values": [float(v) for v in arr]}

    labels = results[0].labels
    return {
        "folds": len(results),
        "macro_f1": stats([r.macro_f1 for r in results]),
        "accuracy": stats([r.accuracy for r in results]),
        "uar": stats([r.uar for r in results]),
        "per_class_f1": {lab: stats([r.per_class[lab].f1 for r in results]) for lab in labels},
    }
