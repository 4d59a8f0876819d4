"""`python -m train fuse`: finished CV runs on the same folds, fused into one CV run and one ensemble.

Fold k of the fused run is an ensemble of every run's fold-k bundle, so fold k's test actors are
unseen by each of its members and the fused score is a true cross-validation of the averaged
probabilities. Heads on different frozen encoders (whisper-ultimate tiny.en and base) stay shared:
one pass per encoder (models/ensemble.py).

    OUT/folds.json             the runs' fold assignment (they must all have the same one)
    OUT/fold{k}/               an ensemble (models/bundle.py) of one member per run, named after the run folder
    OUT/fold{k}/<run>/         the run's fold-k bundle (its JSON, weights, metrics.json)
    OUT/fold{k}/metrics.json   the fused fold's test scores (what `train report` reads)
    OUT/                       an ensemble of all K x R member bundles: the folder to ship or load
    OUT/cv_metrics.json, OUT/report.md, OUT/confusion_oof.png
    OUT/oof_predictions.csv    every clip's fused out-of-fold probabilities (`train calibrate` fits on them)
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from models.bundle import copy_bundle, is_bundle_folder, peek_ensemble_meta, save_ensemble
from train.calibrate import OOF_FILE, write_scored_oof
from train.corpora import DataError
from train.evaluate import EvalResult, score, summarise_folds
from train.reports import comparison_table, plot_confusion, write_json
from train.robustness import score_fold_models

FUSED_MODEL = "fusion"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"cannot read {path}: {err}") from None


def check_runs(runs: list[Path]) -> int:
    """The number of folds K, after checking that every run is a finished CV run on the same folds."""
    if len(runs) < 2:
        raise DataError("fuse needs at least two run folders")
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise DataError(f"run folders need distinct names (they name the members): {names}")
    assignments = {}
    for run in runs:
        if not (run / "folds.json").is_file():
            raise DataError(f"{run} has no folds.json: is it a `python -m train cv` run folder?")
        folds = _read_json(run / "folds.json")
        assignments[run.name] = [sorted(Path(f).name for f in fold["test_files"]) for fold in folds["folds"]]
        unfinished = [k for k in range(len(folds["folds"]))
                      if not (is_bundle_folder(run / f"fold{k}")
                              and (run / f"fold{k}" / "metrics.json").is_file())]
        if unfinished:
            raise DataError(f"{run}: fold(s) {unfinished} are not finished; fuse needs complete CV runs")
    first = runs[0].name
    for name, folds in assignments.items():
        if folds != assignments[first]:
            raise DataError(f"{name} and {first} used different fold assignments; fused folds would leak "
                            "test actors into training")
    return len(assignments[first])


def assemble(runs: list[Path], out: Path, k: int, name: str) -> list[dict]:
    """Write OUT's folders and ensembles; returns each run's cv_metrics.json (or {})."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(runs[0] / "folds.json", out / "folds.json")
    shared = [bool((peek_ensemble_meta(run) or {}).get("shared_backbone")) for run in runs]
    for fold in range(k):
        fold_dir = out / f"fold{fold}"
        for run in runs:  # plots and training state stay with the source run
            copy_bundle(run / f"fold{fold}", fold_dir / run.name, also=("metrics.json",))
        save_ensemble(fold_dir, [r.name for r in runs], all(shared), name=f"{name}-fold{fold}")
    save_ensemble(out, [f"fold{f}/{r.name}" for f in range(k) for r in runs], all(shared), name=name)
    return [_read_json(r / "cv_metrics.json") if (r / "cv_metrics.json").is_file() else {} for r in runs]


def run_fuse(runs: list[Path], out: Path, spec, name: str | None = None, batch_size: int = 16) -> dict:
    """Fuse finished CV `runs` into `out` and score it on the runs' folds (data from `spec`, a
    train.runs.RunSpec naming the datasets). Returns and writes the cv_metrics.json payload."""
    started = time.monotonic()
    runs, out = [Path(r) for r in runs], Path(out)
    if out.resolve() in {r.resolve() for r in runs}:
        raise DataError(f"--out {out} is one of the runs being fused; pick a new folder")
    k = check_runs(runs)
    name = name or "fusion-" + "+".join(r.name for r in runs)
    sources = assemble(runs, out, k, name)
    scored = score_fold_models(out, spec, {"clean": lambda wave, file: wave}, batch_size)
    labels, results = scored["labels"], scored["results"]["clean"]
    fold_walls, member_results = [], {r.name: [] for r in runs}
    for fold, result in enumerate(results):
        members = [_read_json(r / f"fold{fold}" / "metrics.json") for r in runs]
        for r, m in zip(runs, members):
            member_results[r.name].append(EvalResult.from_dict(m["eval"]))
        fold_walls.append(sum(m.get("wall_time_s") or 0.0 for m in members))
        write_json(out / f"fold{fold}" / "metrics.json", {
            "model": FUSED_MODEL, "fold": fold, "eval": result.to_dict(), "history": [], "best_epoch": None,
            "members": {r.name: m["eval"]["macro_f1"] for r, m in zip(runs, members)},
            "test_speakers": members[0].get("test_speakers"), "wall_time_s": fold_walls[-1]})
    covered = scored["covered"]
    oof = score(labels[covered], scored["oof"]["clean"][covered])
    summary = summarise_folds(results)
    payload = {"model": FUSED_MODEL, "name": name, "summary": summary, "oof": oof.to_dict(),
               "members": {n: summarise_folds(rs)["macro_f1"] for n, rs in member_results.items()},
               "wall_time_s": sum(fold_walls), "fold_wall_time_s": fold_walls,
               "scoring_time_s": time.monotonic() - started,
               "training": {"model_args": {"members": "+".join(r.name for r in runs)},
                            "command": spec.command,
                            "member_commands": {r.name: src.get("training", {}).get("command")
                                                for r, src in zip(runs, sources)}},
               "data": next((src["data"] for src in sources if src.get("data")), None)}
    write_json(out / "cv_metrics.json", payload)
    write_scored_oof(out / OOF_FILE, scored)
    plot_confusion(oof, out / "confusion_oof.png",
                   f"{name} {k}-fold CV, out-of-fold")
    (out / "report.md").write_text(comparison_table([*runs, out]))
    members = ", ".join(f"{n} {v['mean']:.3f}" for n, v in payload["members"].items())
    print(f"fused CV macro-F1 {summary['macro_f1']['mean']:.3f} ± {summary['macro_f1']['std']:.3f} "
          f"(out-of-fold {oof.macro_f1:.3f}; members {members}) -> {out}")
    return payload
