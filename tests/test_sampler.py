"""Balanced batches for pooled corpora: every corpus, and every class within it, gets its share."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from train.distributed import DistInfo
from train.sampler import BucketBatchSampler, balanced_weights

SINGLE = DistInfo(rank=0, world_size=1, local_rank=0)


def _pool() -> tuple[list[str], np.ndarray]:
    """A pooled set shaped like CREMA-D + RAVDESS + EmoDB: 10x size differences, skewed classes."""
    corpora, labels = [], []
    for corpus, counts in (("crema-d", [790, 790, 790, 790, 680, 790]), ("ravdess", [192, 192, 192, 192, 96, 192]),
                           ("emodb", [127, 46, 69, 71, 79, 62])):
        for cls, n in enumerate(counts):
            corpora += [corpus] * n
            labels += [cls] * n
    return corpora, np.array(labels)


def test_weights_give_each_corpus_and_class_an_equal_share():
    corpora, labels = _pool()
    w = balanced_weights(corpora, labels)
    assert w.sum() == pytest.approx(1.0)
    for corpus in set(corpora):
        mask = np.array([c == corpus for c in corpora])
        assert w[mask].sum() == pytest.approx(1 / 3)
        for cls in range(6):
            assert w[mask & (labels == cls)].sum() == pytest.approx(1 / 18)


def test_drawn_epochs_match_the_shares_within_tolerance():
    corpora, labels = _pool()
    sampler = BucketBatchSampler([1] * len(labels), 32, seed=3, dist=SINGLE,
                                 weights=balanced_weights(corpora, labels))
    drawn: list[int] = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        drawn += [i for batch in sampler for i in batch]
    assert len(drawn) == 4 * len(labels)
    corpus_share = Counter(corpora[i] for i in drawn)
    cell_share = Counter((corpora[i], int(labels[i])) for i in drawn)
    for corpus, n in corpus_share.items():
        assert n / len(drawn) == pytest.approx(1 / 3, abs=0.02)
    for cell, n in cell_share.items():
        assert n / len(drawn) == pytest.approx(1 / 18, abs=0.01)
    # unbalanced, CREMA-D alone would be 71 % of every epoch
    assert Counter(corpora)["crema-d"] / len(corpora) > 0.7


def test_weighted_epochs_are_reproducible_and_differ_between_epochs():
    corpora, labels = _pool()
    weights = balanced_weights(corpora, labels)
    first = BucketBatchSampler(list(range(len(labels))), 16, seed=1, dist=SINGLE, weights=weights)
    again = BucketBatchSampler(list(range(len(labels))), 16, seed=1, dist=SINGLE, weights=weights)
    first.set_epoch(2)
    again.set_epoch(2)
    assert list(first) == list(again)
    again.set_epoch(3)
    assert list(first) != list(again)


def test_ranks_split_the_weighted_draws_evenly():
    corpora, labels = _pool()
    weights = balanced_weights(corpora, labels)
    ranks = [BucketBatchSampler([1] * len(labels), 8, seed=0, dist=DistInfo(rank=r, world_size=2, local_rank=r),
                                weights=weights) for r in (0, 1)]
    counts = [sum(len(b) for b in s) for s in ranks]
    assert abs(counts[0] - counts[1]) <= 1 and sum(counts) == len(labels)
    assert len(ranks[0]) == len(list(ranks[0]))


def test_unweighted_sampler_visits_every_clip_once_per_epoch():
    lengths = [5, 1, 3, 2, 4, 7, 6, 9, 8, 0]
    sampler = BucketBatchSampler(lengths, 3, seed=0, dist=SINGLE)
    seen = [i for batch in sampler for i in batch]
    assert sorted(seen) == list(range(len(lengths)))
