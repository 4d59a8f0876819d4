"""Batches for training: length buckets, optionally drawn so that corpora and classes weigh equally.

Pooled corpora differ tenfold in size (CREMA-D 4,737 usable clips, RAVDESS 1,056, EmoDB 368 of the
six classes); drawn uniformly, the largest corpus and its class mix would decide what the model
learns. With balancing, each epoch draws as many clips as the training set holds, with replacement
(torch's WeightedRandomSampler), each (corpus, class) cell equally likely within its corpus and
every corpus equally likely overall.
"""
from __future__ import annotations

import math
import random
from collections import Counter

import numpy as np
import torch
from torch.utils.data import DistributedSampler, WeightedRandomSampler

from train.distributed import DistInfo


def balanced_weights(corpora: list[str], labels: np.ndarray) -> np.ndarray:
    """Sampling weight per clip, float64 [N], summing to 1: corpus share 1 / n_corpora, and within
    a corpus each of its classes an equal share, split evenly among that class's clips."""
    labels = np.asarray(labels)
    if len(corpora) != len(labels):
        raise ValueError(f"{len(corpora)} corpus names for {len(labels)} labels")
    cells = Counter(zip(corpora, labels.tolist()))
    classes_in = Counter(corpus for corpus, _ in cells)
    n_corpora = len(classes_in)
    weights = np.array([1.0 / (n_corpora * classes_in[c] * cells[(c, y)]) for c, y in zip(corpora, labels.tolist())])
    return weights / weights.sum()


class BucketBatchSampler:
    """Batches of similar-length clips (less padding), reshuffled every epoch.

    Unweighted: every clip once per epoch, sharded across ranks by DistributedSampler so every rank
    gets the same number of batches. weights (float [N], see balanced_weights): each epoch draws N
    clips with replacement by weight, seeded by (seed, epoch); rank r takes every world_size-th draw.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, dist: DistInfo,
                 bucket_batches: int = 8, weights: np.ndarray | None = None) -> None:
        self.lengths, self.batch_size, self.seed, self.bucket_batches = lengths, batch_size, seed, bucket_batches
        self.dist, self.weights = dist, None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.sampler = DistributedSampler(range(len(lengths)), num_replicas=dist.world_size, rank=dist.rank,
                                          shuffle=True, seed=seed, drop_last=False)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.sampler.set_epoch(epoch)

    def _epoch_indices(self) -> list[int]:
        if self.weights is None:
            return list(self.sampler)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        draws = list(WeightedRandomSampler(self.weights, len(self.lengths), replacement=True, generator=generator))
        return draws[self.dist.rank::self.dist.world_size]

    def __iter__(self):
        idx = self._epoch_indices()
        rng = random.Random(self.seed * 7919 + self.epoch)
        chunk = self.batch_size * self.bucket_batches
        batches = []
        for start in range(0, len(idx), chunk):
            bucket = sorted(idx[start:start + chunk], key=lambda i: self.lengths[i])
            batches += [bucket[b:b + self.batch_size] for b in range(0, len(bucket), self.batch_size)]
        rng.shuffle(batches)
        return iter(batches)

    def __len__(self) -> int:
        n = len(self.sampler) if self.weights is None else len(range(self.dist.rank, len(self.lengths),
                                                                      self.dist.world_size))
        return math.ceil(n / self.batch_size) if n else 0
