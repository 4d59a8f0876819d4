"""Per-speaker normalisation of encoder states: a running baseline of one voice.

Cross-corpus emotion work finds that much of what separates corpora and speakers is a constant
offset in the encoder's feature space (voice, microphone, room). Z-scoring each speaker's features
with that speaker's own statistics removes it. A live monitor hears one person for minutes, so the
statistics can be gathered as they talk: `SpeakerBaseline` accumulates the mean and variance of
every layer's frame features over the utterances it has been given, and normalises with them.

Pure and torch-free: no threads, clocks or I/O. Features are frames-first arrays [F, L, D]
(frames, encoder layers incl. the embedding output, feature dims), as the feature cache stores them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STD_FLOOR = 1e-3  # a feature that never moves (e.g. all-zero padding dims) is not blown up


@dataclass(frozen=True)
class BaselineConfig:
    """max_utterances: the baseline stops learning after this many utterances (None: never stops);
    the statistics of the first few utterances are then kept for the rest of the session."""

    max_utterances: int | None = None

    def __post_init__(self) -> None:
        if self.max_utterances is not None and self.max_utterances < 1:
            raise ValueError(f"max_utterances must be >= 1 or None, got {self.max_utterances}")

    def to_dict(self) -> dict:
        return {"max_utterances": self.max_utterances}


class SpeakerBaseline:
    """Running per-dimension mean and standard deviation of one speaker's frame features.

    push(features [F, L, D]) adds one utterance (ignored once max_utterances were pushed);
    normalise(features [F, L, D]) -> float32 (x - mean) / std, with the statistics so far
    (the features unchanged while nothing was pushed); reset() forgets the speaker.
    """

    def __init__(self, config: BaselineConfig = BaselineConfig()) -> None:
        self.config = config
        self.reset()

    def reset(self) -> None:
        self.utterances = 0
        self._frames = 0
        self._sum: np.ndarray | None = None
        self._sum_sq: np.ndarray | None = None

    def push(self, features: np.ndarray) -> None:
        if self.config.max_utterances is not None and self.utterances >= self.config.max_utterances:
            return
        x = np.asarray(features, dtype=np.float64)
        if x.ndim < 2 or x.shape[0] == 0:
            raise ValueError(f"expected frames-first features [F, ...] with F >= 1, got shape {x.shape}")
        if self._sum is None:
            self._sum, self._sum_sq = np.zeros(x.shape[1:]), np.zeros(x.shape[1:])
        elif self._sum.shape != x.shape[1:]:
            raise ValueError(f"features shaped {x.shape[1:]} per frame after {self._sum.shape}")
        self._sum += x.sum(axis=0)
        self._sum_sq += np.square(x).sum(axis=0)
        self._frames += x.shape[0]
        self.utterances += 1

    def statistics(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(mean, std) per frame dimension, float32 [L, D], or None before the first push."""
        if self._sum is None:
            return None
        mean = self._sum / self._frames
        var = np.maximum(self._sum_sq / self._frames - np.square(mean), 0.0)
        return mean.astype(np.float32), np.maximum(np.sqrt(var), STD_FLOOR).astype(np.float32)

    def normalise(self, features: np.ndarray) -> np.ndarray:
        stats = self.statistics()
        x = np.asarray(features, dtype=np.float32)
        if stats is None:
            return x
        mean, std = stats
        return (x - mean) / std


def running_statistics(speakers: list[str], load: "callable", config: BaselineConfig = BaselineConfig()
                       ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The statistics each clip is normalised with when a speaker's clips arrive in list order:
    clip i gets its speaker's baseline after pushing clips up to and including i.

    speakers: speaker of each clip, in arrival order; load(i) -> clip i's features [F, L, D].
    Returns (mean, std) float32 [L, D] per clip."""
    baselines: dict[str, SpeakerBaseline] = {}
    out = []
    for i, speaker in enumerate(speakers):
        baseline = baselines.setdefault(speaker, SpeakerBaseline(config))
        baseline.push(load(i))
        out.append(baseline.statistics())
    return out
