""""whisper-ultimate": the WavLM Ultimate head on a frozen Whisper encoder from a pinned pip package.

    wave [B, T] --log-mel, Whisper encoder (frozen; models/whisper_encoder.py)-->
        hidden states [B, L+1, T', D]  (tiny.en: L=4, D=384; base: L=6, D=512; 50 frames/s)
    --layer mix (softmax weights over all L+1, or the last only)--> LayerNorm, dropout,
    BiLSTM (packed), masked attention pooling, dropout, linear --> logits [B, 6]

frame_pool=P averages every P encoder frames (padding never counts) before the head, in the
front end, so the cache is P times smaller: 1 keeps Whisper's 50 frames/s (the WavLM Ultimate
layout); 4 gives 12.5 frames/s, which makes the BiLSTM about 5x cheaper to train and run
on a CPU (see docs/whisper.md).

The head is `SSLEmotionNet`'s; only where the states come from differs. The encoder is
never part of the bundle's weights: it is rebuilt from the installed package, whose
sha256 must equal the one recorded at training time (`encoder_sha256`), so a bundle
never runs on weights other than those it was trained on.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from models.arch.ssl_heads import SSLEmotionNet, _check_head_args
from models.labels import NUM_CLASSES
from models.whisper_encoder import (SOURCES, WhisperEncoderError, encode_states,
                                    load_shared_whisper_encoder)
from models.whisper_mel import HOP_SAMPLES, N_FFT, N_MELS


class WhisperEmotionNet(SSLEmotionNet):
    """Frozen Whisper encoder + SSLEmotionNet's head.

    forward(wave [B, T] float32 16 kHz, lengths [B] int64 samples) -> logits [B, 6];
    frontend_features / forward_features split the two for caching and shared ensembles.
    """

    def __init__(self, encoder: str = "tiny.en", layer_pooling: str = "weighted", lstm_hidden: int = 128,
                 lstm_layers: int = 1, attention_hidden: int = 64, dropout: float = 0.3,
                 num_classes: int = NUM_CLASSES, encoder_sha256: str | None = None, frame_pool: int = 1) -> None:
        # The encoder comes from a package, not a folder: SSLEmotionNet's folder loading is skipped.
        nn.Module.__init__(self)
        lstm_hidden, lstm_layers, attention_hidden = int(lstm_hidden), int(lstm_layers), int(attention_hidden)
        dropout, num_classes, frame_pool = float(dropout), int(num_classes), int(frame_pool)
        if frame_pool < 1:
            raise ValueError(f"frame_pool must be >= 1 encoder frames, got {frame_pool}")
        _check_head_args(layer_pooling, lstm_hidden, lstm_layers, attention_hidden, dropout)
        if encoder not in SOURCES:
            raise ValueError(f"encoder must be one of {', '.join(SOURCES)}, got {encoder!r}")
        loaded = load_shared_whisper_encoder(encoder)
        if encoder_sha256 is not None and encoder_sha256 != loaded.info.sha256:
            raise WhisperEncoderError(f"this head was trained on Whisper {encoder} weights with sha256 "
                                      f"{encoder_sha256[:16]}…, but the installed ones are "
                                      f"{loaded.info.sha256[:16]}…; install the packages it was trained with")
        self.registry_name = "whisper-ultimate"
        self.train_mode = "frozen"
        self._args: dict[str, Any] = dict(encoder=encoder, encoder_sha256=loaded.info.sha256,
                                          layer_pooling=layer_pooling, lstm_hidden=lstm_hidden,
                                          lstm_layers=lstm_layers, attention_hidden=attention_hidden,
                                          dropout=dropout, num_classes=num_classes, frame_pool=frame_pool)
        self.frame_pool = frame_pool
        self.backbone = loaded.model
        self.backbone_info = loaded.info
        self._build_head(loaded.info.num_layers, loaded.info.hidden_size, layer_pooling, lstm_hidden,
                         lstm_layers, attention_hidden, dropout, num_classes)

    def frontend_key(self) -> str:
        """Heads with equal keys can share one frontend_features pass."""
        return (f"whisper|{self.backbone_info.name}|{self.backbone_info.sha256}|{self.layer_pooling}"
                f"|pool{self.frame_pool}")

    def feature_config(self) -> dict[str, Any]:
        """The bundle's "feature" entry: the front end and where the encoder weights come from."""
        return {"kind": "whisper-encoder-states", "sample_rate_hz": 16_000, "n_mels": N_MELS, "n_fft": N_FFT,
                "hop_samples": HOP_SAMPLES, "frames_per_s": 16_000 / HOP_SAMPLES / 2 / self.frame_pool,
                "layer_pooling": self.layer_pooling, **self.backbone_info.provenance()}

    def frontend_features(self, wave: torch.Tensor,
                          lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """wave [B, T] float32, lengths [B] int64 samples ->
        (feats [B, L+1, T'/P, D] for weighted pooling or [B, 1, T'/P, D] for last, feat_lengths [B])."""
        with torch.no_grad():
            feats, feat_lengths = encode_states(self.backbone, wave, lengths)
        if self.layer_pooling == "last":
            feats = feats[:, -1:]
        return pool_frames(feats, feat_lengths, self.frame_pool)


def pool_frames(feats: torch.Tensor, lengths: torch.Tensor, pool: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over each `pool` consecutive frames; a clip's last, partial group averages its valid frames only.

    feats [B, L, T, D] (zero beyond each clip's length), lengths [B] -> ([B, L, ceil(T/pool), D], [B]).
    """
    if pool == 1:
        return feats, lengths
    batch, layers, frames, dim = feats.shape
    groups = -(-frames // pool)
    sums = F.pad(feats, (0, 0, 0, groups * pool - frames)).view(batch, layers, groups, pool, dim).sum(3)
    starts = torch.arange(groups, device=feats.device) * pool
    counts = (lengths.to(feats.device)[:, None] - starts[None, :]).clamp(0, pool).clamp(min=1)
    return sums / counts[:, None, :, None].to(feats.dtype), (lengths + pool - 1) // pool


def build_whisper_ultimate(encoder: str = "tiny.en", layer_pooling: str = "weighted", lstm_hidden: int = 128,
                           lstm_layers: int = 1, attention_hidden: int = 64, dropout: float = 0.3,
                           num_classes: int = NUM_CLASSES, encoder_sha256: str | None = None,
                           frame_pool: int = 1) -> WhisperEmotionNet:
    """Frozen Whisper (encoder=tiny.en | base), softmax-weighted sum of all states (or last), BiLSTM head."""
    return WhisperEmotionNet(encoder, layer_pooling, lstm_hidden, lstm_layers, attention_hidden, dropout,
                             num_classes, encoder_sha256, frame_pool)
