"""DoubleStream V4 (registry: doublestream-v4): log-mel Conformer branch + openSMILE functionals branch.

wave [B, T], lengths [B] -> ConformerEncoder -> a [B, A] (A = d_model, or 2 * d_model for stats pooling)
functionals [B, F] -> standardise (fitted buffers) -> MLP -> e [B, functionals_hidden]
    F = 88 for `functionals="eGeMAPSv02"` (the design's V4), 6373 for "ComParE_2016"
fusion "concat": [a; e] -> MLP -> logits [B, 6]
fusion "gated":  e' = W e [B, A]; g = sigmoid(W_g [a; e']); g * a + (1 - g) * e' -> MLP -> logits [B, 6]

The two streams see complementary evidence: the Conformer learns spectral
and temporal patterns, the functionals give utterance-level prosody (pitch, loudness,
jitter/shimmer statistics) that a short-context net finds hard to estimate.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from models.arch.blocks import LogMelModel, build_config
from models.arch.conformer import ConformerConfig, ConformerEncoder
from models.config_checks import check_fields
from models.features import LogMelFrontend
from models.functionals import FEATURE_SET, feature_dim
from models.labels import NUM_CLASSES


def _default_conformer() -> ConformerConfig:
    """The Conformer branch of V4: narrower than a stand-alone Conformer, dropout 0.2."""
    return ConformerConfig(d_model=112, n_blocks=3, subsampling_channels=48, dropout=0.2)


@dataclass(frozen=True)
class DoubleStreamConfig:
    """The Conformer branch (a ConformerConfig) plus the functionals branch (openSMILE set) and fusion."""

    conformer: ConformerConfig = field(default_factory=_default_conformer)
    functionals_hidden: int = 64
    functionals_dropout: float = 0.2
    fusion: str = "concat"
    functionals: str = FEATURE_SET

    def __post_init__(self) -> None:
        check_fields(self, {"functionals_hidden": (1, 4096)})
        feature_dim(self.functionals)
        if not 0.0 <= self.functionals_dropout < 1.0:
            raise ValueError(f"functionals_dropout must be in [0, 1), got {self.functionals_dropout}")
        if self.fusion not in ("concat", "gated"):
            raise ValueError(f"fusion must be 'concat' or 'gated', got {self.fusion!r}")


class DoubleStreamClassifier(LogMelModel):
    """wave [B, T], lengths [B], functionals [B, F] (required) -> logits [B, 6]."""

    def __init__(self, config: DoubleStreamConfig | None = None) -> None:
        super().__init__(config or DoubleStreamConfig())
        cfg = self.config
        self.encoder = ConformerEncoder(cfg.conformer)
        self.functionals_dim = feature_dim(cfg.functionals)
        self.register_buffer("functionals_mean", torch.zeros(self.functionals_dim))
        self.register_buffer("functionals_std", torch.ones(self.functionals_dim))
        hidden = cfg.functionals_hidden
        self.functionals_branch = nn.Sequential(
            nn.Linear(self.functionals_dim, hidden), nn.LayerNorm(hidden), nn.SiLU(),
            nn.Dropout(cfg.functionals_dropout), nn.Linear(hidden, hidden), nn.SiLU())
        audio_dim = self.encoder.out_dim
        if cfg.fusion == "gated":
            self.functionals_proj = nn.Linear(hidden, audio_dim)
            self.gate = nn.Linear(2 * audio_dim, audio_dim)
            fused = audio_dim
        else:
            self.functionals_proj = None
            self.gate = None
            fused = audio_dim + hidden
        d_model = cfg.conformer.d_model
        self.head = nn.Sequential(nn.Linear(fused, d_model), nn.SiLU(), nn.Dropout(cfg.conformer.dropout),
                                  nn.Linear(d_model, NUM_CLASSES))

    @property
    def frontend(self) -> LogMelFrontend:
        return self.encoder.frontend

    @property
    def functionals_set(self) -> str:
        """The openSMILE feature set the functionals branch reads."""
        return self.config.functionals

    def feature_config(self) -> dict[str, Any]:
        return {**self.frontend.config_dict(), "type": "logmel+functionals",
                "functionals": {"feature_set": self.config.functionals, "dim": self.functionals_dim}}

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor,
                functionals: torch.Tensor | None = None) -> torch.Tensor:
        if functionals is None:
            raise ValueError(f"doublestream-v4 needs {self.config.functionals} functionals: "
                             f"pass functionals [B, {self.functionals_dim}]")
        if functionals.shape != (wave.shape[0], self.functionals_dim):
            raise ValueError(f"functionals must be [{wave.shape[0]}, {self.functionals_dim}], "
                             f"got {tuple(functionals.shape)}")
        audio = self.encoder(wave, lengths)  # [B, A]
        prosody = self.functionals_branch((functionals.float() - self.functionals_mean) / self.functionals_std)
        if self.gate is None:
            return self.head(torch.cat([audio, prosody], dim=-1))
        projected = self.functionals_proj(prosody)  # [B, A]
        gate = torch.sigmoid(self.gate(torch.cat([audio, projected], dim=-1)))
        return self.head(gate * audio + (1.0 - gate) * projected)

    def fit_normalisation(self, waves: Sequence[np.ndarray], functionals: np.ndarray | None = None) -> None:
        """Fit log-mel stats on `waves` and functionals mean/std on `functionals` [N, F] (required)."""
        if functionals is None:
            raise ValueError(f"doublestream-v4 needs the training {self.config.functionals} functionals "
                             "to fit its normalisation")
        values = np.asarray(functionals, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != self.functionals_dim or values.shape[0] == 0:
            raise ValueError(f"functionals must be [N, {self.functionals_dim}] with N >= 1, got {values.shape}")
        super().fit_normalisation(waves, None)
        std = values.std(axis=0)
        std[std < 1e-6] = 1.0  # constant features: leave them centred but unscaled
        self.functionals_mean.copy_(torch.from_numpy(values.mean(axis=0)).float())
        self.functionals_std.copy_(torch.from_numpy(std).float())


def build(**args: Any) -> DoubleStreamClassifier:
    """Registry factory: keyword args are DoubleStreamConfig fields.

    `conformer` may be a ConformerConfig or its dict (as model_args() writes it); ConformerConfig
    fields may also be given flat (d_model=64, as `--model-arg` and format-1 bundles do) and then
    override the branch defaults."""
    own = {f.name for f in fields(DoubleStreamConfig)}
    branch_fields = {f.name for f in fields(ConformerConfig)}
    flat = {key: args.pop(key) for key in list(args) if key in branch_fields and key not in own}
    conformer = args.pop("conformer", None)
    if isinstance(conformer, dict):
        conformer = build_config(ConformerConfig, "doublestream conformer", conformer)
    elif conformer is not None and not isinstance(conformer, ConformerConfig):
        raise TypeError(f"conformer must be a ConformerConfig or a dict of its fields, got {type(conformer).__name__}")
    conformer = replace(conformer or _default_conformer(), **flat)
    return DoubleStreamClassifier(build_config(DoubleStreamConfig, "doublestream", {**args, "conformer": conformer}))
