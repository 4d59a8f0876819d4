"""Knowledge distillation: a trained model's probabilities blended into the training targets.

    fold_members(teacher_dir, fold_index, test_speakers) -> member names fold k may learn from
    teacher_probabilities(folder, waves, device, members, cache_dir) -> float32 [N, C]
    blend_targets(labels [N] int64, teacher [N, C] or None, weight) -> float32 [N, C]

In CV, fold k's student learns from the teacher's fold-k members (`fold{k}` or `fold{k}/...` in
its ensemble), which must not have heard fold k's test speakers: the teacher run's folds.json
has to put every one of them in fold k, or the student's test score would carry what the teacher
learned from those speakers. Every member's probabilities for a clip are cached together
(`<cache_dir>/teacher/<checkpoint hash>/<clip key>.npy`, float32 [K, C]), so one pass of the
teacher's encoders serves all folds' jobs.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from models.atomic import save_npy_atomically
from models.bundle import ENSEMBLE_JSON, is_ensemble_folder, read_ensemble_meta
from models.labels import EMOTIONS, NUM_CLASSES
from train.corpora import DataError
from train.feature_cache import wave_key
from train.losses import one_hot


def fold_members(teacher_dir: Path, fold_index: int, test_speakers: Sequence[str]) -> tuple[str, ...]:
    """The teacher's members of fold `fold_index`, once folds.json shows they never trained on
    `test_speakers`; DataError (one line) otherwise."""
    teacher_dir = Path(teacher_dir)
    record_path = teacher_dir / "folds.json"
    if not record_path.is_file() or not is_ensemble_folder(teacher_dir):
        raise DataError(f"--teacher {teacher_dir} is not a cv run (needs folds.json and {ENSEMBLE_JSON}), so it "
                        "cannot show that its fold models never heard this run's test speakers")
    speaker_fold = json.loads(record_path.read_text())["speaker_fold"]
    elsewhere = sorted(s for s in test_speakers if speaker_fold.get(s) != fold_index)
    if elsewhere:
        raise DataError(f"--teacher {teacher_dir}: its fold {fold_index} trained on test speaker(s) "
                        f"{', '.join(elsewhere)} of this fold; use a teacher cv run on the same folds "
                        "(same data and --seed)")
    prefix = f"fold{fold_index}"
    names = read_ensemble_meta(teacher_dir)["members"]
    mine = tuple(m for m in names if m == prefix or m.startswith(prefix + "/"))
    if not mine:
        raise DataError(f"--teacher {teacher_dir} has no {prefix} member in its {ENSEMBLE_JSON}")
    return mine


def teacher_probabilities(folder: Path, waves: Sequence[np.ndarray], device: torch.device,
                          members: Sequence[str] | None = None, cache_dir: Path | None = None,
                          batch_size: int = 16) -> np.ndarray:
    """Mean probabilities of the teacher's `members` (its ensemble's member names; None = the whole model)
    on `waves` (float32 16 kHz) -> float32 [N, C]."""
    from models.ensemble import EnsembleClassifier
    from models.calibration import without_calibration
    from models.loader import load_classifier

    folder = Path(folder)
    # The members' raw probabilities, as the recipes were tuned on (a calibrated teacher is unwrapped).
    teacher, _ = without_calibration(load_classifier(folder, device=str(device)))
    if tuple(teacher.labels) != tuple(EMOTIONS):
        raise DataError(f"--teacher {folder} predicts {', '.join(teacher.labels)}, not {', '.join(EMOTIONS)}")
    ensemble = isinstance(teacher, EnsembleClassifier)
    names = read_ensemble_meta(folder)["members"] if ensemble else [folder.name]
    pick = list(range(len(names))) if members is None else [names.index(m) for m in members]

    def run(batch: list[np.ndarray]) -> np.ndarray:  # [K, B, C]
        return teacher.predict_members(batch) if ensemble else teacher.predict(batch)[None]

    keys = [wave_key(w) for w in waves]
    cache = None if cache_dir is None else Path(cache_dir) / "teacher" / teacher.checkpoint_hash
    probs = np.zeros((len(names), len(waves), NUM_CLASSES), dtype=np.float32)
    todo = []
    for i, key in enumerate(keys):
        if cache is not None and (cache / f"{key}.npy").is_file():
            probs[:, i] = np.load(cache / f"{key}.npy")
        else:
            todo.append(i)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    todo.sort(key=lambda i: len(waves[i]))  # similar lengths per batch: little padding
    for start in tqdm(range(0, len(todo), batch_size), desc=f"teacher {folder.name}", unit="batch",
                      disable=not todo):
        idx = todo[start:start + batch_size]
        probs[:, idx] = run([waves[i] for i in idx])
        if cache is not None:
            for i in idx:
                save_npy_atomically(cache / f"{keys[i]}.npy", probs[:, i])
    return probs[pick].mean(axis=0)


def blend_targets(labels: np.ndarray, teacher: np.ndarray | None, weight: float) -> torch.Tensor:
    """(1 - weight) * one-hot(labels) + weight * teacher; rows sum to 1. weight 0 needs no teacher."""
    hard = one_hot(torch.from_numpy(np.asarray(labels, np.int64)), NUM_CLASSES)
    if weight == 0:
        return hard
    if teacher is None or teacher.shape != (len(labels), NUM_CLASSES):
        raise ValueError(f"teacher_weight {weight} needs teacher probabilities shaped ({len(labels)}, {NUM_CLASSES})")
    soft = torch.from_numpy(np.asarray(teacher, np.float32))
    return (1.0 - weight) * hard + weight * soft / soft.sum(dim=1, keepdim=True)
