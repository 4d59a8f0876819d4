"""Run reports: confusion-matrix and learning-curve PNGs, metrics JSON, and a markdown table
comparing several run folders (the egemaps-svm row is the reference).

The table reads any run folder: a finished CV run, a CV run with only some folds finished (a row
marked "k of K folds", never shown as the full CV), or a single fit run with validation scores.
Out-of-fold scores come from the summed per-fold confusion matrices (the same numbers as scoring the
concatenated fold predictions)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from models.atomic import write_atomically
from models.safe_json import CV_METRICS_SCHEMA, FOLD_METRICS_SCHEMA, RUN_METRICS_SCHEMA, read_json
from train.evaluate import EvalResult, score
from train.outputs import write_json  # noqa: F401  (runs and fuse write their JSON through reports)

REFERENCE_MODEL = "egemaps-svm"
_FOLDS_ID_SCHEMA = {"k?": (int, None), "assignment_sha256?": (str, None)}  # what a row reads of folds.json


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(result: EvalResult, path: Path, title: str) -> None:
    """Row-normalised confusion matrix (recall per true class) with raw counts in the cells."""
    plt = _pyplot()
    counts = np.asarray(result.confusion, dtype=np.float64)
    rows = counts.sum(1, keepdims=True)
    norm = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    fig, ax = plt.subplots(figsize=(5.6, 4.8))
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(result.labels)), result.labels, rotation=45, ha="right")
    ax.set_yticks(range(len(result.labels)), result.labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(result.labels)):
        for j in range(len(result.labels)):
            ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    ax.set_title(f"{title}\nmacro-F1 {result.macro_f1:.3f}, acc {result.accuracy:.3f}, n={result.n}", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true class")
    _save_png(fig, path)


def plot_learning_curves(history: list[dict], path: Path, title: str) -> None:
    """history: one dict per epoch with train_loss, val_loss, val_macro_f1 (val_* None: no validation split)."""
    if not history:
        return
    plt = _pyplot()
    epochs = [h["epoch"] + 1 for h in history]
    fig, (ax_loss, ax_f1) = plt.subplots(1, 2, figsize=(9, 3.4))
    has_val = all(h["val_loss"] is not None for h in history)
    ax_loss.plot(epochs, [h["train_loss"] for h in history], label="train")
    if has_val:
        ax_loss.plot(epochs, [h["val_loss"] for h in history], label="validation")
        ax_f1.plot(epochs, [h["val_macro_f1"] for h in history], color="tab:green")
    else:
        ax_f1.text(0.5, 0.5, "no validation split", ha="center", va="center", transform=ax_f1.transAxes)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_f1.set_xlabel("epoch")
    ax_f1.set_ylabel("validation macro-F1")
    ax_f1.set_ylim(0, 1)
    fig.suptitle(title, fontsize=10)
    _save_png(fig, path)


def _save_png(fig, path: Path) -> None:
    """Lay out, write through a temporary sibling (never a half-written PNG), close."""
    fig.tight_layout()
    try:
        write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        _pyplot().close(fig)


REPORT_BEGIN, REPORT_END = "<!-- report:begin -->", "<!-- report:end -->"


def _fold_dirs(run_dir: Path) -> list[Path]:
    """fold{i}/ folders holding a finished fold's metrics.json, in fold order."""
    found = [d for d in run_dir.glob("fold*") if re.fullmatch(r"fold\d+", d.name) and (d / "metrics.json").is_file()]
    return sorted(found, key=lambda d: int(d.name[4:]))


def _pooled(results: list[EvalResult]) -> EvalResult:
    """Out-of-fold scores: one EvalResult from the summed confusion matrices of the folds."""
    confusion = np.sum([np.asarray(r.confusion, dtype=np.int64) for r in results], axis=0)
    true = np.repeat(np.arange(len(confusion)), confusion.sum(1))
    pred = np.concatenate([np.repeat(np.arange(len(row)), row) for row in confusion])
    return score(true, pred, results[0].labels)


def _args_text(model_args: dict) -> str:
    """' functionals=ComParE_2016' for the architecture arguments a run overrode (not local paths)."""
    return "".join(f" {k}={v}" for k, v in sorted(model_args.items()) if k != "backbone_dir")


def _recipe_text(training: dict) -> str:
    """' epochs=20 patience=5 augment=microphone cached_augment_copies=1 consistency_weight=4.0
    teacher=primary teacher_weight=0.5': where a run left its registry recipe (epochs, patience,
    augmentation preset, cached augmented copies, consistency training, a distillation teacher)."""
    from dataclasses import asdict

    from train.recipes import AUGMENT_PRESETS, augment_preset, recipe_for

    recipe, text = recipe_for(str(training.get("model", ""))), ""
    for key, label in (("epochs", "epochs"), ("patience_epochs", "patience")):
        if key in recipe and key in training and training[key] != recipe[key]:
            text += f" {label}={training[key]}"
    augment = training.get("augment")
    if isinstance(augment, dict):
        preset = next((name for name in AUGMENT_PRESETS
                       if json.loads(json.dumps(asdict(augment_preset(name)))) == augment), "custom")
        text += "" if preset == "seed" else f" augment={preset}"
    if training.get("cached_augment_copies"):
        text += f" cached_augment_copies={training['cached_augment_copies']}"
    if training.get("consistency_weight"):
        text += f" consistency_weight={training['consistency_weight']}"
    if training.get("teacher_weight"):  # knowledge distillation changes the targets, so the row says so
        # a fold bundle records the teacher; cv_metrics.json only the command that named it
        teacher = training.get("teacher") or {}
        found = re.search(r"--teacher[ =](\S+)", str(training.get("command", "")))
        folder = teacher.get("folder") or (found.group(1) if found else "?")
        text += f" teacher={Path(folder).name} teacher_weight={training['teacher_weight']}"
    return text


def _load_run(run_dir: Path) -> dict:
    """Normalise a cv run (finished or partial) or a single run (metrics.json) into one row."""
    cv_file, single_file, folds_file = run_dir / "cv_metrics.json", run_dir / "metrics.json", run_dir / "folds.json"
    fold_dirs = _fold_dirs(run_dir)
    if cv_file.is_file() or fold_dirs:
        cv = read_json(cv_file, CV_METRICS_SCHEMA) if cv_file.is_file() else {}
        folds_info = read_json(folds_file, _FOLDS_ID_SCHEMA) if folds_file.is_file() else {}
        if fold_dirs:
            per_fold = [read_json(d / "metrics.json", FOLD_METRICS_SCHEMA) for d in fold_dirs]
            results = [EvalResult.from_dict(f["eval"]) for f in per_fold]
            f1_values, oof = [r.macro_f1 for r in results], _pooled(results)
            model = per_fold[0]["model"]
            epochs = [(len(f["history"]), f["best_epoch"] + 1) for f in per_fold
                      if f.get("history") and f.get("best_epoch") is not None]
            wall = [f.get("wall_time_s") or 0.0 for f in per_fold]
            from models.bundle import peek_bundle_meta

            training = (peek_bundle_meta(run_dir / fold_dirs[0].name) or {}).get("training") or {}
        else:  # summary only (e.g. a bundle folder that ships cv_metrics.json without its folds)
            if "summary" not in cv or "oof" not in cv:
                raise ValueError(f"{cv_file}: needs \"summary\" and \"oof\" when the run has no fold*/metrics.json")
            f1_values, oof = cv["summary"]["macro_f1"]["values"], EvalResult.from_dict(cv["oof"])
            model, epochs, wall = cv["model"], [], cv.get("fold_wall_time_s") or []
            training = {}
        training = cv.get("training") or training
        f1 = np.array(f1_values, dtype=np.float64)
        k = int(folds_info.get("k") or cv.get("summary", {}).get("folds") or len(f1))
        model_args = training.get("model_args")
        args = _args_text(model_args if isinstance(model_args, dict) else {}) + _recipe_text(training)
        return {"model": model, "args": args, "run": str(run_dir), "done": len(f1),
                "k": k, "f1": float(f1.mean()), "f1_std": float(f1.std()), "oof": oof,
                "epochs": epochs, "wall_s": float(sum(wall)) or None,
                "folds_id": folds_info.get("assignment_sha256")}
    if single_file.is_file():
        d = read_json(single_file, RUN_METRICS_SCHEMA)
        if d.get("eval") is None:
            raise ValueError(f"{run_dir} was trained without a validation split: it has no scores to compare")
        r = EvalResult.from_dict(d["eval"])
        history = d.get("history") or []
        epochs = [(len(history), d["best_epoch"] + 1)] if history and d.get("best_epoch") is not None else []
        return {"model": d["model"], "args": "", "run": str(run_dir), "done": 1, "k": 1, "f1": r.macro_f1,
                "f1_std": 0.0, "oof": r, "epochs": epochs, "wall_s": d.get("wall_time_s"), "folds_id": None}
    raise FileNotFoundError(f"{run_dir} holds neither cv_metrics.json, fold*/metrics.json nor metrics.json "
                            "(not a run folder?)")


def _epochs_cell(epochs: list[tuple[int, int]]) -> str:
    """'40 (30)' per fold: epochs run (best epoch, whose weights were kept); '-' for classical models."""
    return " ".join(f"{ran} ({best})" for ran, best in epochs) if epochs else "-"


def _hours(seconds: float | None) -> str:
    if not seconds:
        return "n/a"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.2f} h"


def comparison_table(run_dirs: list[Path]) -> str:
    """Markdown table, one row per run folder: full CV rows first (best mean macro-F1 first), then
    rows with only some folds finished, marked as such; delta against the full egemaps-svm row."""
    rows = [_load_run(Path(d)) for d in run_dirs]
    rows.sort(key=lambda r: (r["done"] < r["k"], -r["f1"]))
    reference = next((r for r in rows if r["model"] == REFERENCE_MODEL and r["done"] == r["k"]), None)
    labels = list(rows[0]["oof"].labels)
    head = ["system (run folder)", "folds", "macro-F1 mean ± std over folds", f"Δ vs {REFERENCE_MODEL}",
            "OOF macro-F1", "OOF accuracy", "OOF UAR", *[f"OOF F1 {lab}" for lab in labels],
            "epochs run (best) per fold", "train time (sum of folds)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        partial = r["done"] < r["k"]
        if r is reference:
            delta = "reference"
        elif reference is None or partial:
            delta = "n/a"
        else:
            delta = f"{r['f1'] - reference['f1']:+.3f}"
        folds = f"**{r['done']} of {r['k']} (partial)**" if partial else str(r["k"])
        oof = r["oof"]
        per_class = [f"{oof.per_class[lab].f1:.2f}" if lab in oof.per_class else "n/a" for lab in labels]
        spread = f"{r['f1']:.3f} (one fold, no spread)" if r["done"] == 1 else f"{r['f1']:.3f} ± {r['f1_std']:.3f}"
        cells = [f"`{r['model']}`{r['args']} ({Path(r['run']).name})", folds, spread, delta,
                 f"{oof.macro_f1:.3f}", f"{oof.accuracy:.3f}", f"{oof.uar:.3f}", *per_class,
                 _epochs_cell(r["epochs"]), _hours(r["wall_s"])]
        lines.append("| " + " | ".join(cells) + " |")
    notes = []
    if any(r["done"] < r["k"] for r in rows):
        notes.append("Rows marked partial hold only the folds that finished: their mean and out-of-fold (OOF) "
                     "scores cover those folds' test actors only and are not a full cross-validation.")
    if reference is None:
        notes.append(f"No full {REFERENCE_MODEL} run among these folders: no reference row.")
    ids = {r["folds_id"] for r in rows if r["folds_id"]}
    if len(ids) == 1:
        notes.append(f"Every row with a folds.json used the same fold assignment (id {ids.pop()}).")
    elif len(ids) > 1:
        notes.append("Rows used DIFFERENT fold assignments: " + ", ".join(
            f"{Path(r['run']).name} {r['folds_id']}" for r in rows if r["folds_id"]) + ".")
    total = sum(r["wall_s"] or 0.0 for r in rows)
    if total:
        notes.append(f"Train time, all rows: {_hours(total)} (sum of per-fold training; feature extraction "
                     "and data loading not included).")
    return "\n".join(lines) + "\n" + "".join(f"\n{n}\n" for n in notes)


def with_notes_kept(table: str, path: Path) -> str:
    """The text to write to report file `path`: just the table, or, when the file already holds the
    report:begin/end markers, the file with only the text between them replaced, so notes written
    around the table survive a regeneration."""
    path = Path(path)
    old = path.read_text() if path.is_file() else ""
    if REPORT_BEGIN not in old or REPORT_END not in old:
        return table
    before, rest = old.split(REPORT_BEGIN, 1)
    return f"{before}{REPORT_BEGIN}\n{table}{REPORT_END}{rest.split(REPORT_END, 1)[1]}"
