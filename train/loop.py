"""The generic training loop for every torch registry model.

AdamW + linear warmup / cosine decay, gradient clipping and accumulation, Mixup, class-weighted
losses, early stopping on validation macro-F1, best weights kept (with an empty validation set: all
epochs run and the final weights are kept), a resumable state file written
after every epoch, length-bucketed batches, mixed precision on GPU only, and PyTorch DDP when
started by torchrun (see train/distributed.py). Frozen-backbone models can train their head from
an fp16 feature cache (train/feature_cache.py).
"""
from __future__ import annotations

import contextlib
import copy
import functools
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from models.device import resolve_device as models_resolve_device
from models.baseline import BaselineConfig
from models.features import pad_batch
from models.labels import NUM_CLASSES
from train.augment import AugmentConfig, WaveAugmenter, mixup
from train.distributed import DistInfo, dist_info, wrap_ddp
from train.evaluate import EvalResult, score
from train.losses import LossConfig, class_weights_from_counts, js_consistency, make_loss
from train.sampler import BucketBatchSampler, balanced_weights
from train.teacher import blend_targets

STATE_FILE = "train_state.pt"


class TrainingInterrupted(RuntimeError):
    """Ctrl-C during training; the message says where the state is and how to resume."""


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-2
    warmup_fraction: float = 0.1
    grad_clip_norm: float = 5.0
    grad_accum_steps: int = 1
    patience_epochs: int = 8
    seed: int = 0
    mixup_alpha: float = 0.0  # 0 switches Mixup off
    spec_augment: bool = True
    device: str = "auto"
    workers: int = 0
    eval_batch_size: int = 32
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # Frozen-front-end models trained from the feature cache see no on-the-fly waveform augmentation;
    # instead this many augmented copies of each training clip are cached, and every epoch draws one
    # of (clean, copy 1, ..., copy N) per clip. 0 = clean features only.
    cached_augment_copies: int = 0
    # Knowledge distillation: each training target is (1 - w) * one-hot + w * the teacher's
    # probabilities for that clip (ClipData.teacher). 0 = hard labels only.
    teacher_weight: float = 0.0
    # Consistency training (AugMix-style), frozen-encoder models with cached copies only: every step
    # scores each clip clean and as one of its copies, and adds this weight times the Jensen-Shannon
    # divergence of the two predictions (train.losses.js_consistency). 0 = off.
    consistency_weight: float = 0.0
    # Pooled corpora: draw each epoch's clips so every corpus, and every class within it, weighs
    # the same (train.sampler); the loss then needs no class weights.
    balanced_sampling: bool = False
    # Per-speaker normalisation (models.baseline), frozen-encoder models with a feature cache: each
    # clip's encoder states are z-scored with its speaker's running baseline. None = off.
    speaker_baseline: BaselineConfig | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum_steps", "patience_epochs", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError("lr must be > 0 and weight_decay >= 0")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.mixup_alpha < 0 or self.workers < 0 or self.cached_augment_copies < 0:
            raise ValueError("mixup_alpha, workers and cached_augment_copies must be >= 0")
        if not 0 <= self.teacher_weight <= 1:
            raise ValueError(f"teacher_weight must be in [0, 1], got {self.teacher_weight}")
        if self.consistency_weight < 0:
            raise ValueError(f"consistency_weight must be >= 0, got {self.consistency_weight}")
        if self.consistency_weight > 0 and (self.cached_augment_copies < 1 or self.mixup_alpha > 0):
            raise ValueError("consistency_weight needs cached_augment_copies >= 1 and no Mixup")
        if isinstance(self.speaker_baseline, dict):  # from a saved config (to_dict)
            object.__setattr__(self, "speaker_baseline", BaselineConfig(**self.speaker_baseline))
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ClipData:
    """In-memory clips: waves float32 16 kHz [T_i], labels int64 [N], egemaps float32 [N, 88] or None,
    teacher float32 [N, C] (a teacher model's probabilities, train.teacher) or None; speakers and
    corpora: each clip's speaker and corpus name (balanced sampling, per-speaker normalisation) or None."""

    waves: list[np.ndarray]
    labels: np.ndarray
    egemaps: np.ndarray | None = None
    teacher: np.ndarray | None = None
    speakers: list[str] | None = None
    corpora: list[str] | None = None

    def subset(self, idx: list[int]) -> "ClipData":
        return ClipData([self.waves[i] for i in idx], self.labels[idx],
                        None if self.egemaps is None else self.egemaps[idx],
                        None if self.teacher is None else self.teacher[idx],
                        None if self.speakers is None else [self.speakers[i] for i in idx],
                        None if self.corpora is None else [self.corpora[i] for i in idx])


@dataclass
class TrainResult:
    """model holds the best (highest validation macro-F1) weights, on the CPU, in eval mode.

    Without a validation set: the final-epoch weights, best_epoch = last epoch, no validation scores (None).
    """

    model: nn.Module
    history: list[dict]
    best_epoch: int
    best_val_macro_f1: float | None
    val_eval: EvalResult | None
    earlier_train_s: float = 0.0  # training seconds spent by the interrupted runs this one resumed


def resolve_device(name: str, dist: DistInfo | None = None) -> torch.device:
    """models.device.resolve_device, plus one GPU per process when torchrun starts several."""
    name = models_resolve_device(name)
    if name == "cuda" and dist is not None and dist.world_size > 1:
        return torch.device("cuda", dist.local_rank)
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _AugmentedWaves(Dataset):
    """Item i -> (i, augmented wave). Augmentation is a pure function of (seed, epoch, i), so it is
    reproducible with any number of workers and after a resume."""

    def __init__(self, waves: list[np.ndarray], augment: AugmentConfig | None, seed: int) -> None:
        self.waves, self.augment, self.seed, self.epoch = waves, augment, seed, 0

    def __len__(self) -> int:
        return len(self.waves)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray]:
        wave = self.waves[i]
        if self.augment is not None:
            wave = WaveAugmenter(self.augment, seed=self.seed * 1_000_003 + self.epoch * 10_007 + i)(wave)
        return i, wave


def _collate(items: list[tuple[int, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    idx = torch.tensor([i for i, _ in items], dtype=torch.long)
    waves, lengths = pad_batch([w for _, w in items])
    return idx, waves, lengths


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR multiplier: linear 0->1 over warmup_steps, then cosine 1->0.01 until total_steps."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor


@torch.no_grad()
def predict_proba(model: nn.Module, data: ClipData, batch_size: int = 32,
                  device: torch.device | str = "cpu") -> np.ndarray:
    """Class probabilities float32 [N, 6] in eval mode; batches sorted by length for speed."""
    model.eval()
    order = np.argsort([len(w) for w in data.waves])
    probs = np.zeros((len(data.waves), NUM_CLASSES), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        waves, lengths = pad_batch([data.waves[i] for i in rows], device=device)
        ege = None if data.egemaps is None else torch.from_numpy(data.egemaps[rows]).float().to(device)
        logits = model(waves, lengths, ege) if ege is not None else model(waves, lengths)
        probs[rows] = torch.softmax(logits.float(), dim=1).cpu().numpy()
    return probs


def evaluate_split(model: nn.Module, data: ClipData, batch_size: int,
                   device: torch.device | str, predict: Callable | None = None) -> tuple[EvalResult, float]:
    """(metrics, mean cross-entropy) on a split."""
    probs = (predict or predict_proba)(model, data, batch_size, device)
    loss = float(-np.log(np.clip(probs[np.arange(len(probs)), data.labels], 1e-8, 1.0)).mean())
    return score(data.labels, probs.argmax(1)), loss


def _rng_state(mix_gen: torch.Generator) -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "mixup": mix_gen.get_state()}


def _set_rng_state(state: dict, mix_gen: torch.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    mix_gen.set_state(state["mixup"])


def train_model(model: nn.Module, train: ClipData, val: ClipData, cfg: TrainConfig, run_dir: Path,
                resume: bool = False, cache_dir: Path | None = None,
                epoch_callback: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Train `model` (normalisation already fitted) on `train`, early-stop on `val` macro-F1.

    An empty `val` (no clips) switches early stopping off: every one of cfg.epochs runs (the cosine
    schedule reaches its end) and the final weights are kept; history rows then hold None for the
    validation columns.
    Writes run_dir/train_state.pt after every epoch (rank 0 only); with resume=True continues
    from it. Raises TrainingInterrupted on Ctrl-C. epoch_callback(epoch, history_row) runs after
    each epoch's state is saved.
    """
    from train.feature_cache import (CachedHead, CachedItems, SpeakerNorm, cached_augmented_copies,
                                     cached_feature_data, collate_pairs)

    dist = dist_info()
    has_val = len(val.waves) > 0
    device = resolve_device(cfg.device, dist)
    seed_everything(cfg.seed + dist.rank)
    run_dir = Path(run_dir)
    state_path = run_dir / STATE_FILE
    model.set_spec_augment(cfg.spec_augment)  # models.contract.TrainableModel
    model.to(device)

    use_cache = cache_dir is not None and bool(model.frontend_cacheable)
    if cfg.consistency_weight > 0 and not use_cache:
        raise ValueError("consistency_weight needs a frozen-encoder model trained from --cache-dir")
    if cfg.speaker_baseline is not None and (not use_cache or train.speakers is None):
        raise ValueError("per-speaker normalisation needs a frozen-encoder model trained from --cache-dir")
    paired = cfg.consistency_weight > 0
    norm = val_norm = None
    if use_cache:
        train_items, train_lengths, time_axis = cached_feature_data(model, train.waves, Path(cache_dir), device, dist)
        val_items = cached_feature_data(model, val.waves, Path(cache_dir), device, dist)[0] if has_val else []
        trainable: nn.Module = CachedHead(model, time_axis)
        copies = cached_augmented_copies(model, train.waves, cfg.augment, cfg.cached_augment_copies, cfg.seed,
                                          Path(cache_dir), device, dist) if cfg.cached_augment_copies else []
        variants = [train_items] + [paths for paths, _ in copies]
        dataset: Dataset = CachedItems(variants, cfg.seed, paired)
        if cfg.speaker_baseline is not None:
            norm = SpeakerNorm(cfg.speaker_baseline)
            for paths in variants:
                norm.add(paths, train.speakers)
            val_norm = SpeakerNorm(cfg.speaker_baseline).add(val_items, val.speakers) if has_val else None
        collate = functools.partial(collate_pairs if paired else CachedHead.collate, norm=norm)
    else:
        trainable = model
        train_lengths = [len(w) for w in train.waves]
        dataset = _AugmentedWaves(train.waves, cfg.augment, cfg.seed)
        collate = _collate
    ddp_model = wrap_ddp(trainable, dist, device, find_unused=use_cache)

    weights = None
    if cfg.balanced_sampling:
        weights = balanced_weights(train.corpora or ["?"] * len(train.labels), train.labels)
    sampler = BucketBatchSampler(train_lengths, cfg.batch_size, cfg.seed, dist, weights=weights)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=cfg.workers)
    # balanced draws already give every class its share: weighting the loss too would count it twice
    counts = [1] * NUM_CLASSES if cfg.balanced_sampling else np.bincount(train.labels, minlength=NUM_CLASSES).tolist()
    loss_fn = make_loss(cfg.loss, class_weights_from_counts(counts).to(device))
    params = [p for p in trainable.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(sampler) / cfg.grad_accum_steps))
    total_steps = steps_per_epoch * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(total_steps, max(1, int(cfg.warmup_fraction * total_steps))))
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    mix_gen = torch.Generator().manual_seed(cfg.seed * 1000 + dist.rank)
    targets_all = blend_targets(train.labels, train.teacher, cfg.teacher_weight)
    egemaps_all = None if train.egemaps is None else torch.from_numpy(train.egemaps).float()

    history: list[dict] = []
    best_f1, best_epoch, bad_epochs, start_epoch, earlier_s = -1.0, -1, 0, 0, 0.0
    best_state = copy.deepcopy(model.state_dict()) if has_val else None
    if resume and state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        history, best_f1, best_epoch = state["history"], state["best_f1"], state["best_epoch"]
        bad_epochs, start_epoch, best_state = state["bad_epochs"], state["epoch"], state["best_model"]
        earlier_s = state.get("train_s", 0.0)  # states saved before train_s existed count from here
        _set_rng_state(state["rng"], mix_gen)
        if dist.is_main:
            best = f"best macro-F1 {best_f1:.3f}" if has_val else "no validation split"
            print(f"resuming from {state_path} after epoch {start_epoch} ({best})")

    predict = (lambda m, d, bs, dev: CachedHead(m, time_axis).predict_items(val_items, bs, dev, val_norm)) \
        if use_cache else None
    epoch, run_started = start_epoch, time.monotonic()
    try:
        for epoch in range(start_epoch, cfg.epochs):
            if bad_epochs >= cfg.patience_epochs:
                break
            sampler.set_epoch(epoch)
            if isinstance(dataset, (_AugmentedWaves, CachedItems)):
                dataset.epoch = epoch
            ddp_model.train()
            total, n_batches = 0.0, 0
            optimizer.zero_grad(set_to_none=True)
            bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False,
                       disable=not dist.is_main)
            for step, (idx, x, lengths) in enumerate(bar):
                x, lengths = x.to(device), lengths.to(device)
                targets = targets_all[idx].to(device)
                ege = None if egemaps_all is None else egemaps_all[idx].to(device)
                if cfg.mixup_alpha > 0:
                    mixed = mixup(x, lengths, ege, targets, cfg.mixup_alpha, mix_gen)
                    x, lengths, ege, targets = mixed.waves, mixed.lengths, mixed.egemaps, mixed.targets
                last_micro = (step + 1) % cfg.grad_accum_steps == 0 or step + 1 == len(sampler)
                with ddp_model.no_sync() if (dist.world_size > 1 and not last_micro) else contextlib.nullcontext():
                    with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                        logits = ddp_model(x, lengths, ege) if ege is not None else ddp_model(x, lengths)
                    loss = loss_fn(logits.float(), targets)
                    if paired:  # rows alternate clean, copy of the same clip
                        loss = loss + cfg.consistency_weight * js_consistency(logits[0::2], logits[1::2])
                    scaler.scale(loss / cfg.grad_accum_steps).backward()
                if last_micro:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(params, cfg.grad_clip_norm)
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    scheduler.step()
                total += float(loss.detach())
                n_batches += 1
                bar.set_postfix(loss=f"{total / n_batches:.3f}")
            row = {"epoch": epoch, "train_loss": total / max(1, n_batches), "val_loss": None,
                   "val_macro_f1": None, "val_accuracy": None, "lr": scheduler.get_last_lr()[0]}
            if has_val:
                val_eval, row["val_loss"] = evaluate_split(model, val, cfg.eval_batch_size, device, predict)
                row["val_macro_f1"], row["val_accuracy"] = val_eval.macro_f1, val_eval.accuracy
            history.append(row)
            if not has_val:
                best_epoch = epoch  # no selection: the last finished epoch's weights are kept
            elif val_eval.macro_f1 > best_f1:
                best_f1, best_epoch, bad_epochs = val_eval.macro_f1, epoch, 0
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            else:
                bad_epochs += 1
            if dist.is_main:
                tqdm.write(f"epoch {epoch + 1}: train loss {row['train_loss']:.3f}, " + (
                    f"val loss {row['val_loss']:.3f}, val macro-F1 {row['val_macro_f1']:.3f} "
                    f"(best {best_f1:.3f} @ {best_epoch + 1})" if has_val else "no validation split"))
                run_dir.mkdir(parents=True, exist_ok=True)
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                            "epoch": epoch + 1, "history": history, "best_f1": best_f1,
                            "best_epoch": best_epoch, "bad_epochs": bad_epochs, "best_model": best_state,
                            "rng": _rng_state(mix_gen), "config": cfg.to_dict(),
                            "train_s": earlier_s + time.monotonic() - run_started}, state_path)
            if epoch_callback is not None:
                epoch_callback(epoch, row)
    except KeyboardInterrupt:
        raise TrainingInterrupted(
            f"interrupted in epoch {epoch + 1}; the state after {len(history)} finished epoch(s) is in "
            f"{state_path}. Resume by running the same command again with --resume") from None

    if best_state is not None:
        model.load_state_dict(best_state)
    model.to("cpu").eval()
    if dist.is_main and state_path.is_file():
        state_path.unlink()  # finished: the bundle holds the weights; the state only serves interrupted runs
    if not has_val:
        return TrainResult(model, history, best_epoch, None, None, earlier_s)
    final_eval, _ = evaluate_split(model, val, cfg.eval_batch_size, "cpu", predict)
    return TrainResult(model, history, best_epoch, best_f1, final_eval, earlier_s)


__all__ = ["TrainConfig", "ClipData", "TrainResult", "TrainingInterrupted", "train_model", "predict_proba",
           "evaluate_split", "warmup_cosine"]
