"""Plain Transformer encoder on log-mel frames (registry: transformer), a baseline for the Conformer.

wave [B, T] -> LogMelFrontend -> [B, F, n_mels] -> conv2d subsampling x4 -> [B, F/4, d_model]
-> + sinusoidal positions -> nn.TransformerEncoder (pre-norm, padding mask)
-> masked attention/mean/stats pooling -> MLP -> logits [B, 6].
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from models.arch.blocks import (ConvSubsampling, EncoderArgs, LogMelModel, build_config, make_frontend,
                                make_pooling, pool, pooled_dim, sinusoidal_positions, valid_mask)
from models.config_checks import check_fields
from models.features import LogMelFrontend
from models.labels import NUM_CLASSES


@dataclass(frozen=True)
class TransformerConfig(EncoderArgs):
    """Transformer hyper-parameters after the shared encoder ones (all JSON-serialisable; they are the model args)."""

    n_layers: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, {"n_layers": (1, 48)})


class TransformerClassifier(LogMelModel):
    """wave [B, T] float32, lengths [B] int64 samples -> logits [B, 6]."""

    def __init__(self, config: TransformerConfig | None = None) -> None:
        super().__init__(config or TransformerConfig())
        cfg = self.config
        self._frontend = make_frontend(cfg)
        self.subsample = ConvSubsampling(cfg.n_mels, cfg.d_model, cfg.subsampling_channels)
        self.input_dropout = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(cfg.d_model, cfg.n_heads, cfg.d_model * cfg.ff_mult, cfg.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        # enable_nested_tensor=False: the sparse fast path returns zeros at padded
        # positions in eval but not in training; keep one behaviour.
        self.encoder = nn.TransformerEncoder(layer, cfg.n_layers, norm=nn.LayerNorm(cfg.d_model),
                                             enable_nested_tensor=False)
        self.pooling = make_pooling(cfg.pooling, cfg.d_model)
        self.head = nn.Sequential(nn.Linear(pooled_dim(cfg.pooling, cfg.d_model), cfg.d_model), nn.GELU(),
                                  nn.Dropout(cfg.dropout), nn.Linear(cfg.d_model, NUM_CLASSES))

    @property
    def frontend(self) -> LogMelFrontend:
        return self._frontend

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor,
                functionals: torch.Tensor | None = None) -> torch.Tensor:
        """functionals is accepted for the common signature and ignored."""
        feats = self._frontend(wave, lengths)
        x, frame_lengths = self.subsample(feats.features, feats.frame_lengths)
        x = self.input_dropout(x + sinusoidal_positions(x.shape[1], x.shape[2], x.device))
        mask = valid_mask(frame_lengths, x.shape[1])
        x = self.encoder(x, src_key_padding_mask=~mask)
        return self.head(pool(self.pooling, x, mask))


def build(**args: Any) -> TransformerClassifier:
    """Registry factory: keyword args are TransformerConfig fields."""
    return TransformerClassifier(build_config(TransformerConfig, "transformer", args))
