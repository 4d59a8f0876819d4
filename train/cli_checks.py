"""Checks `python -m train` makes on its command line before any work: numbers finite and in range,
input paths that exist as regular files or folders (a FIFO is never opened), and the output rule
(train/outputs.py) applied to each subcommand's output. Every refusal is one line (ValueError).

    check_numbers(ns)            --epochs, --lr, --batch-size, --gain-db ... finite and in range
    check_inputs(ns)             --data, --manifest, --bundle, --teacher, run folders
    output_mode(ns) -> str       "in-place" (new or own resumable run) or "staged" (--overwrite)
    check_run_files(ns)          folds.json / metrics.json of the runs read, schema-checked up front
"""
from __future__ import annotations

import argparse
import math
import os
import stat
from pathlib import Path

from train.outputs import OutputRefused, check_out, protected

# option -> (lowest, highest, what the unit is); None bounds are open. Floats must also be finite.
_RANGES = {
    "epochs": (1, 100_000, "epochs"), "batch_size": (1, 4096, "clips"), "lr": (1e-12, 10.0, "learning rate"),
    "weight_decay": (0.0, 10.0, ""), "grad_accum_steps": (1, 4096, "batches"), "patience": (0, 100_000, "epochs"),
    "seed": (0, 2**32 - 1, ""), "workers": (0, 256, "processes"), "threads": (1, 4096, "threads"),
    "cached_augment_copies": (0, 1000, "copies"), "consistency_weight": (0.0, 1e6, ""),
    "focal_gamma": (0.0, 100.0, ""), "label_smoothing": (0.0, 0.99, ""), "mixup_alpha": (0.0, 1e3, ""),
    "teacher_weight": (0.0, 1.0, ""), "folds": (2, 10_000, "folds"), "snr_db": (-10.0, 60.0, "dB"),
    "rt60_s": (0.05, 3.0, "s"), "target_accuracy": (0.0, 1.0, ""),
}
_GAIN_DB = (-60.0, 60.0)
_RUN_FILES = ("bundle.json", "ensemble.json", "folds.json", "metrics.json", "cv_metrics.json")


def _option(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _in_range(name: str, value: float, low: float, high: float, unit: str = "") -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}{' ' + unit if unit else ''}, got {value:g}")


def check_numbers(ns: argparse.Namespace) -> None:
    """Every numeric option the subcommand has: finite and in its range (ValueError, one line)."""
    for dest, (low, high, unit) in _RANGES.items():
        value = getattr(ns, dest, None)
        if value is not None:
            _in_range(_option(dest), value, low, high, unit)
    for gain in getattr(ns, "gain_db", None) or ():
        _in_range("--gain-db", gain, *_GAIN_DB, "dB")
    for fold in getattr(ns, "fold", None) or ():
        _in_range("--fold", fold, 0, 9_999)
    if getattr(ns, "val_fraction", None) is not None and not math.isfinite(ns.val_fraction):
        raise ValueError(f"--val-fraction must be a finite number, got {ns.val_fraction}")


def _check_input(path: Path, what: str, folder: bool | None) -> None:
    """`path` must exist as a folder (folder True), a regular file (False) or either (None); never opened."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ValueError(f"{what} does not exist: {path}") from None
    except OSError as exc:
        raise ValueError(f"cannot use {what} {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode) and folder is not False or stat.S_ISREG(mode) and folder is not True:
        return
    expected = {True: "a folder", False: "a regular file", None: "a regular file or a folder"}[folder]
    kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else \
        "a regular file" if stat.S_ISREG(mode) else "a device or socket"
    raise ValueError(f"{what} {path} is {kind}; expected {expected}")


def input_paths(ns: argparse.Namespace) -> list[Path]:
    """Every path the subcommand reads (what its output may never be written over)."""
    paths = list(getattr(ns, "data", None) or [])
    for dest in ("manifest", "teacher", "bundle", "run", "folder"):
        if getattr(ns, dest, None) is not None:
            paths.append(Path(getattr(ns, dest)))
    paths += list(getattr(ns, "runs", None) or [])
    backbone = getattr(ns, "backbone", None)
    if backbone and Path(backbone).exists():
        paths.append(Path(backbone))
    return paths


def check_inputs(ns: argparse.Namespace) -> None:
    """Input paths exist and are what they should be; a FIFO or device is refused before any open."""
    for path in getattr(ns, "data", None) or []:
        _check_input(path, "--data", None)
    if getattr(ns, "manifest", None) is not None:
        _check_input(ns.manifest, "--manifest", False)
    folders = [(getattr(ns, dest), what) for dest, what in (("teacher", "--teacher"), ("bundle", "--bundle"),
               ("run", "RUN_DIR"), ("folder", "FOLDER")) if getattr(ns, dest, None) is not None]
    folders += [(run, "RUN_DIR") for run in getattr(ns, "runs", None) or []]
    for folder, what in folders:
        _check_input(folder, what, True)
        for name in _RUN_FILES:   # a FIFO in their place would block whoever opens it
            for path in (folder / name, *folder.glob(f"fold*/{name}")):
                if os.path.lexists(path):
                    _check_input(path, name, False)
    _check_csv_tables(ns)


def _check_csv_tables(ns: argparse.Namespace) -> None:
    """Every row of a `--dataset csv` table (models.safe_json.csv_row): three columns, and audio
    inside the CSV's folder unless --allow-outside-paths, which lists the files outside."""
    from models.safe_json import csv_row, outside_folder, read_csv_rows
    from train.corpora import parse_dataset_names

    names = parse_dataset_names(ns.dataset) if getattr(ns, "dataset", None) else []
    for name, root in zip(names, getattr(ns, "data", None) or []):
        if name != "csv" or not (root.is_file() or (root / "labels.csv").is_file()):
            continue   # a missing table: the loader says so in its own words
        table = root / "labels.csv" if root.is_dir() else root
        rows = read_csv_rows(table)
        for i, row in enumerate(rows):
            csv_row(row, table, i + 2, allow_outside=ns.allow_outside_paths)
        outside = [row["file"] for row in rows if outside_folder(row["file"], table.parent)]
        if outside:   # only with --allow-outside-paths: csv_row refused them otherwise
            print(f"--allow-outside-paths: {len(outside)} file(s) of {table} are outside its folder: "
                  + ", ".join(outside[:5]) + (", ..." if len(outside) > 5 else ""))


def _holds_trained_model(folder: Path) -> bool:
    """A bundle, an ensemble or a cv run folder (folds.json), or a folder holding one a level down."""
    from models.bundle import holds_model

    return any(holds_model(f) or (f / "folds.json").is_file() for f in (folder, *folder.glob("*/")))


def _is_empty_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def _own_run(ns: argparse.Namespace, out: Path) -> bool:
    """Whether the existing `out` is this command's own run that it may continue."""
    from train.loop import STATE_FILE

    if ns.command == "loco" and (ns.resume or ns.hold_out):
        return (out / "loco.json").is_file() or any(out.glob("holdout-*"))
    if ns.command == "cv" and (ns.resume or ns.fold) and (out / "folds.json").is_file():
        finished = [k for k in ns.fold if (out / f"fold{k}" / "metrics.json").is_file()]
        if finished and not ns.resume:
            raise OutputRefused(f"--fold {finished[0]}: {out / f'fold{finished[0]}'} is already finished; pass "
                                "--resume to reuse it")
        return True
    if ns.command == "fit" and ns.resume:
        return any((out / name).is_file() for name in (STATE_FILE, "bundle.json", "metrics.json"))
    if ns.command == "report":
        from train.reports import REPORT_BEGIN, REPORT_END
        from models.safe_json import InputFileError, read_text

        try:
            text = read_text(out, "--out")
        except InputFileError:
            return False
        return REPORT_BEGIN in text and REPORT_END in text
    return False


def output_mode(ns: argparse.Namespace) -> str:
    """Apply the output rule to the subcommand's output; "in-place" (a new output, or this
    command's own run) or "staged" (an existing output --overwrite replaces once the new one is
    complete). OutputRefused (one line) when the output may not be written."""
    if ns.command in ("set-level", "calibrate"):   # they rewrite the model JSON of the folder they are given
        folder = ns.folder if ns.command == "set-level" else ns.run
        reason = protected(folder)
        if reason and "models/" in reason:
            raise OutputRefused(f"{folder} is never rewritten: {reason}")
        return "in-place"
    if ns.command == "report" and ns.out is None:
        return "in-place"   # the table goes to the terminal only
    out = Path(robustness_out(ns) if ns.command == "robustness" else ns.out)
    # robustness writes its default output into the run it reads; an explicit --out must keep out of it
    inputs = [p for p in input_paths(ns) if not (ns.command == "robustness" and ns.out is None and p == ns.run)]
    if os.path.lexists(out) and _is_empty_folder(out):
        check_out(out, inputs, overwrite=True)
        return "in-place"
    own = os.path.lexists(out) and _own_run(ns, out)
    check_out(out, inputs, overwrite=getattr(ns, "overwrite", False), own_run=own,
              what="RUN_DIR/robustness.json" if ns.command == "robustness" and ns.out is None else "--out")
    if ns.command in ("evaluate", "robustness", "report") and out.is_dir() and _holds_trained_model(out):
        raise OutputRefused(f"--out {out} is never written over: it holds a trained model, and {ns.command} "
                            "writes only scores; pick a new folder")
    return "staged" if os.path.lexists(out) and not own else "in-place"


def robustness_out(ns: argparse.Namespace) -> Path:
    return Path(ns.out) if ns.out is not None else Path(ns.run) / "robustness.json"


def check_run_files(ns: argparse.Namespace) -> None:
    """The files of the cv runs a subcommand reads (fuse, robustness, a --teacher, cv --resume): folds.json, fold
    metrics and every fold model's JSON, parsed by models.safe_json and type-checked before any work
    starts, so a hostile or damaged file is one line naming file and field, never a traceback or a
    failure halfway through (after progress bars, or with an output half made)."""
    from models.bundle import is_ensemble_folder, read_ensemble_meta
    from models.safe_json import CV_METRICS_SCHEMA, FOLD_METRICS_SCHEMA, FOLDS_SCHEMA, read_json

    runs = list(getattr(ns, "runs", None) or []) if ns.command == "fuse" else []
    if ns.command == "robustness":
        runs.append(Path(ns.run))
    if ns.command == "cv" and ns.resume and (Path(ns.out) / "folds.json").is_file():
        for metrics in Path(ns.out).glob("fold*/metrics.json"):   # finished folds are reused from these
            read_json(metrics, FOLD_METRICS_SCHEMA)
    for run in runs:
        if not (run / "folds.json").is_file():
            continue   # the command says what is missing, in its own words
        for k in range(len(read_json(run / "folds.json", FOLDS_SCHEMA)["folds"])):
            fold = run / f"fold{k}"
            if ns.command == "fuse" and (fold / "metrics.json").is_file():
                read_json(fold / "metrics.json", FOLD_METRICS_SCHEMA)
            _check_model_json(fold)
        if ns.command == "fuse" and (run / "cv_metrics.json").is_file():
            read_json(run / "cv_metrics.json", CV_METRICS_SCHEMA)
    teacher = getattr(ns, "teacher", None)
    if teacher is not None and (Path(teacher) / "folds.json").is_file():
        schema = {**FOLDS_SCHEMA, "speaker_fold": {str: int}} if ns.command == "cv" else FOLDS_SCHEMA
        read_json(Path(teacher) / "folds.json", schema)
        read_ensemble_meta(Path(teacher))
    elif teacher is not None and is_ensemble_folder(teacher):
        read_ensemble_meta(Path(teacher))


def _check_model_json(folder: Path) -> None:
    """A fold's bundle JSON, or its ensemble's and each member's (BundleError, one line); a fold
    without a model is left to the command (robustness --partial scores the others)."""
    from models.bundle import is_bundle_folder, is_ensemble_folder, read_bundle_meta, read_ensemble_meta

    if is_ensemble_folder(folder):
        for member in read_ensemble_meta(folder)["members"]:
            read_bundle_meta(folder / member)
    elif is_bundle_folder(folder):
        read_bundle_meta(folder)
