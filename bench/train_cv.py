"""Benchmark: wall time of the default model's full speaker-independent CV on the shared copy of the
corpus it was trained on (EmoDB, or CREMA-D with its manifest and the table's five folds).

The recipe is the exact command recorded in the models/default bundle (`training.command`), run
as `python -m train cv` instead of `fit`, in a fresh scratch folder with an empty feature cache
(so functionals extraction or the frozen encoder's pass is included), on the benchmark's thread
count. Target: <= 15 minutes on the 2-core CPU. The CV macro-F1 is reported beside the time so a
faster recipe cannot hide a worse model.

    python -m bench.train_cv [--epochs N] [--threads 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.report import finish_cli, markdown_table

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUNDLE = REPO_ROOT / "models" / "default"
# Options of the recorded `fit` command that the benchmark replaces with its own values.
REPLACED = {"--out", "--cache-dir", "--threads", "--data", "--manifest", "--resume"}
# Per corpus: its audio folder and manifest (None: none) in the shared data folder, and the CV's
# fold count (CREMA-D: the table's 5 folds; None: the cv default).
SHARED_COPY = {"emodb": ("emodb", None, None),
               "crema-d": ("crema-d/AudioFLAC", "crema-d/flac_manifest.csv", 5)}


def recorded_command(bundle_dir: Path = DEFAULT_BUNDLE) -> list[str]:
    """The `python -m train fit ...` command a bundle (the default one) was trained with, as argv."""
    from models.bundle import peek_bundle_meta

    try:
        command = (peek_bundle_meta(bundle_dir) or {})["training"]["command"]
    except (KeyError, TypeError) as exc:
        raise FileNotFoundError(f"the bundle in {bundle_dir} records no training command ({exc})") from None
    argv = shlex.split(command)
    if argv[:4] != ["python", "-m", "train", "fit"]:
        raise ValueError(f"expected a 'python -m train fit' command in the bundle in {bundle_dir}, got {command!r}")
    return argv[4:]


def cv_argv(fit_args: list[str], data_dir: Path, out: Path, cache: Path, threads: int,
            epochs: int | None = None) -> list[str]:
    """The recorded fit options turned into a `train cv` run on the shared copy in `data_dir` of the
    recorded corpus, in scratch folders."""
    dataset = fit_args[fit_args.index("--dataset") + 1] if "--dataset" in fit_args else "emodb"
    if dataset not in SHARED_COPY:
        raise ValueError(f"the default was trained on {dataset!r}; this benchmark knows the shared copies of "
                         f"{', '.join(SHARED_COPY)}")
    folder, manifest, folds = SHARED_COPY[dataset]
    extra = (["--manifest", str(data_dir / manifest)] if manifest else []) + (["--folds", str(folds)] if folds else [])
    kept, skip_value = [], False
    for arg in fit_args:
        if skip_value:
            skip_value = False
            continue
        if arg in REPLACED:
            skip_value = arg != "--resume"
            continue
        kept.append(arg)
    if epochs is not None:
        kept += ["--epochs", str(epochs)]   # argparse keeps the last value
    return [sys.executable, "-m", "train", "cv", *kept, *extra, "--data", str(data_dir / folder), "--out", str(out),
            "--cache-dir", str(cache), "--threads", str(threads)]


def run(data_dir: Path, threads: int = 2, epochs: int | None = None, timeout_s: float = 4 * 3600.0) -> dict:
    """Run the CV in a subprocess; returns wall time, folds and macro-F1 (mean ± std, out-of-fold)."""
    with tempfile.TemporaryDirectory(prefix="ved-bench-cv-") as tmp:
        out = Path(tmp) / "run"
        argv = cv_argv(recorded_command(), data_dir, out, Path(tmp) / "cache", threads, epochs)
        started = time.monotonic()
        done = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s)
        wall_s = time.monotonic() - started
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"train cv exited {done.returncode}: {last}")
        metrics = json.loads((out / "cv_metrics.json").read_text())
    summary = metrics["summary"]["macro_f1"]
    return {"command": " ".join(["python", *argv[1:]]).replace(str(REPO_ROOT) + "/", ""),
            "epochs_override": epochs, "folds": len(metrics["fold_wall_time_s"]),
            "wall_minutes": round(wall_s / 60.0, 2),
            "fold_minutes": [round(s / 60.0, 2) for s in metrics["fold_wall_time_s"]],
            "macro_f1_mean": round(summary["mean"], 4), "macro_f1_std": round(summary["std"], 4),
            "oof_macro_f1": round(metrics["oof"]["macro_f1"], 4)}


def table(result: dict) -> str:
    return markdown_table(("measure", "value"), list(result.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.train_cv", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data",
                        help="folder holding emodb/ and crema-d/ (default ../shared/data)")
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs (quick, indicative runs)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    return finish_cli(lambda: run(args.data, args.threads, args.epochs), table, args.json,
                      errors=(FileNotFoundError, ValueError, RuntimeError), indent=1)


if __name__ == "__main__":
    sys.exit(main())
