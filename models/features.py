"""Log-mel front end shared by every log-mel architecture (CNN, Transformer, Conformer, DoubleStream).

The front end lives inside the model (see docs/architecture.md), so a bundle's
safetensors carry the per-mel-bin normalisation statistics and inference needs
nothing but the waveform.

Framing uses `center=False` and a window of exactly `win_ms`: frame i covers
samples [i * hop, i * hop + win). A frame is "valid" when it lies wholly inside
the clip's real samples, so zero padding added to batch clips together can
never leak into a valid frame (padding a clip does not change its features).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
import torchaudio
from torch import nn
from tqdm import tqdm

from models.config_checks import check_fields


@dataclass(frozen=True)
class LogMelConfig:
    """Log-mel analysis settings (16 kHz mono input)."""

    sample_rate_hz: int = 16_000
    win_ms: float = 25.0
    hop_ms: float = 10.0
    n_mels: int = 64
    f_min_hz: float = 20.0
    f_max_hz: float = 8_000.0
    log_floor: float = 1e-6
    # Clips shorter than this are zero-padded up to it so every model sees a few frames.
    min_clip_ms: float = 200.0

    def __post_init__(self) -> None:
        check_fields(self, {"n_mels": (8, 512), "win_ms": (1.0, 1000.0), "min_clip_ms": (1.0, 60_000.0)})
        if self.sample_rate_hz <= 0:
            raise ValueError(f"sample_rate_hz must be > 0, got {self.sample_rate_hz}")
        if not 0 < self.hop_ms <= self.win_ms:
            raise ValueError(f"need 0 < hop_ms <= win_ms, got hop_ms={self.hop_ms}, win_ms={self.win_ms}")
        if self.n_mels < 8:
            raise ValueError(f"n_mels must be >= 8, got {self.n_mels}")
        if not 0 <= self.f_min_hz < self.f_max_hz <= self.sample_rate_hz / 2:
            raise ValueError(
                f"need 0 <= f_min_hz < f_max_hz <= {self.sample_rate_hz / 2:g} (Nyquist), "
                f"got {self.f_min_hz}..{self.f_max_hz}")
        if self.log_floor <= 0:
            raise ValueError(f"log_floor must be > 0, got {self.log_floor}")
        if self.min_clip_ms < self.win_ms:
            raise ValueError(f"min_clip_ms ({self.min_clip_ms}) must be >= win_ms ({self.win_ms})")

    @property
    def win_samples(self) -> int:
        return int(round(self.win_ms * self.sample_rate_hz / 1000))

    @property
    def hop_samples(self) -> int:
        return int(round(self.hop_ms * self.sample_rate_hz / 1000))

    @property
    def min_samples(self) -> int:
        return int(round(self.min_clip_ms * self.sample_rate_hz / 1000))

    def num_frames(self, samples: torch.Tensor) -> torch.Tensor:
        """Valid frame count for clips of `samples` samples (int64 tensor, any shape)."""
        samples = samples.clamp(min=self.min_samples)
        return torch.div(samples - self.win_samples, self.hop_samples, rounding_mode="floor") + 1


@dataclass(frozen=True)
class SpecAugmentConfig:
    """SpecAugment masking (applied in training mode only, after normalisation; masks are set to 0)."""

    freq_mask_bins: int = 8
    time_mask_frames: int = 20
    n_freq_masks: int = 2
    n_time_masks: int = 2

    def __post_init__(self) -> None:
        check_fields(self, {"n_freq_masks": (0, 16), "n_time_masks": (0, 16)})
        for name in ("freq_mask_bins", "time_mask_frames", "n_freq_masks", "n_time_masks"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class LogMelFeatures:
    """Front-end output. features: [B, frames, n_mels] float32 (padded frames are 0);
    frame_lengths: [B] int64 count of valid frames per clip."""

    features: torch.Tensor
    frame_lengths: torch.Tensor


def frames_mask(frame_lengths: torch.Tensor, max_frames: int) -> torch.Tensor:
    """Boolean [B, max_frames], True on valid frames."""
    positions = torch.arange(max_frames, device=frame_lengths.device)
    return positions.unsqueeze(0) < frame_lengths.unsqueeze(1)


# A frame is "active" for the input level when its power is within this many dB of the clip's loudest frame.
ACTIVE_WITHIN_DB = 20.0
# The level normalisation never raises or lowers a clip by more than this (silence stays silence).
MAX_LEVEL_GAIN_DB = 40.0


def active_level_db(wave: torch.Tensor, lengths: torch.Tensor, config: LogMelConfig) -> torch.Tensor:
    """Input level of each clip: wave [B, T] (>= one window long), lengths [B] -> [B] float32 dB re full
    scale, the mean power of its valid `win_ms`/`hop_ms` frames that are within ACTIVE_WITHIN_DB of
    its loudest frame (so pauses do not lower it; a full-scale sine is -3 dB)."""
    power = wave.unfold(1, config.win_samples, config.hop_samples).pow(2).mean(-1)  # [B, frames]
    valid = frames_mask(config.num_frames(lengths).clamp(max=power.shape[1]), power.shape[1])
    power = power.masked_fill(~valid, 0.0)
    loudest = power.amax(1, keepdim=True)
    active = valid & (power >= loudest * 10 ** (-ACTIVE_WITHIN_DB / 10))
    mean = (power * active).sum(1) / active.sum(1).clamp(min=1)
    return 10 * torch.log10(mean.clamp(min=1e-12))


class LogMelFrontend(nn.Module):
    """wave [B, T] float32 + lengths [B] int64 samples -> LogMelFeatures.

    Buffers `mel_mean`/`mel_std` ([n_mels]) standardise each mel bin; they are
    fitted with `fit_stats` on training audio and saved in the state dict.
    `stats_frames` ([] float) counts the frames they were fitted on (0 = unfitted).
    Set `spec_augment_enabled` to switch SpecAugment on/off (it only ever
    acts in training mode). With `utterance_norm` each clip's mean over its
    valid frames is also subtracted per mel bin (cepstral-mean-style
    normalisation: removes a speaker's or microphone's fixed spectral tilt).
    With `level_dbfs` each clip is first scaled so that its active_level_db is
    `level_dbfs` (at most MAX_LEVEL_GAIN_DB up or down): the model then hears
    every microphone gain as the level it was trained at.
    """

    def __init__(self, config: LogMelConfig | None = None,
                 spec_augment: SpecAugmentConfig | None = None,
                 spec_augment_enabled: bool = True, utterance_norm: bool = False,
                 level_dbfs: float | None = None) -> None:
        super().__init__()
        self.config = config or LogMelConfig()
        self.spec_augment_config = spec_augment or SpecAugmentConfig()
        self.spec_augment_enabled = spec_augment_enabled
        self.utterance_norm = utterance_norm
        self.level_dbfs = level_dbfs
        cfg = self.config
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=cfg.sample_rate_hz, n_fft=cfg.win_samples, win_length=cfg.win_samples,
            hop_length=cfg.hop_samples, f_min=cfg.f_min_hz, f_max=cfg.f_max_hz,
            n_mels=cfg.n_mels, center=False, power=2.0)
        sa = self.spec_augment_config
        self.freq_masks = nn.ModuleList(
            torchaudio.transforms.FrequencyMasking(sa.freq_mask_bins, iid_masks=True)
            for _ in range(sa.n_freq_masks if sa.freq_mask_bins > 0 else 0))
        self.time_masks = nn.ModuleList(
            torchaudio.transforms.TimeMasking(sa.time_mask_frames, iid_masks=True)
            for _ in range(sa.n_time_masks if sa.time_mask_frames > 0 else 0))
        self.register_buffer("mel_mean", torch.zeros(cfg.n_mels))
        self.register_buffer("mel_std", torch.ones(cfg.n_mels))
        self.register_buffer("stats_frames", torch.zeros(()))

    @property
    def n_mels(self) -> int:
        return self.config.n_mels

    @property
    def is_fitted(self) -> bool:
        return bool(self.stats_frames.item() > 0)

    def _pad_short(self, wave: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero-pad the batch to >= min_samples; the padded zeros count as (silent) audio."""
        min_samples = self.config.min_samples
        if wave.shape[1] < min_samples:
            wave = nn.functional.pad(wave, (0, min_samples - wave.shape[1]))
        return wave, lengths.clamp(min=min_samples)

    def log_mel(self, wave: torch.Tensor, lengths: torch.Tensor) -> LogMelFeatures:
        """Un-normalised log-mel: wave [B, T], lengths [B] -> features [B, frames, n_mels]."""
        if wave.dim() != 2:
            raise ValueError(f"wave must be [batch, samples], got shape {tuple(wave.shape)}")
        lengths = lengths.to(device=wave.device, dtype=torch.long)
        wave, lengths = self._pad_short(wave.float(), lengths)
        # Power spectra overflow half precision and log needs the floor: stay float32 under autocast.
        with torch.autocast(device_type=wave.device.type, enabled=False):
            if self.level_dbfs is not None:
                gain_db = (self.level_dbfs - active_level_db(wave, lengths, self.config)).clamp(
                    -MAX_LEVEL_GAIN_DB, MAX_LEVEL_GAIN_DB)
                wave = wave * torch.pow(10.0, gain_db / 20).unsqueeze(1)
            mel = self.mel(wave)  # [B, n_mels, frames]
            feats = torch.log(mel + self.config.log_floor).transpose(1, 2)  # [B, frames, n_mels]
        frame_lengths = self.config.num_frames(lengths).clamp(max=feats.shape[1])
        return LogMelFeatures(feats, frame_lengths)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> LogMelFeatures:
        """wave [B, T] float32, lengths [B] int64 -> normalised, masked LogMelFeatures."""
        raw = self.log_mel(wave, lengths)
        feats = (raw.features - self.mel_mean) / self.mel_std
        valid = frames_mask(raw.frame_lengths, feats.shape[1]).unsqueeze(-1)  # [B, frames, 1]
        if self.utterance_norm:
            counts = raw.frame_lengths.clamp(min=1).to(feats.dtype)[:, None, None]
            feats = feats - (feats * valid).sum(1, keepdim=True) / counts
        if self.training and self.spec_augment_enabled and (self.freq_masks or self.time_masks):
            spec = feats.transpose(1, 2).unsqueeze(1)  # [B, 1, n_mels, frames]
            for mask in (*self.freq_masks, *self.time_masks):
                spec = mask(spec)
            feats = spec.squeeze(1).transpose(1, 2)
        return LogMelFeatures(feats.masked_fill(~valid, 0.0), raw.frame_lengths)

    @torch.no_grad()
    def fit_stats(self, waves: Sequence[np.ndarray], batch_size: int = 32) -> None:
        """Fit per-mel-bin mean/std on valid frames of `waves` (float32 16 kHz mono arrays)."""
        if len(waves) == 0:
            raise ValueError("fit_stats needs at least one waveform")
        device = self.mel_mean.device
        total = torch.zeros(self.n_mels, dtype=torch.float64)
        total_sq = torch.zeros(self.n_mels, dtype=torch.float64)
        count = 0
        starts = range(0, len(waves), batch_size)
        for start in tqdm(starts, desc="log-mel stats", unit="batch", disable=len(starts) < 4, leave=False):
            chunk = waves[start:start + batch_size]
            wave, lengths = pad_batch(chunk, device=device)
            raw = self.log_mel(wave, lengths)
            valid = frames_mask(raw.frame_lengths, raw.features.shape[1])
            frames = raw.features[valid].double().cpu()  # [n_valid, n_mels]
            total += frames.sum(0)
            total_sq += (frames ** 2).sum(0)
            count += frames.shape[0]
        mean = total / count
        std = (total_sq / count - mean ** 2).clamp(min=1e-8).sqrt().clamp(min=1e-3)
        self.mel_mean.copy_(mean.float())
        self.mel_std.copy_(std.float())
        self.stats_frames.fill_(float(count))

    def config_dict(self) -> dict:
        """JSON-serialisable description for the bundle's `feature` key (models/bundle.py)."""
        return {"type": "logmel", **asdict(self.config), "utterance_norm": self.utterance_norm,
                "level_dbfs": self.level_dbfs}


def pad_batch(waves: Sequence[np.ndarray], device: torch.device | str = "cpu",
              pin_memory: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D float arrays with zeros: -> wave [B, T_max] float32, lengths [B] int64."""
    if len(waves) == 0:
        raise ValueError("pad_batch needs at least one waveform")
    arrays = [np.asarray(w, dtype=np.float32).reshape(-1) for w in waves]
    longest = max(1, max(a.shape[0] for a in arrays))
    batch = torch.zeros(len(arrays), longest, dtype=torch.float32, pin_memory=pin_memory)
    for row, array in zip(batch, arrays):
        row[:array.shape[0]] = torch.from_numpy(array)
    lengths = torch.tensor([a.shape[0] for a in arrays], dtype=torch.long)
    if pin_memory:
        lengths = lengths.pin_memory()
    return batch.to(device, non_blocking=pin_memory), lengths.to(device, non_blocking=pin_memory)
