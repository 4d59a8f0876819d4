"""The one interface the engine knows about models.

Every registry entry (log-mel nets, the eGeMAPS SVM, WavLM heads, ensembles)
is wrapped as a `Classifier`. The engine never sees anything else.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np

from models.labels import EMOTIONS

SAMPLE_RATE_HZ = 16_000


class Classifier(ABC):
    """Waveforms at 16 kHz in, class probabilities out.

    Subclasses set `name` (registry name or bundle name), `labels` (tuple of
    class names, the order of the probability columns) and `device`
    ("cpu", "cuda", "cuda:0"...).
    """

    name: str = "classifier"
    # A calibrated top probability below this reads "uncertain" (models/calibration.py); None: never.
    uncertain_below: float | None = None
    labels: tuple[str, ...] = EMOTIONS
    device: str = "cpu"

    @abstractmethod
    def predict(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        """Classify a batch of clips.

        waveforms: list of float32 mono arrays at 16 kHz in [-1, 1], any lengths.
        Returns float32 probabilities of shape [batch, len(labels)], rows sum to 1.
        """

    # True when predict_utterance learns the session's speaker (a per-speaker baseline,
    # models/baseline.py): scoring then goes speaker by speaker, in order (train evaluate).
    learns_speaker: bool = False

    def predict_utterance(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        """Classify finished utterances of the session's speaker, in order -> float32 [batch, len(labels)].
        A model with a speaker baseline first adds each utterance to it; every other model predicts
        as predict() does. Live windows (partials) go to predict(), which never changes the baseline."""
        return self.predict(waveforms)

    def reset_session(self) -> None:
        """Forget the session's speaker: a new session began, or the user says the speaker changed.
        Nothing to forget by default."""

    def warmup(self, seconds: float = 1.0) -> np.ndarray:
        """Run one prediction on generated audio so the first real call is not slow -> its probs [1, 6]."""
        rng = np.random.default_rng(0)
        clip = (0.01 * rng.standard_normal(int(seconds * SAMPLE_RATE_HZ))).astype(np.float32)
        return self.predict([clip])

    def describe(self) -> str:
        """One line for logs and the status bar."""
        return f"{self.name} on {self.device}"

    def cheapest_branch(self) -> "Classifier":
        """The cheapest part of this model that still classifies on its own, for live traces
        (short windows every few hundred ms). A single model is its own cheapest branch; an
        ensemble returns the subset of members that costs least (models/ensemble.py)."""
        return self

    @property
    def checkpoint_hash(self) -> str:
        """Short hash identifying the weights (empty when untrained / not from a bundle)."""
        return ""
