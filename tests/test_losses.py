"""Losses checked against hand computation."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from train.augment import mixup
from train.losses import (LossConfig, class_weights_from_counts, focal_loss, make_loss, one_hot, smooth,
                          soft_cross_entropy)


def _log_softmax_row(row: list[float]) -> list[float]:
    m = max(row)
    z = math.log(sum(math.exp(v - m) for v in row)) + m
    return [v - z for v in row]


def test_class_weights_inverse_frequency():
    w = class_weights_from_counts([10, 20, 40])
    inv = [1 / 10, 1 / 20, 1 / 40]
    mean = sum(inv) / 3
    assert torch.allclose(w, torch.tensor([v / mean for v in inv]), atol=1e-6)
    assert w.mean().item() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        class_weights_from_counts([3, 0, 1])


def test_weighted_ce_matches_torch_and_hand():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    labels = torch.tensor([0, 2])
    w = torch.tensor([0.5, 1.0, 2.0])
    ours = soft_cross_entropy(logits, one_hot(labels, 3), w)
    assert ours.item() == pytest.approx(F.cross_entropy(logits, labels, weight=w).item(), abs=1e-6)
    lp0, lp1 = _log_softmax_row([2.0, 0.5, -1.0]), _log_softmax_row([0.1, 0.2, 0.3])
    hand = (0.5 * -lp0[0] + 2.0 * -lp1[2]) / (0.5 + 2.0)
    assert ours.item() == pytest.approx(hand, abs=1e-6)


def test_label_smoothing_by_hand():
    logits = torch.tensor([[1.0, 2.0, 3.0, 0.0]])
    eps = 0.1
    lp = _log_softmax_row([1.0, 2.0, 3.0, 0.0])
    q = [eps / 4] * 4
    q[2] += 1 - eps
    hand = -sum(qi * li for qi, li in zip(q, lp))
    ours = soft_cross_entropy(logits, one_hot(torch.tensor([2]), 4), label_smoothing=eps)
    assert ours.item() == pytest.approx(hand, abs=1e-6)
    assert ours.item() == pytest.approx(F.cross_entropy(logits, torch.tensor([2]), label_smoothing=eps).item(),
                                        abs=1e-6)
    assert torch.allclose(smooth(one_hot(torch.tensor([2]), 4), eps).sum(1), torch.ones(1))


def test_focal_equals_ce_at_gamma_zero_and_downweights_easy():
    torch.manual_seed(0)
    logits = torch.randn(8, 6)
    targets = one_hot(torch.randint(0, 6, (8,)), 6)
    w = torch.rand(6) + 0.5
    assert focal_loss(logits, targets, 0.0, w).item() == pytest.approx(
        soft_cross_entropy(logits, targets, w).item(), abs=1e-6)
    easy = torch.tensor([[5.0, 0.0]])
    t = one_hot(torch.tensor([0]), 2)
    p = 1 / (1 + math.exp(-5.0))
    assert focal_loss(easy, t, 2.0).item() == pytest.approx(-(1 - p) ** 2 * math.log(p), rel=1e-5)


def test_mixup_soft_targets_by_hand():
    gen = torch.Generator().manual_seed(0)
    waves = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0]])
    lengths = torch.tensor([2, 3])
    ege = torch.tensor([[1.0], [3.0]])
    targets = one_hot(torch.tensor([0, 1]), 2)
    m = mixup(waves, lengths, ege, targets, alpha=0.4, generator=gen)
    lam, perm = m.lam, m.perm.tolist()
    assert 0.5 <= lam <= 1.0
    for i in range(2):
        j = perm[i]
        assert torch.allclose(m.waves[i], lam * waves[i] + (1 - lam) * waves[j])
        assert m.egemaps[i].item() == pytest.approx(lam * ege[i].item() + (1 - lam) * ege[j].item())
        assert torch.allclose(m.targets[i], lam * targets[i] + (1 - lam) * targets[j])
        assert m.lengths[i].item() == max(lengths[i].item(), lengths[j].item())
    logits = torch.tensor([[0.3, -0.2], [1.0, 0.0]])
    loss = soft_cross_entropy(logits, m.targets)
    hand = sum(-sum(m.targets[i, c].item() * _log_softmax_row(logits[i].tolist())[c] for c in range(2))
               for i in range(2)) / 2
    assert loss.item() == pytest.approx(hand, abs=1e-6)


def test_make_loss_and_config_validation():
    cfg = LossConfig(kind="focal", focal_gamma=0.0, label_smoothing=0.0)
    logits, targets = torch.randn(4, 6), one_hot(torch.tensor([0, 1, 2, 3]), 6)
    assert make_loss(cfg, None)(logits, targets).item() == pytest.approx(
        soft_cross_entropy(logits, targets).item(), abs=1e-6)
    with pytest.raises(ValueError):
        LossConfig(kind="hinge")
    with pytest.raises(ValueError):
        LossConfig(label_smoothing=1.5)


def test_js_consistency_is_zero_for_equal_predictions_and_ln2_for_disjoint_ones():
    import math

    import torch

    from train.losses import js_consistency

    a = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]])
    assert float(js_consistency(a, a + 3.0)) < 1e-7  # a constant shift is the same prediction
    far = torch.tensor([[60.0, 0.0, 0.0]]), torch.tensor([[0.0, 60.0, 0.0]])
    assert abs(float(js_consistency(*far)) - math.log(2)) < 1e-5
    b = torch.tensor([[0.0, 1.0, 0.0], [1.0, -1.0, 2.0]])
    pa, pb = a.softmax(1), b.softmax(1)
    m = (pa + pb) / 2
    by_hand = (0.5 * (pa * (pa / m).log()).sum(1) + 0.5 * (pb * (pb / m).log()).sum(1)).mean()
    assert torch.allclose(js_consistency(a, b), by_hand, atol=1e-6)
    assert torch.allclose(js_consistency(a, b), js_consistency(b, a), atol=1e-7)
