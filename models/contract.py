"""What `train/`, the bundle loader and the ensembles need from a trainable model, as Protocols.

Every torch registry model (log-mel nets in models/arch/, heads on pretrained
encoders) is a `TrainableModel`; the ones whose front end can be computed once
and cached (frozen backbones) are also a `CacheableFrontEnd`. The classical models
on openSMILE functionals (models/svm.py) are `FunctionalsModel`s. Code asks these
questions through the helpers below, never with hasattr/getattr probes.

    functionals_set        openSMILE set the third forward input holds ("eGeMAPSv02", "ComParE_2016"),
                           None when the model reads no functionals
    forward(wave [B, T] float32 16 kHz, lengths [B] int64 samples, functionals [B, F] | None) -> logits [B, 6]
    fit_normalisation(waves, functionals [N, F] | None)     fit in-model statistics on training data
    set_spec_augment(enabled)                                 switch training-time SpecAugment (no-op without)
    model_args() -> dict                                      build_model(name, **model_args()) rebuilds it
    feature_config() -> dict                                  the bundle's "feature": what the model listens to
    frontend_cacheable -> bool                                True when the CacheableFrontEnd split may be cached
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class TrainableModel(Protocol):
    """A torch registry model as `train/` drives it (see the module docstring for shapes)."""

    functionals_set: str | None
    frontend_cacheable: bool

    def __call__(self, wave: torch.Tensor, lengths: torch.Tensor,
                 functionals: torch.Tensor | None = None) -> torch.Tensor: ...

    def fit_normalisation(self, waves: Sequence[np.ndarray], functionals: np.ndarray | None = None) -> None: ...

    def set_spec_augment(self, enabled: bool) -> None: ...

    def model_args(self) -> dict[str, Any]: ...

    def feature_config(self) -> dict[str, Any]: ...


@runtime_checkable
class CacheableFrontEnd(Protocol):
    """A model split into a front end (fixed, cacheable, shareable) and a trainable head.

    frontend_features(wave [B, T], lengths [B]) -> (feats [B, ...], feat_lengths [B]); feats' frame
    axis is `frontend_time_axis`. forward_features(feats, feat_lengths) -> logits [B, 6].
    Heads with equal frontend_key() can share one front-end pass (ensembles)."""

    frontend_time_axis: int
    frozen_backbone: bool

    def frontend_key(self) -> str: ...

    def frontend_features(self, wave: torch.Tensor,
                          lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def forward_features(self, feats: torch.Tensor, feat_lengths: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class FunctionalsModel(Protocol):
    """A scikit-learn style classifier on openSMILE functionals (models/svm.py), bundled as kind "sklearn".

    fit(X [N, F], y [N]); predict_proba(X [N, F]) -> [N, 6]; classes_ [K] class indices."""

    functionals_set: str
    classes_: np.ndarray

    def fit(self, X: np.ndarray, y: np.ndarray) -> Any: ...

    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...

    def model_args(self) -> dict[str, Any]: ...

    def feature_config(self) -> dict[str, Any]: ...


def shares_frontend(model: Any) -> bool:
    """True when `model` is a CacheableFrontEnd on a frozen backbone (cacheable, shareable)."""
    return isinstance(model, CacheableFrontEnd) and bool(model.frozen_backbone)
