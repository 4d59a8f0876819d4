"""Classical models on openSMILE functionals and their Classifier wrapper.

Registry entries built here:
    egemaps-svm      eGeMAPS v02 (88) + RBF SVM, Platt-calibrated: the reference row of every report
    compare-logreg   ComParE 2016 (6373) + L2 logistic regression (C 1e-3): many weak
                     descriptors, one strongly regularised linear layer

Not an nn.Module. Interface used by the trainer (F = the feature set's dimension):

    svm = build_model("egemaps-svm", C=10.0)       # args: FunctionalsClassifierConfig fields
    svm.fit(X, y)                                   # X float [N, F] functionals, y int [N] in 0..5
    svm.predict_proba(X)                            # -> float32 [N, 6] in EMOTIONS order
    svm.model_args()                                # JSON args; build_model("egemaps-svm", **args) rebuilds it
    save_bundle(out_dir, svm, "egemaps-svm", meta)  # kind "sklearn", pickled with joblib

At inference `SklearnClassifier` computes the model's functionals of each clip.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from models.classifier import Classifier
from models.config_checks import check_fields
from models.functionals import FEATURE_SET, feature_dim, functionals_batch
from models.labels import EMOTIONS, NUM_CLASSES


@dataclass(frozen=True)
class FunctionalsClassifierConfig:
    """classifier: "rbf-svm" or "logreg"; C (inverse regularisation, both); gamma (SVM only:
    "scale", "auto" or a float); feature_set: the openSMILE functionals it reads."""

    C: float = 10.0
    gamma: Any = "scale"
    class_weight: str | None = "balanced"
    random_state: int = 0
    feature_set: str = FEATURE_SET
    classifier: str = "rbf-svm"

    def __post_init__(self) -> None:
        check_fields(self, {"C": (1e-12, 1e12), "random_state": (0, 2**32 - 1)})
        feature_dim(self.feature_set)
        if self.classifier not in ("rbf-svm", "logreg"):
            raise ValueError(f"classifier must be 'rbf-svm' or 'logreg', got {self.classifier!r}")
        if self.C <= 0:
            raise ValueError(f"C must be > 0, got {self.C}")
        if not (self.gamma in ("scale", "auto") or (isinstance(self.gamma, (int, float)) and self.gamma > 0)):
            raise ValueError(f"gamma must be 'scale', 'auto' or a positive number, got {self.gamma!r}")
        if self.class_weight not in (None, "balanced"):
            raise ValueError(f"class_weight must be None or 'balanced', got {self.class_weight!r}")


class FunctionalsClassifier:
    """StandardScaler + RBF SVC with Platt-scaled probabilities, or + logistic regression, on functionals."""

    def __init__(self, config: FunctionalsClassifierConfig | None = None) -> None:
        self.config = config or FunctionalsClassifierConfig()
        self.pipeline: Any = None
        self.classes_ = np.arange(NUM_CLASSES)

    @property
    def functionals_set(self) -> str:
        return self.config.feature_set

    def _make_pipeline(self, folds: int) -> Any:
        """StandardScaler -> Platt-calibrated RBF SVC, or StandardScaler -> LogisticRegression.

        scikit-learn 1.9 deprecates SVC(probability=True); CalibratedClassifierCV
        with method="sigmoid", ensemble=False is the same internal-CV Platt scaling.
        """
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVC

        cfg = self.config
        if cfg.classifier == "logreg":
            return make_pipeline(StandardScaler(), LogisticRegression(
                C=cfg.C, class_weight=cfg.class_weight, max_iter=5000, random_state=cfg.random_state))
        svc = SVC(kernel="rbf", C=cfg.C, gamma=cfg.gamma, class_weight=cfg.class_weight,
                  random_state=cfg.random_state)
        return make_pipeline(StandardScaler(),
                             CalibratedClassifierCV(svc, method="sigmoid", cv=folds, ensemble=False))

    def fit(self, X: np.ndarray, y: np.ndarray) -> "FunctionalsClassifier":
        """X: float [N, F]; y: int [N] class indices into EMOTIONS."""
        X = self._check_features(X)
        y = np.asarray(y).astype(int).reshape(-1)
        if y.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]} labels")
        if y.min() < 0 or y.max() >= NUM_CLASSES:
            raise ValueError(f"labels must be in 0..{NUM_CLASSES - 1}, got {sorted(set(y.tolist()))}")
        counts = np.bincount(y, minlength=NUM_CLASSES)
        present = counts[counts > 0]
        if len(present) < 2:
            raise ValueError("the SVM needs at least two classes to fit")
        if present.min() < 2:
            raise ValueError(f"every class present needs >= 2 examples for calibration, counts: {counts.tolist()}")
        self.pipeline = self._make_pipeline(folds=int(min(5, present.min())))
        self.pipeline.fit(X, y)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """X: float [N, F] -> float32 [N, 6] in EMOTIONS order (classes absent in training get 0)."""
        if self.pipeline is None:
            raise RuntimeError("FunctionalsClassifier.predict_proba called before fit")
        seen = self.pipeline.classes_
        probs = np.zeros((len(X), NUM_CLASSES), dtype=np.float32)
        probs[:, seen] = self.pipeline.predict_proba(self._check_features(X))
        return probs

    def predict(self, X: np.ndarray) -> np.ndarray:
        """X: float [N, F] -> int [N] class indices."""
        return self.predict_proba(X).argmax(axis=1)

    def model_args(self) -> dict[str, Any]:
        return asdict(self.config)

    def feature_config(self) -> dict[str, Any]:
        return {"type": "functionals", "feature_set": self.functionals_set,
                "dim": feature_dim(self.functionals_set)}

    def _check_features(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        dim = feature_dim(self.functionals_set)
        if X.ndim != 2 or X.shape[1] != dim:
            raise ValueError(f"expected {self.functionals_set} features of shape [N, {dim}], got {X.shape}")
        return X


# Their names until 2026-12-02: sklearn bundles pickled then refer to them (joblib looks them up by name).
EgemapsSVM, EgemapsSVMConfig = FunctionalsClassifier, FunctionalsClassifierConfig


def build(**args: Any) -> FunctionalsClassifier:
    """Registry factory: keyword args are FunctionalsClassifierConfig fields."""
    known = set(FunctionalsClassifierConfig.__dataclass_fields__)
    unknown = sorted(set(args) - known)
    if unknown:
        raise ValueError(f"unknown egemaps-svm argument(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
    return FunctionalsClassifier(FunctionalsClassifierConfig(**args))


class SklearnClassifier(Classifier):
    """A fitted scikit-learn style model on openSMILE functionals as a Classifier (CPU only)."""

    def __init__(self, model: Any, name: str, checkpoint_hash: str = "") -> None:
        self.model = model
        self.name = name
        self.labels = EMOTIONS
        self.device = "cpu"
        self._checkpoint_hash = checkpoint_hash

    @property
    def checkpoint_hash(self) -> str:
        return self._checkpoint_hash

    def predict(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        """list of float32 16 kHz mono arrays -> float32 [B, 6]."""
        if len(waveforms) == 0:
            return np.zeros((0, NUM_CLASSES), dtype=np.float32)
        feature_set = self.model.functionals_set
        raw = np.asarray(self.model.predict_proba(functionals_batch(waveforms, feature_set)), dtype=np.float32)
        if raw.shape[1] == NUM_CLASSES:
            return raw
        probs = np.zeros((raw.shape[0], NUM_CLASSES), dtype=np.float32)
        probs[:, np.asarray(self.model.classes_, dtype=int)] = raw
        return probs

    def describe(self) -> str:
        suffix = f" [{self._checkpoint_hash}]" if self._checkpoint_hash else ""
        return f"{self.name} on cpu{suffix}"
