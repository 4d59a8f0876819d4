"""`python -m train robustness`: a finished CV run, scored again with its test audio corrupted.

Each fold's own bundle (`RUN_DIR/fold{k}`) predicts the test clips that `RUN_DIR/folds.json` gave
that fold, once clean and once through `train.room.corrupt` (noise at a fixed SNR plus room
reverb). Same folds, same clips, same weights: the difference is what a real room costs. The
corruption of a clip is seeded by its file name, so every system sees the same corrupted audio.

Writes `RUN_DIR/robustness.json` (clean and corrupted fold summaries, out-of-fold scores, the drop).
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

from models.labels import EMOTIONS
from train.datasets import DataError
from train.evaluate import score, summarise_folds
from train.reports import write_json
from train.room import CorruptionConfig, corrupt


def _fold_test_files(run_dir: Path) -> list[list[str]]:
    """File names (not paths: the data may have moved) of each fold's test clips, from folds.json."""
    path = run_dir / "folds.json"
    if not path.is_file():
        raise DataError(f"{run_dir} has no folds.json: is it a `python -m train cv` run folder?")
    folds = json.loads(path.read_text())["folds"]
    return [[Path(f).name for f in fold["test_files"]] for fold in folds]


def run_robustness(run_dir: Path, spec, corruption: CorruptionConfig, batch_size: int = 16) -> dict:
    """Score every fold bundle of `run_dir` on its clean and corrupted test clips (data from `spec`,
    a train.runs.RunSpec naming the datasets). Returns and writes the robustness.json payload."""
    from tqdm import tqdm

    from models.loader import load_classifier
    from train.runs import load_run_data

    run_dir = Path(run_dir)
    fold_files = _fold_test_files(run_dir)
    missing = [k for k in range(len(fold_files)) if not (run_dir / f"fold{k}" / "bundle.json").is_file()]
    if missing:
        raise DataError(f"{run_dir}: fold(s) {missing} have no bundle; finish the CV run first")
    loaded = load_run_data(spec, functionals=None)
    by_name = {c.path.name: i for i, c in enumerate(loaded.clips)}
    labels = loaded.data.labels
    clean_oof = np.full(len(labels), -1, dtype=np.int64)
    corrupt_oof = clean_oof.copy()
    clean_results, corrupt_results, covered = [], [], []
    device = None if spec.train.device == "auto" else spec.train.device
    for k, names in enumerate(fold_files):
        absent = [n for n in names if n not in by_name]
        if absent:
            raise DataError(f"fold {k}: {len(absent)} test clip(s) of folds.json are not in the data "
                            f"(first: {absent[0]}); pass the same --dataset/--data as the CV run")
        idx = [by_name[n] for n in names]
        classifier = load_classifier(str(run_dir / f"fold{k}"), device=device)
        clean = [loaded.data.waves[i] for i in idx]
        dirty = [corrupt(w, corruption, zlib.crc32(n.encode())) for w, n in zip(clean, names)]
        for waves, oof in ((clean, clean_oof), (dirty, corrupt_oof)):
            probs = [classifier.predict(waves[s:s + batch_size])
                     for s in tqdm(range(0, len(waves), batch_size), desc=f"fold {k}", unit="batch", leave=False)]
            oof[idx] = np.concatenate(probs).argmax(1)
        clean_results.append(score(labels[idx], clean_oof[idx]))
        corrupt_results.append(score(labels[idx], corrupt_oof[idx]))
        covered += idx
        print(f"fold {k}: macro-F1 clean {clean_results[-1].macro_f1:.3f}, "
              f"corrupted {corrupt_results[-1].macro_f1:.3f}", flush=True)
    clean_sum, dirty_sum = summarise_folds(clean_results), summarise_folds(corrupt_results)
    payload = {
        "run": str(run_dir), "corruption": {**corruption.__dict__, "label": corruption.label},
        "labels": list(EMOTIONS), "clips": len(covered),
        "clean": {"summary": clean_sum, "oof": score(labels[covered], clean_oof[covered]).to_dict()},
        "corrupted": {"summary": dirty_sum, "oof": score(labels[covered], corrupt_oof[covered]).to_dict()},
        "macro_f1_drop": clean_sum["macro_f1"]["mean"] - dirty_sum["macro_f1"]["mean"],
    }
    write_json(run_dir / "robustness.json", payload)
    print(f"macro-F1 over {len(fold_files)} folds: clean {clean_sum['macro_f1']['mean']:.3f}, "
          f"{corruption.label}: {dirty_sum['macro_f1']['mean']:.3f} "
          f"(drop {payload['macro_f1_drop']:.3f}) -> {run_dir / 'robustness.json'}")
    return payload
