"""Plain 2D CNN on log-mel (registry: cnn), the baseline.

wave [B, T] -> LogMelFrontend -> [B, 1, n_mels, F] -> blocks of (conv3x3 -> BN -> ReLU -> maxpool 2x2)
-> mean over mel -> masked attention/mean/stats pooling over time -> MLP -> logits [B, 6].

Padded time steps are zeroed after every block, so the next 3x3 convolution
sees exactly the zeros it would see at the end of an unpadded clip: padding a
clip inside a batch does not change its logits (eval mode).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from models.arch.blocks import (LogMelArgs, LogMelModel, build_config, check_pooling, make_frontend, make_pooling, pool,
                                pooled_dim, valid_mask)
from models.config_checks import check_fields
from models.features import LogMelFrontend
from models.labels import NUM_CLASSES


@dataclass(frozen=True)
class CNNConfig(LogMelArgs):
    """CNN hyper-parameters after the front-end ones; channels has one entry per conv block
    (each halves time and mel)."""

    channels: tuple[int, ...] = (16, 32, 64, 96)
    dropout: float = 0.2
    pooling: str = "attention"

    def __post_init__(self) -> None:
        if isinstance(self.channels, list):  # the bundle's JSON stores the tuple as a list
            object.__setattr__(self, "channels", tuple(self.channels))
        super().__post_init__()
        check_fields(self, {"dropout": (0.0, 0.99)})
        if (not self.channels or len(self.channels) > 8
                or not all(isinstance(c, int) and not isinstance(c, bool) and 1 <= c <= 1024 for c in self.channels)):
            raise ValueError(f"channels must be 1 to 8 ints in [1, 1024], got {self.channels}")
        if self.n_mels < 2 ** len(self.channels):
            raise ValueError(f"n_mels ({self.n_mels}) too small for {len(self.channels)} 2x poolings")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        check_pooling(self.pooling)


class ConvBlock(nn.Module):
    """conv3x3 -> BN -> ReLU -> maxpool(2): [B, C_in, M, F] -> [B, C_out, M/2, F/2]; lengths F -> F // 2."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(c_out)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool(torch.relu(self.norm(self.conv(x))))
        lengths = torch.div(lengths, 2, rounding_mode="floor").clamp(min=1)
        mask = valid_mask(lengths, x.shape[-1])[:, None, None, :]
        return x.masked_fill(~mask, 0.0), lengths


class CNNClassifier(LogMelModel):
    """wave [B, T] float32, lengths [B] int64 samples -> logits [B, 6]."""

    def __init__(self, config: CNNConfig | None = None) -> None:
        super().__init__(config or CNNConfig())
        cfg = self.config
        self._frontend = make_frontend(cfg)
        widths = (1, *cfg.channels)
        self.blocks = nn.ModuleList(ConvBlock(a, b) for a, b in zip(widths[:-1], widths[1:]))
        width = cfg.channels[-1]
        self.pooling = make_pooling(cfg.pooling, width)
        self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(pooled_dim(cfg.pooling, width), width),
                                  nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(width, NUM_CLASSES))

    @property
    def frontend(self) -> LogMelFrontend:
        return self._frontend

    def model_args(self) -> dict[str, Any]:
        args = super().model_args()
        args["channels"] = list(args["channels"])  # JSON has lists, not tuples
        return args

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor,
                functionals: torch.Tensor | None = None) -> torch.Tensor:
        """functionals is accepted for the common signature and ignored."""
        feats = self._frontend(wave, lengths)
        x = feats.features.transpose(1, 2).unsqueeze(1)  # [B, 1, n_mels, F]
        frame_lengths = feats.frame_lengths
        for block in self.blocks:
            x, frame_lengths = block(x, frame_lengths)
        x = x.mean(dim=2).transpose(1, 2)  # [B, F', C]
        return self.head(pool(self.pooling, x, valid_mask(frame_lengths, x.shape[1])))


def build(**args: Any) -> CNNClassifier:
    """Registry factory: keyword args are CNNConfig fields."""
    return CNNClassifier(build_config(CNNConfig, "cnn", args))
