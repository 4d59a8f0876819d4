"""`python -m train calibrate RUN_DIR`: temperature scaling fitted on a CV run's out-of-fold
predictions, written into the run's ensemble and fold models (models/calibration.py has the maths).

`train cv` and `train fuse` write RUN_DIR/oof_predictions.csv: one row per clip with the fold that
held it out and the six probabilities its fold model gave it (6 decimals; ~600 kB for CREMA-D):

    file,speaker,corpus,label,fold,anger,disgust,fear,happy,neutral,sad

Calibrating fits one temperature on all rows for the run's ensemble (what ships) and one per fold
on that fold's rows for fold{k} (a bundle, or an ensemble in a fused run), picks each one's
"uncertain" threshold on the same rows, and writes RUN_DIR/calibration.json with the figures.
An existing calibration is replaced only with --overwrite; a model under the repository's models/
folder never (calibrate the run, then ship it).
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from models.atomic import write_text_atomically
from models.calibration import (TARGET_ACCURACY, Calibration, CalibrationError, calibration_measures,
                                fit_calibration)
from models.labels import EMOTIONS

OOF_FILE = "oof_predictions.csv"
OOF_COLUMNS = ("file", "speaker", "corpus", "label", "fold", *EMOTIONS)
REPORT_FILE = "calibration.json"
REPO_MODELS = Path(__file__).resolve().parent.parent / "models"
_ENSEMBLE_KEYS = ("members", "shared_backbone", "backbone_dir", "name")


class CalibrateError(ValueError):
    """A run that cannot be calibrated, or an unreadable OOF file (one line); nothing was written."""


@dataclass
class OOFPredictions:
    """A run's out-of-fold predictions: N clips, probabilities [N, 6] in EMOTIONS order."""

    files: list[str]
    speakers: list[str]
    corpora: list[str]
    labels: np.ndarray   # [N] class indices
    folds: np.ndarray    # [N] fold that held the clip out
    probs: np.ndarray    # [N, 6] float64


def write_oof_predictions(path: Path, clips: Sequence[Any], folds: np.ndarray, probs: np.ndarray) -> None:
    """Write OOF_FILE rows for clips (train.corpora.Clip: path, speaker, dataset, label), the fold
    index that held each out [N] and its probabilities [N, 6]; atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(OOF_COLUMNS)
    for clip, fold, row in zip(clips, folds, np.asarray(probs, dtype=np.float64)):
        writer.writerow([Path(clip.path).name, clip.speaker, clip.dataset, clip.label, int(fold),
                         *(f"{p:.6f}" for p in row)])
    text = buffer.getvalue()
    write_text_atomically(path, lambda handle: handle.write(text))


def write_scored_oof(path: Path, scored: dict) -> None:
    """OOF_FILE from train.robustness.score_fold_models' result (clean audio, the clips it covered)."""
    covered = scored["covered"]
    write_oof_predictions(path, [scored["clips"][i] for i in covered], scored["fold_of"][covered],
                          scored["probs"]["clean"][covered])


def score_run_oof(run_dir: Path, spec: Any, batch_size: int = 16) -> None:
    """For a run written before OOF files existed: every fold model predicts the test clips folds.json
    gave it (data from `spec`, a train.runs.RunSpec naming the run's datasets) -> RUN_DIR/OOF_FILE.
    The fold models must still be uncalibrated (their raw probabilities are what calibration fits)."""
    from models.bundle import holds_model
    from train.robustness import score_fold_models

    run_dir = Path(run_dir)
    calibrated = [p.name for p in sorted(run_dir.glob("fold*")) if holds_model(p) and stored_calibration(p)]
    if calibrated:
        raise CalibrateError(f"{run_dir}: {', '.join(calibrated)} already calibrated but {OOF_FILE} is missing; "
                             "their raw probabilities are gone, so re-run the cv")
    write_scored_oof(run_dir / OOF_FILE, score_fold_models(run_dir, spec, {"clean": lambda wave, name: wave},
                                                           batch_size))


def read_oof_predictions(path: Path) -> OOFPredictions:
    """Parse OOF_FILE; CalibrateError (one line naming the row) when it is missing or malformed."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CalibrateError(f"cannot read {path}: {err}") from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or tuple(rows[0]) != OOF_COLUMNS:
        raise CalibrateError(f"{path} does not start with the columns {','.join(OOF_COLUMNS)}")
    out = OOFPredictions([], [], [], np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, len(EMOTIONS))))
    labels, folds, probs = [], [], []
    for number, row in enumerate(rows[1:], start=2):
        try:
            if len(row) != len(OOF_COLUMNS):
                raise ValueError(f"{len(row)} fields, not {len(OOF_COLUMNS)}")
            values = [float(v) for v in row[5:]]
            if not all(np.isfinite(values)) or min(values) < 0 or abs(sum(values) - 1.0) > 1e-3:
                raise ValueError("the probabilities are not finite, non-negative and summing to 1")
            labels.append(EMOTIONS.index(row[3]))
            folds.append(int(row[4]))
        except ValueError as err:
            raise CalibrateError(f"{path} line {number}: {err}") from None
        out.files.append(row[0])
        out.speakers.append(row[1])
        out.corpora.append(row[2])
        probs.append(values)
    if not probs:
        raise CalibrateError(f"{path} holds no predictions")
    out.labels, out.folds = np.asarray(labels, np.int64), np.asarray(folds, np.int64)
    out.probs = np.asarray(probs, np.float64)
    out.probs /= out.probs.sum(axis=1, keepdims=True)   # undo the 6-decimal rounding
    return out


def write_run_oof(out: Path, clips: Sequence[Any], folds: Sequence[Any], probs: np.ndarray, say=print) -> bool:
    """After a CV run: OUT/OOF_FILE from every clip's out-of-fold probabilities [N, 6] (NaN rows where a
    fold reused from an older run kept only its predicted classes: then nothing is written). True if written."""
    if np.isnan(probs).any():
        say(f"no {OOF_FILE}: fold(s) reused from an older run kept no probabilities; "
            "`python -m train calibrate` needs them (re-run those folds)")
        return False
    fold_of = np.full(len(clips), -1, dtype=np.int64)
    for fold in folds:
        fold_of[fold.test_idx] = fold.index
    write_oof_predictions(out / OOF_FILE, clips, fold_of, probs)
    return True


# ---------------------------------------------------------------- writing a calibration
def stored_calibration(folder: Path) -> Any:
    """The "calibration" field of the folder's ensemble or bundle JSON as stored (None when absent)."""
    from models.bundle import is_ensemble_folder, peek_bundle_meta, peek_ensemble_meta

    meta = peek_ensemble_meta(folder) if is_ensemble_folder(folder) else peek_bundle_meta(folder)
    return (meta or {}).get("calibration")


def write_calibration(folder: Path, calibration: Calibration) -> None:
    """Store `calibration` in the ensemble's or bundle's JSON (atomically; weights untouched)."""
    from models.bundle import is_ensemble_folder, read_ensemble_meta, save_ensemble, update_bundle_meta

    field = calibration.to_json()
    if is_ensemble_folder(folder):
        doc = read_ensemble_meta(folder)
        extra = {k: v for k, v in doc.items() if k not in (*_ENSEMBLE_KEYS, "format_version", "kind")}
        save_ensemble(folder, doc["members"], bool(doc.get("shared_backbone")), doc.get("backbone_dir"),
                      doc.get("name"), **{**extra, "calibration": field})
    else:
        update_bundle_meta(folder, lambda meta: meta.__setitem__("calibration", field))


def _targets(run_dir: Path, oof: OOFPredictions) -> list[tuple[Path, np.ndarray, str]]:
    """(model folder, row mask, description) to calibrate: the run's ensemble on every row, fold{k} on its rows."""
    from models.bundle import holds_model

    targets = []
    if holds_model(run_dir):
        targets.append((run_dir, np.ones(len(oof.labels), bool), "all out-of-fold clips"))
    for k in sorted(set(oof.folds.tolist())):
        folder = run_dir / f"fold{k}"
        if holds_model(folder):
            targets.append((folder, oof.folds == k, f"fold {k}'s test clips"))
    return targets


def calibrate_run(run_dir: Path, overwrite: bool = False, target_accuracy: float = TARGET_ACCURACY) -> dict:
    """Fit and store the calibrations of a CV run (module docstring); returns the report written
    to RUN_DIR/calibration.json. CalibrateError (one line) before anything is written when the run has no
    OOF predictions, is under models/, or is already calibrated and `overwrite` is False."""
    run_dir = Path(run_dir)
    if not 0.0 < target_accuracy < 1.0:
        raise CalibrateError(f"--target-accuracy must be between 0 and 1, got {target_accuracy:g}")
    resolved = run_dir.resolve()
    if resolved == REPO_MODELS or resolved.is_relative_to(REPO_MODELS):
        raise CalibrateError(f"{run_dir} is a shipped or archived model under models/ and is never rewritten; "
                        "calibrate the CV run it came from, then ship that")
    oof_path = run_dir / OOF_FILE
    if not oof_path.is_file():
        raise CalibrateError(f"{run_dir} has no {OOF_FILE}: run `python -m train cv` (or `fuse`) with this VED, "
                        "which writes the out-of-fold probabilities calibration is fitted on")
    oof = read_oof_predictions(oof_path)
    targets = _targets(run_dir, oof)
    if not targets:
        raise CalibrateError(f"{run_dir} holds neither an ensemble nor fold models to calibrate")
    done = [str(folder) for folder, _, _ in targets if stored_calibration(folder) is not None]
    if done and not overwrite:
        raise CalibrateError(f"already calibrated: {', '.join(done)}; pass --overwrite to refit")
    fitted = []
    for folder, rows, what in targets:
        try:
            fitted.append(fit_calibration(oof.probs[rows], oof.labels[rows], f"{OOF_FILE}: {what}",
                                          target_accuracy))
        except CalibrationError as err:
            raise CalibrateError(f"{folder}: {err}") from None
    for (folder, _, _), calibration in zip(targets, fitted):
        write_calibration(folder, calibration)
    report = {"target_accuracy": target_accuracy, "clips": int(len(oof.labels)),
              "models": {str(folder.relative_to(run_dir)) or ".": c.to_json()
                         for (folder, _, _), c in zip(targets, fitted)}}
    text = json.dumps(report, indent=1)
    write_text_atomically(run_dir / REPORT_FILE, lambda handle: handle.write(text + "\n"))
    print(calibration_lines(report["models"]))
    return report


def calibration_lines(models: dict[str, dict]) -> str:
    """One line per calibrated model: T, ECE, Brier and NLL before -> after, the threshold."""
    lines = []
    for name, c in models.items():
        threshold = "none (accuracy never reaches the target)" if c.get("uncertain_below") is None \
            else f"{c['uncertain_below']:.3f}"
        lines.append(f"{name}: T {c['temperature']:.3f}; ECE {c['ece_before']:.3f} -> {c['ece_after']:.3f}, "
                     f"Brier {c['brier_before']:.3f} -> {c['brier_after']:.3f}, NLL {c['nll_before']:.3f} -> "
                     f"{c['nll_after']:.3f} on {c['clips']} clips; uncertain below {threshold}")
    return "\n".join(lines)


# ---------------------------------------------------------------- evaluate / report
def calibration_summary(raw_probs: np.ndarray, labels: np.ndarray, calibration: Calibration | None) -> dict:
    """ECE (15 bins, top label), Brier and NLL of a model's raw probabilities and, when it has a
    calibration, of the calibrated ones: {"before": {...}, "after": {...} | None, "temperature"}."""
    before = calibration_measures(raw_probs, labels)
    after = calibration_measures(calibration.apply(raw_probs), labels) if calibration is not None else None
    return {"before": before, "after": after,
            "temperature": None if calibration is None else calibration.temperature}


def summary_line(summary: dict) -> str:
    before, after = summary["before"], summary["after"]
    if after is None:
        return (f"uncalibrated: ECE {before['ece']:.3f}, Brier {before['brier']:.3f}, NLL {before['nll']:.3f} "
                "(no calibration in the bundle; see `python -m train calibrate`)")
    return (f"calibration (T {summary['temperature']:.3f}): ECE {before['ece']:.3f} -> {after['ece']:.3f}, "
            f"Brier {before['brier']:.3f} -> {after['brier']:.3f}, NLL {before['nll']:.3f} -> {after['nll']:.3f}")


def runs_calibration_table(run_dirs: Sequence[Path]) -> str:
    """Markdown rows of out-of-fold ECE / Brier before and after calibration, for the runs that have
    OOF predictions ('' when none has); after is blank for a run not calibrated yet."""
    rows = []
    for run in map(Path, run_dirs):
        if not (run / OOF_FILE).is_file():
            continue
        oof = read_oof_predictions(run / OOF_FILE)
        try:
            calibration = Calibration.from_json(stored_calibration(run))
        except CalibrationError:
            calibration = None
        s = calibration_summary(oof.probs, oof.labels, calibration)
        after = s["after"]
        rows.append(f"| {run.name} | {len(oof.labels)} | {s['before']['ece']:.3f} | "
                    f"{'' if after is None else format(after['ece'], '.3f')} | {s['before']['brier']:.3f} | "
                    f"{'' if after is None else format(after['brier'], '.3f')} | "
                    f"{'' if calibration is None else format(calibration.temperature, '.3f')} |")
    if not rows:
        return ""
    return "\n".join(["Out-of-fold calibration (ECE: 15 equal-width bins, top label; Brier: 6-class):", "",
                      "| run | clips | ECE before | ECE after | Brier before | Brier after | T |",
                      "|---|---|---|---|---|---|---|", *rows])


def calibrate_command(ns: Any) -> int:
    """`python -m train calibrate RUN_DIR [--overwrite] [--target-accuracy A]` -> exit code (2 with one
    `error:` line when the run cannot be calibrated; nothing is written then)."""
    import sys

    from models.bundle import BundleError

    try:
        if not (Path(ns.run) / OOF_FILE).is_file() and ns.dataset:
            from train.corpora import parse_dataset_names
            from train.loop import TrainConfig
            from train.runs import RunSpec

            print(f"{ns.run} has no {OOF_FILE}: scoring its fold models on their test clips first", flush=True)
            if ns.threads:
                import torch

                torch.set_num_threads(ns.threads)
            spec = RunSpec(parse_dataset_names(ns.dataset), list(ns.data), "bundle", Path(ns.run),
                           TrainConfig(device=ns.torch_device), manifest=ns.manifest,
                           calm_as_neutral=ns.calm_as_neutral)
            score_run_oof(ns.run, spec, ns.batch_size)
        calibrate_run(ns.run, overwrite=ns.overwrite, target_accuracy=ns.target_accuracy)
    except (CalibrateError, BundleError, OSError, ValueError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(f"calibration written into {ns.run} (figures in {Path(ns.run) / REPORT_FILE})")
    return 0


def add_calibrate_parser(sub: Any, data_options: Any) -> None:
    """The `calibrate` subcommand's arguments (train/cli.py; `data_options(parser, required)` adds
    --dataset/--data/--manifest/--torch-device like the other subcommands')."""
    cal = sub.add_parser("calibrate", help="fit temperature scaling on a cv or fuse run's out-of-fold "
                                           f"probabilities ({OOF_FILE}) and store it in the run's ensemble and "
                                           "fold models, with each one's 'uncertain' threshold")
    cal.add_argument("run", type=Path, metavar="RUN_DIR", help="a finished `python -m train cv` or `fuse` run folder "
                     "(not under models/: calibrate the run, then ship it)")
    cal.add_argument("--target-accuracy", type=float, default=TARGET_ACCURACY, metavar="A",
                     help="the 'uncertain' threshold is the lowest calibrated top probability at which the "
                          f"out-of-fold predictions at or above it are right this often (0..1; default "
                          f"{TARGET_ACCURACY})")
    cal.add_argument("--overwrite", action="store_true", help="refit a run that is already calibrated")
    cal.add_argument("--batch-size", type=int, default=16, metavar="N", help="clips per prediction call when "
                     f"scoring fold models (only for a run without {OOF_FILE})")
    data_options(cal, required=False)
    cal.epilog = (f"A run written before {OOF_FILE} existed: pass the run's --dataset/--data (and --manifest) and "
                  "its fold models first predict their own test clips (folds.json) to write it.")
