"""Losses on soft targets: weighted cross-entropy with label smoothing, and weighted focal loss.

All losses take logits [B, C] and soft targets [B, C] (one-hot rows for plain labels,
convex mixtures for Mixup). Class weighting: each sample's weight is sum_c w_c * y_c of its
(unsmoothed) target, and the batch loss is sum_i weight_i * loss_i / sum_i weight_i. For
one-hot targets and no smoothing this is exactly torch's `F.cross_entropy(weight=w)`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

LOSS_KINDS = ("ce", "focal")


@dataclass(frozen=True)
class LossConfig:
    kind: str = "ce"
    focal_gamma: float = 2.0
    label_smoothing: float = 0.0
    class_weighting: bool = True

    def __post_init__(self) -> None:
        if self.kind not in LOSS_KINDS:
            raise ValueError(f"loss kind must be one of {LOSS_KINDS}, got {self.kind!r}")
        if self.focal_gamma < 0:
            raise ValueError(f"focal_gamma must be >= 0, got {self.focal_gamma}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")


def class_weights_from_counts(counts: list[int]) -> torch.Tensor:
    """Inverse-frequency weights normalised to mean 1: w_c = (1/n_c) / mean_j(1/n_j). Returns float32 [C]."""
    n = torch.tensor(counts, dtype=torch.float64)
    if (n <= 0).any():
        raise ValueError(f"every class needs at least one training clip, got counts {counts}")
    inv = 1.0 / n
    return (inv / inv.mean()).float()


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """int64 [B] -> float32 [B, C]."""
    return F.one_hot(labels, num_classes).float()


def smooth(targets: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """(1 - eps) * y + eps / C, rows still sum to 1. targets: [B, C]."""
    return targets * (1.0 - label_smoothing) + label_smoothing / targets.shape[1]


def _reduce(per_sample: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:
        return per_sample.mean()
    sample_w = targets @ weights.to(targets)
    return (sample_w * per_sample).sum() / sample_w.sum()


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None,
                       label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy against soft targets [B, C]; weights [C] or None. Returns a scalar."""
    log_p = F.log_softmax(logits.float(), dim=1)
    per_sample = -(smooth(targets, label_smoothing) * log_p).sum(dim=1)
    return _reduce(per_sample, targets, weights)


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float, weights: torch.Tensor | None = None,
               label_smoothing: float = 0.0) -> torch.Tensor:
    """Focal loss -sum_c q_c (1 - p_c)^gamma log p_c; equals soft_cross_entropy at gamma 0."""
    log_p = F.log_softmax(logits.float(), dim=1)
    modulation = (1.0 - log_p.exp()).clamp_min(0.0).pow(gamma)
    per_sample = -(smooth(targets, label_smoothing) * modulation * log_p).sum(dim=1)
    return _reduce(per_sample, targets, weights)


def js_consistency(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Mean Jensen-Shannon divergence (nats, 0 to ln 2) between two predictions of the same clips,
    logits [B, C] each: 0.5 KL(p_a || m) + 0.5 KL(p_b || m) with m the average of p_a and p_b."""
    log_pa, log_pb = F.log_softmax(logits_a.float(), 1), F.log_softmax(logits_b.float(), 1)
    log_m = torch.logsumexp(torch.stack([log_pa, log_pb]), 0) - math.log(2.0)
    kl_a = F.kl_div(log_m, log_pa, reduction="none", log_target=True).sum(1)
    kl_b = F.kl_div(log_m, log_pb, reduction="none", log_target=True).sum(1)
    return (0.5 * (kl_a + kl_b)).mean()


def make_loss(cfg: LossConfig, weights: torch.Tensor | None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Returns loss(logits [B, C], soft_targets [B, C]) -> scalar."""
    w = weights if cfg.class_weighting else None
    if cfg.kind == "focal":
        return lambda logits, t: focal_loss(logits, t, cfg.focal_gamma, w, cfg.label_smoothing)
    return lambda logits, t: soft_cross_entropy(logits, t, w, cfg.label_smoothing)
