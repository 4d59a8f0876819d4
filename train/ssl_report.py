"""Learned layer weights of wavlm-ultimate runs: which backbone layers each fold's head listens to.

    write_layer_weight_report(run_dir) -> LayerWeightReport | None
        reads fold*/model.safetensors (only the head's `layer_logits`; the backbone is never
        loaded), writes run_dir/layer_weights.png (one line per fold + the mean) and
        run_dir/layer_weights.json. Returns None when the run has no layer weights
        (log-mel models, last-layer pooling).

    python -m train.ssl_report RUN_DIR [RUN_DIR ...]
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

LAYER_LOGITS_KEY = "layer_logits"


@dataclass(frozen=True)
class LayerWeightReport:
    """weights: per member [K, L+1] (index 0 = embedding output); mean: [L+1]."""

    members: list[str]
    weights: list[list[float]]
    mean: list[float]
    plot_path: str
    json_path: str


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


def read_layer_weights(bundle_dir: Path) -> np.ndarray | None:
    """Softmax layer weights [L+1] stored in a bundle's model.safetensors, or None when absent."""
    from safetensors import safe_open

    from models.bundle import WEIGHT_FILES

    weights_file = Path(bundle_dir) / WEIGHT_FILES["torch"]
    if not weights_file.is_file():
        return None
    with safe_open(str(weights_file), framework="np") as handle:
        if LAYER_LOGITS_KEY not in handle.keys():
            return None
        return _softmax(handle.get_tensor(LAYER_LOGITS_KEY).astype(np.float64))


def _members(run_dir: Path) -> list[str]:
    from models.bundle import WEIGHT_FILES, is_ensemble_folder, read_ensemble_meta

    if is_ensemble_folder(run_dir):
        return list(read_ensemble_meta(run_dir)["members"])
    if (run_dir / WEIGHT_FILES["torch"]).is_file():
        return ["."]  # a single-bundle (fit) run
    return sorted(p.name for p in run_dir.glob("fold*") if p.is_dir())


def plot_layer_weights(members: list[str], weights: np.ndarray, path: Path, title: str) -> None:
    """weights [K, L+1] -> line plot, one thin line per member and a thick mean line."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    layers = np.arange(weights.shape[1])
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for name, row in zip(members, weights):
        ax.plot(layers, row, marker="o", linewidth=1, alpha=0.6, label=name if name != "." else "model")
    if len(members) > 1:
        ax.plot(layers, weights.mean(axis=0), color="black", linewidth=2.5, label="mean")
    ax.axhline(1.0 / weights.shape[1], color="grey", linestyle=":", linewidth=1, label="uniform")
    ax.set_xticks(layers, ["emb"] + [str(i) for i in layers[1:]])
    ax.set_xlabel("backbone hidden state (emb = conv/embedding output, then transformer layer)")
    ax.set_ylabel("softmax weight")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_layer_weight_report(run_dir: str | Path) -> LayerWeightReport | None:
    """Plot + JSON of the learned layer weights of every member in a run folder (see module doc)."""
    run_dir = Path(run_dir)
    members, rows = [], []
    for member in _members(run_dir):
        weights = read_layer_weights(run_dir / member)
        if weights is not None:
            members.append(member)
            rows.append(weights)
    if not rows or len({len(r) for r in rows}) != 1:
        return None
    matrix = np.stack(rows)
    plot_path, json_path = run_dir / "layer_weights.png", run_dir / "layer_weights.json"
    plot_layer_weights(members, matrix, plot_path, f"learned layer weights: {run_dir.name}")
    report = LayerWeightReport(members=members, weights=matrix.round(6).tolist(),
                               mean=matrix.mean(axis=0).round(6).tolist(),
                               plot_path=str(plot_path), json_path=str(json_path))
    json_path.write_text(json.dumps(asdict(report), indent=1))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m train.ssl_report",
        description="Plot the learned backbone-layer weights of wavlm-ultimate run folders "
                    "(writes layer_weights.png and layer_weights.json into each folder).")
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="cv or fit run folder")
    ns = parser.parse_args(argv)
    status = 0
    for run in ns.runs:
        if not run.is_dir():
            print(f"error: {run} is not a folder", file=sys.stderr)
            status = 2
            continue
        report = write_layer_weight_report(run)
        if report is None:
            print(f"{run}: no learned layer weights (not a weighted-layer SSL run)")
        else:
            mean = ", ".join(f"{w:.2f}" for w in report.mean)
            print(f"{run}: mean layer weights [{mean}] -> {report.plot_path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
