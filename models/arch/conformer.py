"""Log-mel Conformer classifier (registry: conformer-v1, conformer-v3.1, conformer-v3.2).

wave [B, T] -> LogMelFrontend -> [B, F, n_mels] -> conv2d subsampling x4 -> [B, F/4, d_model]
-> N Conformer blocks (½FFN, MHSA with relative position bias, depthwise conv module, ½FFN, LayerNorm)
-> masked attention/mean/stats pooling -> MLP -> logits [B, 6].

Padding never reaches valid frames: attention masks padded keys, the conv
module zeroes padded frames before its depthwise convolution (so they act like
the convolution's own zero padding), and pooling ignores them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from models.arch.blocks import (ConvSubsampling, EncoderArgs, LogMelModel, build_config, make_frontend,
                                make_pooling, pool, pooled_dim, sinusoidal_positions, valid_mask)
from models.config_checks import check_fields
from models.features import LogMelFrontend
from models.labels import NUM_CLASSES


@dataclass(frozen=True)
class ConformerConfig(EncoderArgs):
    """Conformer hyper-parameters after the shared encoder ones (all JSON-serialisable; they are the model args)."""

    n_blocks: int = 3
    conv_kernel_size: int = 15
    pos_enc: str = "relative"
    max_relative_frames: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, {"n_blocks": (1, 48), "conv_kernel_size": (1, 255), "max_relative_frames": (1, 10_000)})
        if self.conv_kernel_size % 2 == 0:
            raise ValueError(f"conv_kernel_size must be odd and >= 1, got {self.conv_kernel_size}")
        if self.pos_enc not in ("relative", "absolute"):
            raise ValueError(f"pos_enc must be 'relative' or 'absolute', got {self.pos_enc!r}")


class FeedForward(nn.Module):
    """Pre-norm position-wise FFN with Swish: [B, F, D] -> [B, F, D]."""

    def __init__(self, d_model: int, mult: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(d_model), nn.Linear(d_model, d_model * mult), nn.SiLU(), nn.Dropout(dropout),
            nn.Linear(d_model * mult, d_model), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SelfAttention(nn.Module):
    """Pre-norm multi-head self-attention over valid frames.

    With pos_enc="relative" a learned bias per head and clipped relative
    distance (T5/Shaw style) is added to the attention scores; it is
    translation-invariant, which suits utterances of any length.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float, relative: bool, max_rel: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.norm = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)
        self.attn_dropout = dropout
        self.max_rel = max_rel
        self.rel_bias = nn.Embedding(2 * max_rel + 1, n_heads) if relative else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [B, F, D], mask [B, F] bool (True = valid) -> [B, F, D]."""
        batch, frames, d_model = x.shape
        q, k, v = self.qkv(self.norm(x)).view(batch, frames, 3, self.n_heads, -1).permute(2, 0, 3, 1, 4)
        bias = torch.zeros(batch, 1, 1, frames, device=x.device, dtype=x.dtype)
        bias = bias.masked_fill(~mask[:, None, None, :], float("-inf"))  # [B, 1, 1, F]
        if self.rel_bias is not None:
            pos = torch.arange(frames, device=x.device)
            rel = (pos[None, :] - pos[:, None]).clamp(-self.max_rel, self.max_rel) + self.max_rel
            bias = bias + self.rel_bias(rel).permute(2, 0, 1).unsqueeze(0)  # [B, H, F, F]
        attended = F.scaled_dot_product_attention(  # under autocast q is half precision: match it
            q, k, v, attn_mask=bias.to(q.dtype), dropout_p=self.attn_dropout if self.training else 0.0)
        return self.dropout(self.out(attended.transpose(1, 2).reshape(batch, frames, d_model)))


class ConvModule(nn.Module):
    """Conformer convolution module: LN -> pointwise(2D) -> GLU -> depthwise(k) -> LN -> Swish -> pointwise.

    LayerNorm instead of BatchNorm after the depthwise conv: statistics then
    never mix padded frames or other clips, and batch size 1 trains fine.
    """

    def __init__(self, d_model: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.pointwise_in = nn.Linear(d_model, 2 * d_model)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel_size, padding=kernel_size // 2, groups=d_model)
        self.depth_norm = nn.LayerNorm(d_model)
        self.pointwise_out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [B, F, D], mask [B, F] -> [B, F, D]."""
        y = F.glu(self.pointwise_in(self.norm(x)), dim=-1)
        y = y.masked_fill(~mask.unsqueeze(-1), 0.0)
        y = self.depthwise(y.transpose(1, 2)).transpose(1, 2)
        y = self.pointwise_out(F.silu(self.depth_norm(y)))
        return self.dropout(y)


class ConformerBlock(nn.Module):
    """x + ½FFN -> + MHSA -> + Conv -> + ½FFN -> LayerNorm: [B, F, D] -> [B, F, D]."""

    def __init__(self, cfg: ConformerConfig) -> None:
        super().__init__()
        self.ff1 = FeedForward(cfg.d_model, cfg.ff_mult, cfg.dropout)
        self.attn = SelfAttention(cfg.d_model, cfg.n_heads, cfg.dropout,
                                  cfg.pos_enc == "relative", cfg.max_relative_frames)
        self.conv = ConvModule(cfg.d_model, cfg.conv_kernel_size, cfg.dropout)
        self.ff2 = FeedForward(cfg.d_model, cfg.ff_mult, cfg.dropout)
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + 0.5 * self.ff1(x)
        x = x + self.attn(x, mask)
        x = x + self.conv(x, mask)
        x = x + 0.5 * self.ff2(x)
        return self.norm(x)


class ConformerEncoder(nn.Module):
    """Log-mel front end + subsampling + Conformer blocks + pooling:
    wave [B, T], lengths [B] -> utterance embedding [B, out_dim] (2 * d_model for stats pooling)."""

    def __init__(self, cfg: ConformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.frontend = make_frontend(cfg)
        self.subsample = ConvSubsampling(cfg.n_mels, cfg.d_model, cfg.subsampling_channels)
        self.input_dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(ConformerBlock(cfg) for _ in range(cfg.n_blocks))
        self.pooling = make_pooling(cfg.pooling, cfg.d_model)
        self.out_dim = pooled_dim(cfg.pooling, cfg.d_model)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        feats = self.frontend(wave, lengths)
        x, frame_lengths = self.subsample(feats.features, feats.frame_lengths)
        if self.cfg.pos_enc == "absolute":
            x = x + sinusoidal_positions(x.shape[1], x.shape[2], x.device)
        x = self.input_dropout(x)
        mask = valid_mask(frame_lengths, x.shape[1])
        for block in self.blocks:
            x = block(x, mask)
        return pool(self.pooling, x, mask)


class ConformerClassifier(LogMelModel):
    """wave [B, T] float32, lengths [B] int64 samples -> logits [B, 6]."""

    def __init__(self, config: ConformerConfig | None = None) -> None:
        super().__init__(config or ConformerConfig())
        self.encoder = ConformerEncoder(self.config)
        d_model = self.config.d_model
        self.head = nn.Sequential(nn.Linear(self.encoder.out_dim, d_model), nn.SiLU(),
                                  nn.Dropout(self.config.dropout), nn.Linear(d_model, NUM_CLASSES))

    @property
    def frontend(self) -> LogMelFrontend:
        return self.encoder.frontend

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor,
                functionals: torch.Tensor | None = None) -> torch.Tensor:
        """functionals is accepted for the common signature and ignored."""
        return self.head(self.encoder(wave, lengths))


def build(**args: Any) -> ConformerClassifier:
    """Registry factory: keyword args are ConformerConfig fields."""
    return ConformerClassifier(build_config(ConformerConfig, "conformer", args))
