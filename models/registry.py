"""Model registry: name -> factory, imported lazily.

`build_model(name, **args)` builds a trainable architecture (an nn.Module, or
the scikit-learn baseline) from its registry name; `python -m train` uses it.
Trained folders are loaded by models/loader.py (`load_classifier`), which
builds through this registry; the registry imports no other VED module.

Unknown names raise `UnknownModelError`, whose message lists the choices.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable


class UnknownModelError(KeyError):
    """Raised for a model name the registry does not know; lists the choices."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else "unknown model"


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry.

    factory: "package.module:callable" imported on first use.
    family: what the entry is, for listings and reports (never for control flow: ask the
        built model through models/contract.py): "logmel" (log-mel front end), "ssl"
        (self-supervised pretrained backbone on raw audio: WavLM, Wav2Vec2), "whisper" (heads on a
        frozen, supervised Whisper encoder), "classical" (scikit-learn on openSMILE functionals).
    defaults: constructor keyword arguments that define this entry (e.g. the
        Conformer V3.2 kernel size); caller arguments override them.
    summary: one line for --help and reports.
    pretrained_encoder: building the entry loads a large pretrained encoder (seconds, hundreds of
        MB), so code that only wants to ask the model a question should not build it.
    """

    name: str
    factory: str
    family: str
    summary: str
    defaults: dict[str, Any] = field(default_factory=dict)
    pretrained_encoder: bool = False

    def resolve(self) -> Callable[..., Any]:
        module_name, _, attr = self.factory.partition(":")
        return getattr(importlib.import_module(module_name), attr)


_SPECS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in _SPECS:
        raise ValueError(f"model {spec.name!r} is registered twice")
    _SPECS[spec.name] = spec
    return spec


def available(family: str | None = None) -> list[str]:
    """Registered names, optionally only one family."""
    return sorted(n for n, s in _SPECS.items() if family is None or s.family == family)


def get_spec(name: str) -> ModelSpec:
    try:
        return _SPECS[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; choose one of: {', '.join(available())}"
        ) from None


def build_model(name: str, **args: Any) -> Any:
    """Build an untrained model by registry name; `args` override the entry's defaults."""
    spec = get_spec(name)
    return spec.resolve()(**{**spec.defaults, **args})


for _spec in (
    ModelSpec("cnn", "models.arch.cnn:build", "logmel", "log-mel CNN baseline"),
    ModelSpec("transformer", "models.arch.transformer:build", "logmel",
              "log-mel Transformer encoder baseline"),
    ModelSpec("conformer-v1", "models.arch.conformer:build", "logmel",
              "baseline log-mel Conformer", {"dropout": 0.1, "conv_kernel_size": 15}),
    ModelSpec("conformer-v3.1", "models.arch.conformer:build", "logmel",
              "log-mel Conformer, trained with Mixup + label smoothing 0.05, dropout 0.3",
              {"dropout": 0.3, "conv_kernel_size": 15}),
    ModelSpec("conformer-v3.2", "models.arch.conformer:build", "logmel",
              "log-mel Conformer with a large depthwise kernel (for sad/fear)",
              {"dropout": 0.3, "conv_kernel_size": 31}),
    ModelSpec("doublestream-v4", "models.arch.doublestream:build", "logmel",
              "log-mel Conformer branch fused with an eGeMAPS functionals branch"),
    ModelSpec("egemaps-svm", "models.svm:build", "classical",
              "eGeMAPS (88 functionals) + RBF SVM reference baseline"),
    ModelSpec("compare-logreg", "models.svm:build", "classical",
              "ComParE 2016 (6373 functionals) + L2 logistic regression",
              {"feature_set": "ComParE_2016", "classifier": "logreg", "C": 1e-3}),
    ModelSpec("wavlm-ultimate", "models.arch.ssl_heads:build_wavlm_ultimate", "ssl",
              "WavLM layer-weighted sum + BiLSTM + attention pooling, focal loss", pretrained_encoder=True),
    ModelSpec("wav2vec2-bilstm", "models.arch.ssl_heads:build_wav2vec2_bilstm", "ssl",
              "fine-tuned Wav2Vec2 (top layers) + BiLSTM head", pretrained_encoder=True),
    ModelSpec("whisper-ultimate", "models.arch.whisper_heads:build_whisper_ultimate", "whisper",
              "frozen Whisper encoder (encoder=tiny.en|base, pinned pip package), layer-weighted sum "
              "(layer_pooling=weighted|last) + BiLSTM + attention pooling, focal loss", pretrained_encoder=True),
):
    register(_spec)
