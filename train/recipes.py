"""Per-model training recipes (defaults from the research notes); command-line flags override them.

A recipe holds TrainConfig fields plus the loss fields (loss, focal_gamma, label_smoothing).
Architecture settings (dropout, kernel size...) live in the registry entry's defaults.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any

from train.augment import AugmentConfig
from train.loop import TrainConfig
from train.losses import LossConfig

_LOGMEL_BASE: dict[str, Any] = {"epochs": 40, "batch_size": 16, "lr": 1e-3, "weight_decay": 1e-2,
                                "patience_epochs": 10}

RECIPES: dict[str, dict[str, Any]] = {
    "cnn": {**_LOGMEL_BASE},
    "transformer": {**_LOGMEL_BASE, "lr": 5e-4},
    "conformer-v1": {**_LOGMEL_BASE},
    # V3.1: Mixup + label smoothing 0.05 (+ dropout 0.3 from the registry entry).
    "conformer-v3.1": {**_LOGMEL_BASE, "mixup_alpha": 0.4, "label_smoothing": 0.05},
    "conformer-v3.2": {**_LOGMEL_BASE, "mixup_alpha": 0.4, "label_smoothing": 0.05},
    "doublestream-v4": {**_LOGMEL_BASE, "epochs": 30, "mixup_alpha": 0.4, "label_smoothing": 0.05},
    # Frozen WavLM + head: focal loss against the hard classes; the head learns fast.
    "wavlm-ultimate": {"epochs": 30, "batch_size": 16, "lr": 5e-4, "weight_decay": 1e-2,
                       "patience_epochs": 8, "loss": "focal", "focal_gamma": 2.0},
    # The same head and loss on a frozen Whisper encoder.
    "whisper-ultimate": {"epochs": 30, "batch_size": 16, "lr": 5e-4, "weight_decay": 1e-2,
                         "patience_epochs": 8, "loss": "focal", "focal_gamma": 2.0},
    "wav2vec2-bilstm": {"epochs": 20, "batch_size": 8, "lr": 5e-5, "weight_decay": 1e-2,
                        "patience_epochs": 6, "label_smoothing": 0.05},
}

LOSS_KEYS = {"loss": "kind", "focal_gamma": "focal_gamma", "label_smoothing": "label_smoothing"}


def recipe_for(model_name: str) -> dict[str, Any]:
    """The recipe of a registry name ({} for names without one)."""
    return dict(RECIPES.get(model_name, {}))


AUGMENT_PRESETS = ("seed", "microphone", "off")


def augment_preset(name: str) -> AugmentConfig:
    """seed: the research recipe's gain/noise/shift/speed; microphone: plus room reverb, band limiting,
    +-12 dB gain and 5-30 dB coloured noise (train.room); off: none."""
    presets = {"seed": AugmentConfig, "microphone": AugmentConfig.microphone, "off": AugmentConfig.off}
    if name not in presets:
        raise ValueError(f"unknown augmentation {name!r}; choose one of: {', '.join(AUGMENT_PRESETS)}")
    return presets[name]()


def build_train_config(model_name: str, overrides: dict[str, Any], augment: str = "seed") -> TrainConfig:
    """Recipe of `model_name`, then `overrides` (only keys whose value is not None), with the
    waveform augmentation preset `augment` (AUGMENT_PRESETS).

    Keys are TrainConfig field names plus loss / focal_gamma / label_smoothing.
    """
    settings = {**recipe_for(model_name), **{k: v for k, v in overrides.items() if v is not None}}
    loss_kwargs = {LOSS_KEYS[k]: settings.pop(k) for k in list(settings) if k in LOSS_KEYS}
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"unknown training setting(s) {', '.join(unknown)}")
    return TrainConfig(**settings, loss=LossConfig(**loss_kwargs), augment=augment_preset(augment))
