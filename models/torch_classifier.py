"""`TorchClassifier`: any trainable VED nn.Module (log-mel or SSL) as a `Classifier`.

The module is a models.contract.TrainableModel:
forward(wave [B, T], lengths [B], functionals [B, F] | None) -> logits [B, 6].
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from models.classifier import SAMPLE_RATE_HZ, Classifier
from models.device import resolve_device
from models.features import pad_batch
from models.labels import EMOTIONS


class TorchClassifier(Classifier):
    """Pads the batch, builds lengths, adds the model's openSMILE functionals if any, returns softmax probs.

    device: chosen once ("cuda" when available else "cpu" unless given); the
    model is moved there once. On CUDA the host batch is pinned so the copy
    can be asynchronous.
    """

    def __init__(self, model: nn.Module, name: str, device: str | None = None,
                 checkpoint_hash: str = "") -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.name = name
        self.labels = EMOTIONS
        self._checkpoint_hash = checkpoint_hash
        self._pin = self.device.startswith("cuda")
        self._functionals_set = model.functionals_set  # models.contract.TrainableModel

    @property
    def checkpoint_hash(self) -> str:
        return self._checkpoint_hash

    def predict(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        """list of float32 16 kHz mono arrays -> float32 probabilities [B, 6]."""
        if len(waveforms) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        arrays = [_as_mono(w) for w in waveforms]
        wave, lengths = pad_batch(arrays, device=self.device, pin_memory=self._pin)
        functionals = None
        if self._functionals_set is not None:
            from models.functionals import functionals_batch

            values = torch.from_numpy(functionals_batch(arrays, self._functionals_set))
            if self._pin:
                values = values.pin_memory()
            functionals = values.to(self.device, non_blocking=self._pin)
        with torch.inference_mode():
            logits = self.model(wave, lengths, functionals)
            probs = torch.softmax(logits.float(), dim=-1)
        return probs.cpu().numpy().astype(np.float32, copy=False)

    def warmup(self, seconds: float = 2.5, repeats: int = 3) -> np.ndarray:
        """A few passes on generated audio (the first CPU calls pay for kernel/primitive setup) -> last probs."""
        rng = np.random.default_rng(0)
        clip = (0.01 * rng.standard_normal(int(seconds * SAMPLE_RATE_HZ))).astype(np.float32)
        for _ in range(repeats):
            probs = self.predict([clip])
        return probs

    def describe(self) -> str:
        suffix = f" [{self._checkpoint_hash}]" if self._checkpoint_hash else ""
        return f"{self.name} on {self.device}{suffix}"


def _as_mono(wave: np.ndarray) -> np.ndarray:
    array = np.asarray(wave, dtype=np.float32)
    if array.ndim != 1:
        raise ValueError(f"expected a 1-D mono waveform, got shape {array.shape}")
    return array
