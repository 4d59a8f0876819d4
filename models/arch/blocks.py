"""Building blocks shared by the log-mel architectures.

Every block respects padding: a frame's output depends only on valid frames,
so a clip gives the same logits alone or padded inside a batch (eval mode).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from models.config_checks import check_fields
from models.features import LogMelConfig, LogMelFrontend, SpecAugmentConfig, frames_mask


@dataclass(frozen=True)
class LogMelArgs:
    """Front-end arguments every log-mel architecture config starts with (model args stay flat).

    n_mels: mel bins; utterance_norm: subtract each clip's mean per bin; level_dbfs: scale each clip
    to this input level first (dB re full scale of its active frames; None = as recorded);
    spec_augment with freq_mask_bins / time_mask_frames: SpecAugment mask widths (training mode only)."""

    n_mels: int = 64
    utterance_norm: bool = False
    level_dbfs: float | None = None
    spec_augment: bool = True
    freq_mask_bins: int = 8
    time_mask_frames: int = 20

    def __post_init__(self) -> None:
        check_fields(self, {"n_mels": (8, 256), "freq_mask_bins": (0, 256), "time_mask_frames": (0, 10_000)})
        if self.level_dbfs is not None and not -80.0 <= self.level_dbfs <= 0.0:
            raise ValueError(f"level_dbfs must be between -80 and 0 dB re full scale, got {self.level_dbfs}")


@dataclass(frozen=True)
class EncoderArgs(LogMelArgs):
    """Log-mel front end + conv subsampling + a self-attention encoder: the arguments the Conformer
    and the Transformer share (width, heads, feed-forward factor, subsampling channels, dropout, pooling)."""

    d_model: int = 128
    n_heads: int = 4
    ff_mult: int = 2
    subsampling_channels: int = 64
    dropout: float = 0.1
    pooling: str = "attention"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, {"d_model": (8, 2048), "n_heads": (1, 64), "ff_mult": (1, 16),
                            "subsampling_channels": (1, 1024)})
        if self.d_model % self.n_heads or self.d_model % 2:
            raise ValueError(f"d_model ({self.d_model}) must be even and divisible by n_heads ({self.n_heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        check_pooling(self.pooling)


def subsampled_lengths(frame_lengths: torch.Tensor, times: int) -> torch.Tensor:
    """Lengths after `times` unpadded stride-2 convolutions with kernel 3: L -> (L - 1) // 2."""
    for _ in range(times):
        frame_lengths = torch.div(frame_lengths - 1, 2, rounding_mode="floor").clamp(min=1)
    return frame_lengths


class ConvSubsampling(nn.Module):
    """Two unpadded conv2d(k=3, s=2) + ReLU over (time, mel): [B, F, n_mels] -> [B, ~F/4, d_model].

    Unpadded in time so an output frame only sees input frames it covers;
    lengths follow `subsampled_lengths(·, 2)`.
    """

    def __init__(self, n_mels: int, d_model: int, channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, 3, stride=2), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=2), nn.ReLU())
        freq_out = ((n_mels - 1) // 2 - 1) // 2
        self.proj = nn.Linear(channels * freq_out, d_model)

    def forward(self, feats: torch.Tensor, frame_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats [B, F, n_mels] (F >= 7), frame_lengths [B] -> x [B, F', d_model], lengths [B]."""
        x = self.conv(feats.unsqueeze(1))  # [B, C, F', n_mels']
        batch, channels, frames, freq = x.shape
        x = self.proj(x.permute(0, 2, 1, 3).reshape(batch, frames, channels * freq))
        return x, subsampled_lengths(frame_lengths, 2).clamp(max=frames)


def sinusoidal_positions(frames: int, d_model: int, device: torch.device) -> torch.Tensor:
    """Absolute sinusoidal positional encoding [frames, d_model]."""
    position = torch.arange(frames, device=device, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, d_model, 2, device=device, dtype=torch.float32)
                    * (-math.log(10_000.0) / d_model))
    table = torch.zeros(frames, d_model, device=device)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div[: d_model // 2])
    return table


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over valid frames: x [B, F, D], mask [B, F] bool -> [B, D]."""
    weights = mask.unsqueeze(-1).to(x.dtype)
    return (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class AttentionPooling(nn.Module):
    """Learned attention weights over valid frames: x [B, F, D], mask [B, F] -> [B, D]."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(d_model, d_model // 2), nn.Tanh(), nn.Linear(d_model // 2, 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.score(x).squeeze(-1).masked_fill(~mask, float("-inf"))  # [B, F]
        weights = torch.softmax(scores, dim=1).unsqueeze(-1)
        return (x * weights).sum(1)


class StatsPooling(nn.Module):
    """Masked mean and standard deviation over valid frames: x [B, F, D], mask [B, F] -> [B, 2D].

    The spread over time carries emotion cues (how much pitch and energy vary)
    that a mean alone averages away.
    """

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mean = masked_mean(x, mask)
        var = masked_mean((x - mean.unsqueeze(1)) ** 2, mask)
        return torch.cat([mean, (var + 1e-5).sqrt()], dim=-1)


POOLING_KINDS = ("attention", "mean", "stats")


def make_pooling(kind: str, d_model: int) -> nn.Module | None:
    """'attention' -> AttentionPooling; 'stats' -> StatsPooling; 'mean' -> None (use masked_mean)."""
    if kind == "attention":
        return AttentionPooling(d_model)
    if kind == "stats":
        return StatsPooling()
    if kind == "mean":
        return None
    raise ValueError(f"pooling must be one of {', '.join(POOLING_KINDS)}, got {kind!r}")


def pooled_dim(kind: str, d_model: int) -> int:
    """Width of the pooled utterance vector: 2 * d_model for 'stats', else d_model."""
    return 2 * d_model if kind == "stats" else d_model


def check_pooling(kind: str) -> None:
    if kind not in POOLING_KINDS:
        raise ValueError(f"pooling must be one of {', '.join(POOLING_KINDS)}, got {kind!r}")


def pool(pooling: nn.Module | None, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x [B, F, D], mask [B, F] -> [B, D] by the given pooling (None = masked mean)."""
    return masked_mean(x, mask) if pooling is None else pooling(x, mask)


def make_frontend(args: LogMelArgs) -> LogMelFrontend:
    """The log-mel front end a config's LogMelArgs describe (25 ms / 10 ms frames at 16 kHz)."""
    return LogMelFrontend(LogMelConfig(n_mels=args.n_mels),
                          SpecAugmentConfig(freq_mask_bins=args.freq_mask_bins, time_mask_frames=args.time_mask_frames),
                          spec_augment_enabled=args.spec_augment, utterance_norm=args.utterance_norm,
                          level_dbfs=args.level_dbfs)


def build_config(config_cls: type, model_label: str, args: dict[str, Any]) -> Any:
    """Instantiate a frozen config dataclass, turning unknown keywords into a one-line ValueError."""
    known = set(config_cls.__dataclass_fields__)
    unknown = sorted(set(args) - known)
    if unknown:
        raise ValueError(f"unknown {model_label} argument(s) {', '.join(unknown)}; "
                         f"valid: {', '.join(sorted(known))}")
    return config_cls(**args)


class LogMelModel(nn.Module):
    """Base of the log-mel classifiers: holds `frontend` and `config`; implements the
    fit_normalisation / model_args / set_spec_augment parts of models.contract.TrainableModel."""

    functionals_set: str | None = None  # openSMILE set the third forward input holds; None: none
    frontend_cacheable = False  # SpecAugment and fitted statistics live in the front end

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config

    @property
    def frontend(self) -> LogMelFrontend:
        """The model's log-mel front end (subclasses expose where it lives)."""
        raise AttributeError(f"{type(self).__name__} has no log-mel front end")

    def model_args(self) -> dict[str, Any]:
        """JSON-serialisable args; build_model(name, **model_args()) rebuilds this model."""
        return asdict(self.config)

    def feature_config(self) -> dict[str, Any]:
        return self.frontend.config_dict()

    def set_spec_augment(self, enabled: bool) -> None:
        """Switch SpecAugment on/off (it only ever acts in training mode)."""
        self.frontend.spec_augment_enabled = bool(enabled)

    def fit_normalisation(self, waves: Sequence[np.ndarray], functionals: np.ndarray | None = None) -> None:
        """Fit the log-mel per-bin mean/std buffers on training waves (16 kHz float32)."""
        self.frontend.fit_stats(waves)


def valid_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """Boolean [B, frames] of valid positions (re-exported for the architectures)."""
    return frames_mask(lengths, frames)
