"""Run reports: confusion-matrix and learning-curve PNGs, metrics JSON, and a markdown table
comparing several run folders (the egemaps-svm row is the reference)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from train.evaluate import EvalResult

REFERENCE_MODEL = "egemaps-svm"


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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_json(path: Path, payload: dict) -> None:
    Path(path).write_text(json.dumps(payload, indent=1, sort_keys=False))


def _load_run(run_dir: Path) -> dict:
    """Normalise a cv run (cv_metrics.json) or a single run (metrics.json) into one row."""
    cv_file, single_file = run_dir / "cv_metrics.json", run_dir / "metrics.json"
    if cv_file.is_file():
        d = json.loads(cv_file.read_text())
        s = d["summary"]
        return {"system": d["model"], "run": str(run_dir), "folds": s["folds"],
                "f1": s["macro_f1"]["mean"], "f1_std": s["macro_f1"]["std"],
                "acc": s["accuracy"]["mean"], "uar": s["uar"]["mean"],
                "per_class": {k: v["mean"] for k, v in s["per_class_f1"].items()},
                "wall_s": sum(d.get("fold_wall_time_s") or []) or None}
    if single_file.is_file():
        d = json.loads(single_file.read_text())
        if d.get("eval") is None:
            raise ValueError(f"{run_dir} was trained without a validation split: it has no scores to compare")
        r = EvalResult.from_dict(d["eval"])
        return {"system": d["model"], "run": str(run_dir), "folds": 1, "f1": r.macro_f1, "f1_std": 0.0,
                "acc": r.accuracy, "uar": r.uar, "per_class": {k: v.f1 for k, v in r.per_class.items()},
                "wall_s": d.get("wall_time_s")}
    raise FileNotFoundError(f"{run_dir} holds neither cv_metrics.json nor metrics.json (not a run folder?)")


def comparison_table(run_dirs: list[Path]) -> str:
    """Markdown table, one row per system, best macro-F1 first; delta against the egemaps-svm row."""
    rows = sorted((_load_run(Path(d)) for d in run_dirs), key=lambda r: -r["f1"])
    reference = next((r for r in rows if r["system"] == REFERENCE_MODEL), None)
    labels = list(rows[0]["per_class"])
    head = ["system (run folder)", "folds", "macro-F1 (mean ± std)", f"Δ vs {REFERENCE_MODEL}", "accuracy", "UAR",
            *[f"F1 {lab}" for lab in labels], "train time (sum of folds)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        delta = "reference" if r is reference else (f"{r['f1'] - reference['f1']:+.3f}" if reference else "n/a")
        wall = f"{r['wall_s'] / 60:.1f} min" if r.get("wall_s") else "n/a"
        cells = [f"`{r['system']}` ({Path(r['run']).name})", str(r["folds"]), f"{r['f1']:.3f} ± {r['f1_std']:.3f}", delta,
                 f"{r['acc']:.3f}", f"{r['uar']:.3f}", *[f"{r['per_class'][lab]:.2f}" for lab in labels], wall]
        lines.append("| " + " | ".join(cells) + " |")
    if reference is None:
        lines.append(f"\n(no {REFERENCE_MODEL} run among these folders: no reference row)")
    return "\n".join(lines) + "\n"
