"""`python -m train robustness`: a finished CV run, scored again with its test audio corrupted.

Each fold's own model (`RUN_DIR/fold{k}`: a bundle, or the fold ensemble of a fused run) predicts
the test clips that `RUN_DIR/folds.json` gave that fold, once clean and once through
`train.room.corrupt` (noise at a fixed SNR plus room reverb). Same folds, same clips, same
weights: the difference is what a real room costs. The corruption of a clip is seeded by its file
name, so every system sees the same corrupted audio.

With `gains_db`, each fold also predicts its clean test clips at those microphone gains (clipped at
full scale like a converter would), since a level the model never heard can read as an emotion.

Writes `RUN_DIR/robustness.json` or `--out` (clean and corrupted fold summaries, out-of-fold scores, the drop,
and per gain its summary, out-of-fold scores and drop).
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Callable

import numpy as np

from models.labels import EMOTIONS
from models.safe_json import FOLDS_SCHEMA, read_json
from train.corpora import DataError
from train.evaluate import score, summarise_folds
from train.reports import write_json
from train.room import CorruptionConfig, corrupt


def _fold_test_files(run_dir: Path) -> list[list[str]]:
    """File names (not paths: the data may have moved) of each fold's test clips, from folds.json."""
    path = run_dir / "folds.json"
    if not path.is_file():
        raise DataError(f"{run_dir} has no folds.json: is it a `python -m train cv` run folder?")
    folds = read_json(path, FOLDS_SCHEMA)["folds"]
    return [[Path(f).name for f in fold["test_files"]] for fold in folds]


def has_fold_model(fold_dir: Path) -> bool:
    """A finished fold: one bundle (cv run) or an ensemble of bundles (fused run, train/fuse.py)."""
    from models.bundle import holds_model

    return holds_model(fold_dir)


def score_fold_models(run_dir: Path, spec, variants: dict[str, Callable[[np.ndarray, str], np.ndarray]],
                      batch_size: int = 16, partial: bool = False) -> dict:
    """Every fold model of `run_dir` predicts the test clips folds.json gave its fold, once per variant
    (name -> fn(wave, file name) -> wave that is scored; identity for clean audio). A fold without a
    model is an error, unless `partial`: then only the finished folds are scored (at least one).

    Returns {"labels": true class per clip [N], "covered": scored clip indices, "folds": scored fold
    indices, "folds_total": folds in folds.json, "results": {variant: [EvalResult per scored fold]}, "oof": {variant: predicted class per
    clip [N], -1 where not covered}, "probs": {variant: probabilities [N, 6], NaN where not covered},
    "fold_of": the fold that scored each clip [N] (-1: none), "clips": the N train.corpora.Clip}."""
    from tqdm import tqdm

    from models.loader import load_classifier
    from train.runs import load_run_data

    run_dir = Path(run_dir)
    fold_files = _fold_test_files(run_dir)
    missing = [k for k in range(len(fold_files)) if not has_fold_model(run_dir / f"fold{k}")]
    if missing and (not partial or len(missing) == len(fold_files)):
        hint = "" if partial else " (or pass --partial to score the finished ones)"
        raise DataError(f"{run_dir}: fold(s) {missing} have no bundle; finish the CV run first{hint}")
    scored_folds = [k for k in range(len(fold_files)) if k not in missing]
    loaded = load_run_data(spec, functionals=None)
    by_name = {c.path.name: i for i, c in enumerate(loaded.clips)}
    labels = loaded.data.labels
    oof = {v: np.full(len(labels), -1, dtype=np.int64) for v in variants}
    probs = {v: np.full((len(labels), len(EMOTIONS)), np.nan) for v in variants}
    fold_of = np.full(len(labels), -1, dtype=np.int64)
    results: dict[str, list] = {v: [] for v in variants}
    covered: list[int] = []
    device = None if spec.train.device == "auto" else spec.train.device
    for k in scored_folds:
        names = fold_files[k]
        absent = [n for n in names if n not in by_name]
        if absent:
            raise DataError(f"fold {k}: {len(absent)} test clip(s) of folds.json are not in the data "
                            f"(first: {absent[0]}); pass the same --dataset/--data as the CV run")
        idx = [by_name[n] for n in names]
        classifier = load_classifier(str(run_dir / f"fold{k}"), device=device)
        for variant, transform in variants.items():
            waves = [transform(loaded.data.waves[i], n) for i, n in zip(idx, names)]
            batches = [classifier.predict(waves[s:s + batch_size]) for s in
                       tqdm(range(0, len(waves), batch_size), desc=f"fold {k} {variant}", unit="batch", leave=False)]
            probs[variant][idx] = np.concatenate(batches)
            oof[variant][idx] = probs[variant][idx].argmax(1)
            results[variant].append(score(labels[idx], oof[variant][idx]))
        covered += idx
        fold_of[idx] = k
        print(f"fold {k}: macro-F1 " + ", ".join(f"{v} {r[-1].macro_f1:.3f}" for v, r in results.items()),
              flush=True)
    return {"labels": labels, "covered": covered, "folds": scored_folds, "folds_total": len(fold_files),
            "results": results, "oof": oof, "probs": probs, "fold_of": fold_of,
            "clips": loaded.clips}


def _at_gain(gain_db: float) -> Callable[[np.ndarray, str], np.ndarray]:
    factor = 10 ** (gain_db / 20)
    return lambda wave, name: np.clip(wave * factor, -1.0, 1.0)


def run_robustness(run_dir: Path, spec, corruption: CorruptionConfig, batch_size: int = 16,
                   gains_db: tuple[float, ...] = (), partial: bool = False, out: Path | None = None) -> dict:
    """Score every fold model of `run_dir` on its clean and corrupted test clips (data from `spec`,
    a train.runs.RunSpec naming the datasets), and on its clean clips at each of `gains_db` (finite
    dB); with `partial`, only the folds that have finished (payload "folds_scored" names them).
    Returns the payload and writes it atomically to `out` (default RUN_DIR/robustness.json)."""
    run_dir = Path(run_dir)
    out = run_dir / "robustness.json" if out is None else Path(out)
    variants = {"clean": lambda wave, name: wave,
                "corrupted": lambda wave, name: corrupt(wave, corruption, zlib.crc32(name.encode()))}
    variants.update({f"gain {g:+g} dB": _at_gain(g) for g in gains_db})
    scored = score_fold_models(run_dir, spec, variants, batch_size, partial)
    labels, covered, folds_total = scored["labels"], scored["covered"], scored["folds_total"]
    clean_sum = summarise_folds(scored["results"]["clean"])
    dirty_sum = summarise_folds(scored["results"]["corrupted"])
    payload = {
        "run": str(run_dir), "corruption": {**corruption.__dict__, "label": corruption.label},
        "labels": list(EMOTIONS), "clips": len(covered),
        "folds_scored": scored["folds"], "folds_total": folds_total,
        "clean": {"summary": clean_sum, "oof": score(labels[covered], scored["oof"]["clean"][covered]).to_dict()},
        "corrupted": {"summary": dirty_sum,
                      "oof": score(labels[covered], scored["oof"]["corrupted"][covered]).to_dict()},
        "macro_f1_drop": clean_sum["macro_f1"]["mean"] - dirty_sum["macro_f1"]["mean"],
    }
    if gains_db:
        payload["gain"] = []
        for g in gains_db:
            summary = summarise_folds(scored["results"][f"gain {g:+g} dB"])
            payload["gain"].append({
                "gain_db": g, "summary": summary,
                "oof": score(labels[covered], scored["oof"][f"gain {g:+g} dB"][covered]).to_dict(),
                "macro_f1_drop": clean_sum["macro_f1"]["mean"] - summary["macro_f1"]["mean"]})
            print(f"gain {g:+g} dB: macro-F1 {summary['macro_f1']['mean']:.3f}")
    write_json(out, payload)
    n_scored = len(scored["folds"])
    over = (f"{n_scored} folds" if n_scored == folds_total
            else f"{n_scored} of {folds_total} folds (partial: folds {scored['folds']})")
    print(f"macro-F1 over {over}: clean {clean_sum['macro_f1']['mean']:.3f}, "
          f"{corruption.label}: {dirty_sum['macro_f1']['mean']:.3f} "
          f"(drop {payload['macro_f1_drop']:.3f}) -> {out}")
    return payload
