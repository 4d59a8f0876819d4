"""DoubleStream V4 (registry: doublestream-v4): log-mel Conformer branch + openSMILE functionals branch.

wave [B, T], lengths [B] -> ConformerEncoder -> a [B, A] (A = d_model, or 2 * d_model for stats pooling)
egemaps [B, F] -> standardise (fitted buffers) -> MLP -> e [B, egemaps_hidden]
    F = 88 for `functionals="eGeMAPSv02"` (the design's V4), 6373 for "ComParE_2016"
fusion "concat": [a; e] -> MLP -> logits [B, 6]
fusion "gated":  e' = W e [B, A]; g = sigmoid(W_g [a; e']); g * a + (1 - g) * e' -> MLP -> logits [B, 6]

The two streams see complementary evidence: the Conformer learns spectral
and temporal patterns, eGeMAPS gives utterance-level prosody (pitch, loudness,
jitter/shimmer statistics) that a short-context net finds hard to estimate.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from models.arch.blocks import LogMelModel, build_config
from models.arch.conformer import ConformerConfig, ConformerEncoder
from models.functionals import FEATURE_SET, feature_dim
from models.features import LogMelFrontend
from models.labels import NUM_CLASSES


@dataclass(frozen=True)
class DoubleStreamConfig:
    """Conformer branch fields (as ConformerConfig) plus the functionals branch (openSMILE set) and fusion."""

    n_mels: int = 64
    d_model: int = 112
    n_blocks: int = 3
    n_heads: int = 4
    ff_mult: int = 2
    conv_kernel_size: int = 15
    subsampling_channels: int = 48
    dropout: float = 0.2
    pos_enc: str = "relative"
    max_relative_frames: int = 64
    pooling: str = "attention"
    utterance_norm: bool = False
    spec_augment: bool = True
    freq_mask_bins: int = 8
    time_mask_frames: int = 20
    egemaps_hidden: int = 64
    egemaps_dropout: float = 0.2
    fusion: str = "concat"
    functionals: str = FEATURE_SET

    def __post_init__(self) -> None:
        feature_dim(self.functionals)
        if self.egemaps_hidden < 1:
            raise ValueError(f"egemaps_hidden must be >= 1, got {self.egemaps_hidden}")
        if not 0.0 <= self.egemaps_dropout < 1.0:
            raise ValueError(f"egemaps_dropout must be in [0, 1), got {self.egemaps_dropout}")
        if self.fusion not in ("concat", "gated"):
            raise ValueError(f"fusion must be 'concat' or 'gated', got {self.fusion!r}")
        self.conformer_config()  # validates the shared Conformer fields

    def conformer_config(self) -> ConformerConfig:
        names = {f.name for f in fields(ConformerConfig)}
        return ConformerConfig(**{k: v for k, v in self.__dict__.items() if k in names})


class DoubleStreamClassifier(LogMelModel):
    """wave [B, T], lengths [B], egemaps [B, F] functionals (required) -> logits [B, 6]."""

    needs_egemaps = True

    def __init__(self, config: DoubleStreamConfig | None = None) -> None:
        super().__init__(config or DoubleStreamConfig())
        cfg = self.config
        self.encoder = ConformerEncoder(cfg.conformer_config())
        self.functionals_dim = feature_dim(cfg.functionals)
        self.register_buffer("egemaps_mean", torch.zeros(self.functionals_dim))
        self.register_buffer("egemaps_std", torch.ones(self.functionals_dim))
        hidden = cfg.egemaps_hidden
        self.egemaps_branch = nn.Sequential(
            nn.Linear(self.functionals_dim, hidden), nn.LayerNorm(hidden), nn.SiLU(), nn.Dropout(cfg.egemaps_dropout),
            nn.Linear(hidden, hidden), nn.SiLU())
        audio_dim = self.encoder.out_dim
        if cfg.fusion == "gated":
            self.egemaps_proj = nn.Linear(hidden, audio_dim)
            self.gate = nn.Linear(2 * audio_dim, audio_dim)
            fused = audio_dim
        else:
            self.egemaps_proj = None
            self.gate = None
            fused = audio_dim + hidden
        self.head = nn.Sequential(nn.Linear(fused, cfg.d_model), nn.SiLU(), nn.Dropout(cfg.dropout),
                                  nn.Linear(cfg.d_model, NUM_CLASSES))

    @property
    def frontend(self) -> LogMelFrontend:
        return self.encoder.frontend

    @property
    def functionals_set(self) -> str:
        """The openSMILE feature set the functionals branch reads."""
        return self.config.functionals

    def feature_config(self) -> dict[str, Any]:
        return {**self.frontend.config_dict(), "type": "logmel+egemaps",
                "egemaps": {"feature_set": self.config.functionals, "functionals": self.functionals_dim}}

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor,
                egemaps: torch.Tensor | None = None) -> torch.Tensor:
        if egemaps is None:
            raise ValueError(f"doublestream-v4 needs {self.config.functionals} functionals: "
                             f"pass egemaps [B, {self.functionals_dim}]")
        if egemaps.shape != (wave.shape[0], self.functionals_dim):
            raise ValueError(f"egemaps must be [{wave.shape[0]}, {self.functionals_dim}], got {tuple(egemaps.shape)}")
        audio = self.encoder(wave, lengths)  # [B, A]
        prosody = self.egemaps_branch((egemaps.float() - self.egemaps_mean) / self.egemaps_std)
        if self.gate is None:
            return self.head(torch.cat([audio, prosody], dim=-1))
        projected = self.egemaps_proj(prosody)  # [B, A]
        gate = torch.sigmoid(self.gate(torch.cat([audio, projected], dim=-1)))
        return self.head(gate * audio + (1.0 - gate) * projected)

    def fit_normalisation(self, waves: Sequence[np.ndarray], egemaps: np.ndarray | None = None) -> None:
        """Fit log-mel stats on `waves` and functionals mean/std on `egemaps` [N, F] (required)."""
        if egemaps is None:
            raise ValueError(f"doublestream-v4 needs the training {self.config.functionals} functionals "
                             "to fit its normalisation")
        values = np.asarray(egemaps, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != self.functionals_dim or values.shape[0] == 0:
            raise ValueError(f"egemaps must be [N, {self.functionals_dim}] with N >= 1, got {values.shape}")
        super().fit_normalisation(waves, None)
        std = values.std(axis=0)
        std[std < 1e-6] = 1.0  # constant features: leave them centred but unscaled
        self.egemaps_mean.copy_(torch.from_numpy(values.mean(axis=0)).float())
        self.egemaps_std.copy_(torch.from_numpy(std).float())


def build(**args: Any) -> DoubleStreamClassifier:
    """Registry factory: keyword args are DoubleStreamConfig fields."""
    return DoubleStreamClassifier(build_config(DoubleStreamConfig, "doublestream", args))
