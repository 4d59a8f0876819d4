"""fp16 on-disk cache of frozen-backbone features, so only the head is trained.

A model opts in with `frontend_cacheable = True` and is a models.contract.CacheableFrontEnd:
* `frontend_features(wave [B, T], lengths [B]) -> (feats [B, ..., F, ...], feat_lengths [B])`
  (e.g. [B, F, D] or [B, layers, F, D]; the frame axis is `frontend_time_axis`),
* `forward_features(feats, feat_lengths) -> logits [B, 6]`.
Features are computed once per clip (no waveform augmentation in this mode), keyed by the
model's class/args and the clip's samples, and stored as float16 .npy files.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from models.atomic import save_npy_atomically
from models.baseline import BaselineConfig, running_statistics
from models.contract import CacheableFrontEnd
from models.labels import NUM_CLASSES
from train.augment import AugmentConfig, WaveAugmenter
from train.distributed import DistInfo, barrier


class CachedHead(nn.Module):
    """Wraps a cacheable model so forward(feats, feat_lengths) trains only what follows the frontend."""

    def __init__(self, model: nn.Module, time_axis: int = 1) -> None:
        super().__init__()
        self.model = model
        self.time_axis = time_axis  # frame axis of the batched features

    def forward(self, feats: torch.Tensor, feat_lengths: torch.Tensor, egemaps=None) -> torch.Tensor:
        """feats [B, F_max, ...] as cached (frames first) -> the model's own layout -> logits [B, 6]."""
        return self.model.forward_features(feats.movedim(1, self.time_axis), feat_lengths)

    @staticmethod
    def collate(items: list[tuple[int, Path]], norm: SpeakerNorm | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Load cached clips (frames first) and zero-pad: -> idx [B], feats [B, F_max, ...] fp32, lengths [B].

        norm: each clip's features are z-scored with its speaker's statistics (train.feature_cache.SpeakerNorm)."""
        arrays = [np.load(path, mmap_mode="r") for _, path in items]
        if norm is not None:
            arrays = [norm.apply(path, a) for (_, path), a in zip(items, arrays)]
        longest = max(a.shape[0] for a in arrays)
        feats = torch.zeros((len(arrays), longest, *arrays[0].shape[1:]), dtype=torch.float32)
        for row, a in zip(feats, arrays):
            row[:a.shape[0]] = torch.from_numpy(np.asarray(a, dtype=np.float32))
        idx = torch.tensor([i for i, _ in items], dtype=torch.long)
        return idx, feats, torch.tensor([a.shape[0] for a in arrays], dtype=torch.long)

    @torch.no_grad()
    def predict_items(self, items: list[Path], batch_size: int, device, norm: SpeakerNorm | None = None
                      ) -> np.ndarray:
        """Probabilities float32 [N, 6] from cached features (z-scored per speaker with norm)."""
        self.eval()
        self.to(device)
        probs = np.zeros((len(items), NUM_CLASSES), dtype=np.float32)
        for start in range(0, len(items), batch_size):
            _, feats, lengths = self.collate(list(enumerate(items[start:start + batch_size])), norm)
            logits = self(feats.to(device), lengths.to(device))
            probs[start:start + len(lengths)] = torch.softmax(logits.float(), 1).cpu().numpy()
        return probs


def _model_key(model: nn.Module) -> str:
    args = model.model_args()
    blob = json.dumps({"cls": type(model).__name__, "args": args, "weights": _backbone_weights_stamp(model)},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _backbone_weights_stamp(model: nn.Module) -> list[tuple[str, int, int]]:
    """Name, size and mtime of the backbone's weight files: new weights in the same folder
    must not reuse features cached from the old ones."""
    info = getattr(model, "backbone_info", None)
    folder = Path(getattr(info, "path", "") or "")
    if not folder.is_dir():
        return []
    stamps = []
    for name in ("model.safetensors", "pytorch_model.bin"):
        weights = folder / name
        if weights.is_file():
            stat = weights.stat()
            stamps.append((name, stat.st_size, stat.st_mtime_ns))
    return stamps


def cached_feature_data(model: nn.Module, waves: list[np.ndarray], cache_dir: Path, device: torch.device,
                        dist: DistInfo) -> tuple[list[Path], list[int], int]:
    """Make sure every clip's features are cached.

    Returns (cache file per clip, frames per clip, frame axis of the model's batched features).
    """
    keys = [wave_key(w) for w in waves]
    return _fill_cache(model, keys, lambda i: waves[i], Path(cache_dir) / _model_key(model), device, dist)


def cached_augmented_copies(model: nn.Module, waves: list[np.ndarray], augment: AugmentConfig, copies: int,
                            seed: int, cache_dir: Path, device: torch.device, dist: DistInfo
                            ) -> list[tuple[list[Path], list[int]]]:
    """Features of `copies` augmented versions of every clip, cached beside the clean ones.

    Copy k of a clip is a pure function of the clip's samples, the augmentation settings, the seed
    and k (not of its index in a fold), so every fold and every later run reuses the same files.
    Returns, per copy, (cache file per clip, frames per clip)."""
    tag = hashlib.sha256(json.dumps([asdict(augment), seed], sort_keys=True).encode()).hexdigest()[:12]
    folder = Path(cache_dir) / _model_key(model)
    clean_keys = [wave_key(w) for w in waves]
    out = []
    for k in range(1, copies + 1):
        keys = [f"{key}-aug{tag}-{k}" for key in clean_keys]

        def make_wave(i: int, k: int = k) -> np.ndarray:
            clip_seed = int(clean_keys[i][:12], 16) ^ (seed * 1_000_003 + k)
            return WaveAugmenter(augment, seed=clip_seed)(waves[i])

        paths, lengths, _ = _fill_cache(model, keys, make_wave, folder, device, dist, f"caching copy {k}/{copies}")
        out.append((paths, lengths))
    return out


def wave_key(wave: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(wave, np.float32).tobytes()).hexdigest()[:32]


def _fill_cache(model: nn.Module, keys: list[str], make_wave: Callable[[int], np.ndarray], folder: Path,
                device: torch.device, dist: DistInfo, desc: str = "caching features"
                ) -> tuple[list[Path], list[int], int]:
    """Compute and store (rank 0) the features of every key not cached yet; make_wave(i) gives clip i."""
    paths = [folder / f"{key}.npy" for key in keys]
    todo = [i for i, p in enumerate(paths) if not p.is_file()]
    if todo and dist.is_main:
        folder.mkdir(parents=True, exist_ok=True)
        model.eval()
        first_wave = make_wave(todo[0])
        first, time_axis = _features(model, first_wave, device)
        (folder / "meta.json").write_text(json.dumps({"time_axis": time_axis}))
        estimate = first.nbytes * len(todo)
        print(f"feature cache: {len(todo)} clip(s) to compute, about {estimate / 2**20:.1f} MiB "
              f"(fp16) will be written to {folder}")
        # atomic with a per-writer temporary name: a killed job leaves no truncated entry, and
        # fold jobs sharing the cache never collide
        save_npy_atomically(paths[todo[0]], first)
        for i in tqdm(todo[1:], desc=desc, unit="clip"):
            save_npy_atomically(paths[i], _features(model, make_wave(i), device)[0])
    barrier()
    lengths = [int(np.load(p, mmap_mode="r").shape[0]) for p in paths]
    return paths, lengths, int(json.loads((folder / "meta.json").read_text())["time_axis"])


def _time_axis(model: nn.Module, shape: tuple[int, ...], frames: int) -> int:
    """Frame axis of one clip's features [..., F, ...] (batch axis removed)."""
    if isinstance(model, CacheableFrontEnd):
        return int(model.frontend_time_axis) - 1
    candidates = [a for a, size in enumerate(shape) if size == frames and (a < len(shape) - 1 or len(shape) == 1)]
    if not candidates:
        raise ValueError(f"cannot tell the frame axis of features shaped {shape} with {frames} frames")
    return candidates[-1]


@torch.no_grad()
def _features(model: nn.Module, wave: np.ndarray, device: torch.device) -> tuple[np.ndarray, int]:
    """One clip -> (float16 [F, ...] valid frames first, frame axis in the model's batched layout)."""
    x = torch.from_numpy(np.ascontiguousarray(wave, np.float32))[None].to(device)
    feats, lengths = model.frontend_features(x, torch.tensor([x.shape[1]], device=device))
    clip = feats[0].float().cpu().numpy()
    axis = _time_axis(model, clip.shape, int(lengths[0]))
    clip = np.moveaxis(clip, axis, 0)[:int(lengths[0])]
    return np.ascontiguousarray(clip.astype(np.float16)), axis + 1


class CachedItems(Dataset):
    """Item i -> (i, cache file of clip i). With augmented copies (variants[1:]), the variant of
    clip i in an epoch is a pure function of (seed, epoch, i), like train.loop's on-the-fly augmentation.
    paired: item i -> [(i, clean file), (i, file of one copy)] for consistency training."""

    def __init__(self, variants: list[list[Path]], seed: int, paired: bool = False) -> None:
        if paired and len(variants) < 2:
            raise ValueError("paired items need at least one augmented copy")
        self.variants, self.seed, self.paired, self.epoch = variants, seed, paired, 0

    def __len__(self) -> int:
        return len(self.variants[0])

    def __getitem__(self, i: int) -> tuple[int, Path] | list[tuple[int, Path]]:
        if len(self.variants) == 1:
            return i, self.variants[0][i]
        rng = np.random.default_rng([self.seed, self.epoch, i])
        if self.paired:
            return [(i, self.variants[0][i]), (i, self.variants[1 + int(rng.integers(len(self.variants) - 1))][i])]
        return i, self.variants[int(rng.integers(len(self.variants)))][i]


def collate_pairs(items: list[list[tuple[int, Path]]], norm: SpeakerNorm | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pairs from CachedItems(paired=True) -> one batch of 2B rows: clean, copy, clean, copy, ..."""
    return CachedHead.collate([item for pair in items for item in pair], norm)


class SpeakerNorm:
    """Cache file -> the (mean, std) [L, D] its features are z-scored with (models.baseline).

    Built per list of cache files in arrival order: each clip gets its speaker's running baseline
    after that clip, as `train evaluate` and the live monitor compute it, so training sees what
    inference will. Augmented copies get the running baseline of the speaker's copies (the same
    room throughout), not of the clean clips."""

    def __init__(self, config: BaselineConfig) -> None:
        self.config = config
        self._stats: dict[Path, tuple[np.ndarray, np.ndarray]] = {}

    def add(self, paths: list[Path], speakers: list[str]) -> "SpeakerNorm":
        stats = running_statistics(speakers, lambda i: np.load(paths[i]), self.config)
        self._stats.update(zip(paths, stats))
        return self

    def apply(self, path: Path, features: np.ndarray) -> np.ndarray:
        """features [F, L, D] of cache file `path` -> float32 z-scored."""
        mean, std = self._stats[path]
        return (np.asarray(features, dtype=np.float32) - mean) / std
