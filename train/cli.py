"""Command line of `python -m train fit|cv|evaluate|robustness|fuse|set-level|report`.

User mistakes (wrong folder, unknown model, bad option value, hostile input file) print one clear
line and exit 2; Ctrl-C during training saves the resumable state and exits 130 with a resume hint.
No output is written over unless asked (train/outputs.py, checked before any work by train/cli_checks.py).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from models.bundle import BUNDLE_JSON, ENSEMBLE_JSON
from train.calibrate import add_calibrate_parser, calibrate_command, runs_calibration_table
from train.corpora import DATASET_NAMES, DataError, parse_dataset_names


class _OneLineErrorParser(argparse.ArgumentParser):
    """A bad option is one `error: ...` line and exit 2 (subcommand parsers inherit the class)."""

    def error(self, message: str):
        self.exit(2, f"error: {' '.join(message.split())} (see `{self.prog} --help`)\n")


class _DeprecatedAlias(argparse.Action):
    """An old option spelling: works as before, with a warning naming the new one."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"warning: {option_string} is deprecated in python -m train; use --torch-device "
              "(in main.py, --device picks the microphone)", file=sys.stderr)
        setattr(namespace, self.dest, values)

EPILOG = """examples:
  python -m train cv  --dataset emodb --data ../shared/data/emodb --model conformer-v3.1 --folds 4 --out runs/conf
  python -m train fit --dataset crema-d --data CREMA-D/AudioWAV --manifest audio_manifest.csv \\
                      --model conformer-v3.1 --out runs/crema_fit
  python -m train evaluate --bundle models/default --dataset ravdess --data ../shared/data/ravdess --out runs/eval
  python -m train report runs/svm runs/conf --out runs/report.md
multi-GPU / multi-process: torchrun --nproc_per_node 2 -m train fit ...  (only rank 0 writes)"""


def _data_options(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", action="append", type=Path, required=required, metavar="DIR",
                   help="dataset folder (repeat once per --dataset, same order); csv: the CSV file or its folder")
    g.add_argument("--dataset", action="append", required=required, metavar="NAME",
                   help=f"one of {', '.join(DATASET_NAMES)}; repeat or join with ',' or '+' to combine "
                        "(e.g. emodb+ravdess with two --data folders)")
    g.add_argument("--manifest", type=Path, metavar="CSV",
                   help="crema-d only: audio_manifest.csv (official AudioWAV: file sizes and sha256) or "
                        "flac_manifest.csv (AudioFLAC or AudioWAV: sha256 of the decoded int16 samples); clips that "
                        "do not match are skipped with one line each, listed-but-absent files are reported")
    g.add_argument("--allow-outside-paths", action="store_true",
                   help="csv: accept audio files outside the CSV's folder (absolute or ../ paths; listed when "
                        "used); refused otherwise")
    g.add_argument("--calm-as-neutral", action="store_true",
                   help="count calm as neutral (RAVDESS calm, csv label 'calm'); otherwise RAVDESS calm is dropped "
                        "and a csv 'calm' label has no class (skipped; an error for evaluate)")
    g.add_argument("--torch-device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="torch device to compute on; auto = cuda when available (default auto)")
    g.add_argument("--device", dest="torch_device", choices=("auto", "cpu", "cuda"), action=_DeprecatedAlias,
                   help=argparse.SUPPRESS)  # the old spelling; main.py --device picks a microphone
    g.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for torch per process (default: CPU cores / processes)")


def _train_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", required=True, metavar="NAME", help="registry name, e.g. conformer-v3.1, cnn, "
                   "doublestream-v4, egemaps-svm, wavlm-ultimate (unknown names list the choices)")
    g.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="architecture argument passed to build_model; VALUE is JSON (3, 0.2, true, \"x\"), "
                        "plain text otherwise; repeatable")
    g.add_argument("--backbone", "--backbone-dir", dest="backbone", metavar="DIR|HUB_ID",
                   help="pretrained WavLM/Wav2Vec2 (model arg backbone_dir): a local folder, or a hub id such as "
                        "microsoft/wavlm-base-plus read from the Hugging Face cache (downloaded once when online "
                        "and HF_HUB_OFFLINE is unset); --backbone-dir is the same option")
    t = p.add_argument_group("training (unset options take the model's recipe from train/recipes.py)")
    t.add_argument("--loss", choices=("ce", "focal"), help="cross-entropy or focal loss (class-weighted)")
    t.add_argument("--focal-gamma", type=float, metavar="G", help="focal loss exponent (0 = cross-entropy)")
    t.add_argument("--label-smoothing", type=float, metavar="EPS", help="label smoothing, 0..1 (e.g. 0.05)")
    t.add_argument("--mixup-alpha", type=float, metavar="A", help="Mixup Beta(A, A) parameter; 0 = off")
    t.add_argument("--augment", choices=("seed", "microphone", "off"), default="seed",
                   help="waveform augmentation: seed = the research recipe (gain +-6 dB, white noise 10-30 dB SNR, "
                        "shift, speed); microphone = live-capture robustness (gain +-12 dB, white/pink/brown noise "
                        "5-30 dB SNR, room reverb RT60 0.2-0.8 s, band limiting); off (default seed)")
    t.add_argument("--no-augment", dest="augment", action="store_const", const="off",
                   help="same as --augment off")
    t.add_argument("--cached-augment-copies", type=int, metavar="N",
                   help="frozen-encoder models with --cache-dir: also cache N augmented copies (--augment) of each "
                        "training clip's encoder states; each epoch draws the clean clip or one copy (default 0)")
    t.add_argument("--consistency-weight", type=float, metavar="W",
                   help="with --cached-augment-copies: score every training clip clean and as one copy in each "
                        "step and add W times the Jensen-Shannon divergence (nats) of the two predictions, so the "
                        "head predicts the same on noisy audio (default 0 = off)")
    t.add_argument("--no-spec-augment", action="store_true", help="switch SpecAugment off (log-mel models)")
    t.add_argument("--balance", choices=("auto", "on", "off"), default="auto",
                   help="draw each epoch's clips so every corpus, and every class within a corpus, weighs the "
                        "same (with replacement; the loss then has no class weights); auto = on when several "
                        "--dataset corpora are pooled (default auto)")
    t.add_argument("--speaker-baseline", default="off", metavar="off|all|N",
                   help="frozen-encoder models with --cache-dir: z-score each clip's encoder states with its "
                        "speaker's running statistics over that speaker's clips so far (in file order), as the "
                        "monitor does over a session; N: stop updating after N utterances; all: never stop "
                        "(default off)")
    t.add_argument("--teacher", type=Path, metavar="DIR",
                   help="knowledge distillation: blend this trained model's probabilities into every training "
                        "target. cv: a cv run on the same folds (its fold-k members teach fold k; its folds.json must "
                        "put each test speaker in the same fold), e.g. models/primary; fit: any model folder. "
                        "Its probabilities are cached in --cache-dir")
    t.add_argument("--teacher-weight", type=float, metavar="W",
                   help="share of each training target that is the teacher's probabilities, 0-1 "
                        "(default 0.5 with --teacher)")
    t.add_argument("--epochs", type=int, metavar="N", help="maximum training epochs")
    t.add_argument("--batch-size", type=int, metavar="N", help="clips per batch (per process)")
    t.add_argument("--lr", type=float, metavar="LR", help="peak AdamW learning rate (warmup, then cosine decay)")
    t.add_argument("--weight-decay", type=float, metavar="WD", help="AdamW decoupled weight decay")
    t.add_argument("--grad-accum-steps", type=int, metavar="N", help="batches per optimizer step")
    t.add_argument("--patience", type=int, metavar="EPOCHS",
                   help="early stopping: epochs without a better validation macro-F1")
    t.add_argument("--val-fraction", type=float, default=0.2, metavar="F",
                   help="share of training speakers held out for early stopping (default 0.2, at least 1 speaker); "
                        "0 = no validation split: train on every training speaker for --epochs epochs and keep "
                        "the final weights (no early stopping)")
    t.add_argument("--seed", type=int, default=0, help="seed for folds, splits, augmentation and init (default 0)")
    t.add_argument("--workers", type=int, metavar="N", help="data-loader worker processes (default 0 = in-process)")
    t.add_argument("--cache-dir", type=Path, metavar="DIR",
                   help="cache folder: eGeMAPS functionals per file, and for frozen-backbone models the frontend "
                        "features (fp16) so only the head trains")
    t.add_argument("--out", type=Path, required=True, metavar="RUN_DIR",
                   help="run folder to write; an existing one is refused unless --resume (its own run) or --overwrite")
    t.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in RUN_DIR (finished folds are reused)")
    _overwrite_option(t)


def _overwrite_option(p) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out once the new output is complete (never a session timeline, "
                        "anything under models/, or an input of this command)")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrorParser(prog="python -m train", description="Train and evaluate VED emotion models.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="train one model on all data, write one bundle")
    cv = sub.add_parser("cv", help=f"speaker-grouped K-fold cross-validation, one bundle per fold + {ENSEMBLE_JSON}")
    loco = sub.add_parser("loco", help="leave one corpus out: for each --dataset corpus, train on the others "
                                       "and score it; writes RUN_DIR/holdout-NAME/ and loco.json")
    for p in (fit, cv, loco):
        _data_options(p)
        _train_options(p)
    loco.add_argument("--hold-out", action="append", default=[], metavar="NAME",
                      help="only this held-out corpus (repeatable), so corpora can run as parallel jobs; "
                           "default: each --dataset corpus in turn")
    cv.add_argument("--folds", type=int, default=4, metavar="K", help="number of speaker-grouped folds (default 4)")
    cv.add_argument("--fold", type=int, action="append", default=[], metavar="I",
                    help="train only fold I (0-based, repeatable) so folds can run as parallel jobs; "
                         "afterwards run the command again with --resume and without --fold to collect them")
    ev = sub.add_parser("evaluate", help="score a trained bundle or ensemble folder on a dataset")
    ev.add_argument("--bundle", type=Path, required=True, metavar="DIR", help="bundle or ensemble folder")
    _data_options(ev)
    ev.add_argument("--out", type=Path, required=True, metavar="DIR", help="new folder for metrics.json/confusion.png")
    ev.add_argument("--batch-size", type=int, default=16, metavar="N", help="clips per prediction call")
    _overwrite_option(ev)
    rob = sub.add_parser("robustness", help="score a finished cv run's fold bundles on clean and corrupted "
                                            "test audio (noise + room reverb); writes RUN_DIR/robustness.json")
    rob.add_argument("run", type=Path, metavar="RUN_DIR", help="a finished `python -m train cv` run folder")
    _data_options(rob)
    rob.add_argument("--snr-db", type=float, default=10.0, metavar="DB",
                     help="signal-to-noise ratio of the added noise, in dB (default 10)")
    rob.add_argument("--rt60-s", type=float, default=0.5, metavar="S",
                     help="reverberation time of the simulated room, in seconds (default 0.5)")
    rob.add_argument("--noise", choices=("white", "pink", "brown"), default="pink",
                     help="noise colour (default pink, close to room and fan noise)")
    rob.add_argument("--gain-db", type=float, nargs="+", default=[], metavar="DB",
                     help="also score the clean test clips at these microphone gains, in dB (e.g. -12 12; "
                          "clipped at full scale)")
    rob.add_argument("--batch-size", type=int, default=16, metavar="N", help="clips per prediction call")
    rob.add_argument("--partial", action="store_true",
                     help="score only the folds that have finished; robustness.json names them (folds_scored)")
    rob.add_argument("--out", type=Path, metavar="FILE",
                     help="where to write the scores (default RUN_DIR/robustness.json; a run under models/ needs "
                          "another place)")
    _overwrite_option(rob)
    fuse = sub.add_parser("fuse", help="fuse finished cv runs on the same folds (e.g. heads on two encoders) "
                                       "into one cv run: fold k averages every run's fold-k model")
    fuse.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="finished `python -m train cv` runs")
    _data_options(fuse)
    fuse.add_argument("--out", type=Path, required=True, metavar="DIR",
                      help=f"fused run folder to write (fold ensembles, {ENSEMBLE_JSON}, cv_metrics.json)")
    fuse.add_argument("--name", metavar="NAME", help="ensemble name shown in the monitor (default fusion-RUN+RUN)")
    fuse.add_argument("--batch-size", type=int, default=16, metavar="N", help="clips per prediction call")
    _overwrite_option(fuse)
    lev = sub.add_parser("set-level", help="switch input-level normalisation of trained log-mel models on or off "
                                           f"({BUNDLE_JSON} only; weights untouched)")
    lev.add_argument("folder", type=Path, metavar="FOLDER", help="a bundle, ensemble or cv run folder (not under "
                     f"models/: copy it out first); every {BUNDLE_JSON} under it is checked, then all are rewritten")
    lev.add_argument("--level-dbfs", metavar="DB|off",
                     help="input level in dB re full scale (mean power of each clip's frames within 20 dB of its "
                          "loudest; a full-scale sine is -3 dB), or 'off'; default: the median level of the "
                          "clips given with --data/--dataset")
    _data_options(lev, required=False)
    add_calibrate_parser(sub, _data_options)
    rep = sub.add_parser("report", help="markdown table comparing run folders (egemaps-svm row = reference)")
    rep.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR",
                     help="cv or fit run folders; a cv run with only some folds finished is a row marked partial")
    rep.add_argument("--out", type=Path, metavar="FILE",
                     help="also write the table to this markdown file; if the file has <!-- report:begin --> and "
                          "<!-- report:end --> lines, only the text between them is replaced; any other existing "
                          "file needs --overwrite")
    _overwrite_option(rep)
    return parser


def parse_model_args(pairs: list[str], backbone: str | None) -> dict[str, Any]:
    """['dropout=0.2', 'pooling=mean'] -> {'dropout': 0.2, 'pooling': 'mean'}.

    backbone: a folder or hub id (--backbone), resolved to a checked local folder (backbone_dir)."""
    args: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--model-arg needs KEY=VALUE, got {pair!r}")
        try:
            args[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            args[key.strip()] = value
    if backbone is not None:
        from models.hub import resolve_backbone

        args["backbone_dir"] = str(resolve_backbone(backbone))
    return args


def spec_from_args(ns: argparse.Namespace):
    """Namespace of fit/cv -> RunSpec (recipe + overrides)."""
    from models.registry import get_spec
    from train.recipes import build_train_config
    from train.runs import RunSpec

    get_spec(ns.model)
    overrides = {
        "epochs": ns.epochs, "batch_size": ns.batch_size, "lr": ns.lr, "weight_decay": ns.weight_decay,
        "grad_accum_steps": ns.grad_accum_steps, "patience_epochs": ns.patience, "seed": ns.seed,
        "mixup_alpha": ns.mixup_alpha, "device": ns.torch_device, "workers": ns.workers, "loss": ns.loss,
        "focal_gamma": ns.focal_gamma, "label_smoothing": ns.label_smoothing,
        "spec_augment": False if ns.no_spec_augment else None,
        "cached_augment_copies": ns.cached_augment_copies, "teacher_weight": _teacher_weight(ns),
        "consistency_weight": ns.consistency_weight,
        "balanced_sampling": ns.balance == "on" or (ns.balance == "auto" and len(parse_dataset_names(ns.dataset)) > 1),
        "speaker_baseline": _speaker_baseline(ns.speaker_baseline),
    }
    cfg = build_train_config(ns.model, overrides, augment=ns.augment)
    if not 0 <= ns.val_fraction < 1:
        raise ValueError(f"--val-fraction must be at least 0 and below 1, got {ns.val_fraction}")
    names = parse_dataset_names(ns.dataset)
    return RunSpec(datasets=names, data_dirs=list(ns.data), model=ns.model, out_dir=ns.out, train=cfg,
                   model_args=parse_model_args(ns.model_arg, ns.backbone), manifest=ns.manifest,
                   calm_as_neutral=ns.calm_as_neutral,
                   folds=getattr(ns, "folds", 4), only_folds=tuple(getattr(ns, "fold", ())),
                   val_fraction=ns.val_fraction, resume=ns.resume,
                   cache_dir=ns.cache_dir, command="python -m train " + shlex.join(sys.argv[1:]),
                   teacher_dir=ns.teacher)


def _speaker_baseline(value: str):
    """--speaker-baseline off|all|N -> None or models.baseline.BaselineConfig."""
    from models.baseline import BaselineConfig

    if value == "off":
        return None
    if value == "all":
        return BaselineConfig()
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"--speaker-baseline must be off, all or a whole number of utterances >= 1, got {value!r}")
    return BaselineConfig(max_utterances=int(value))


def _teacher_weight(ns: argparse.Namespace) -> float | None:
    """--teacher-weight, 0.5 when only --teacher is given; an error for a weight without a teacher
    or a teacher for a model that does not train on targets (the SVM and logistic regression)."""
    from train.runs import fits_on_functionals

    if ns.teacher is None:
        if ns.teacher_weight is not None:
            raise ValueError("--teacher-weight needs --teacher DIR")
        return None
    if fits_on_functionals(ns.model):
        raise ValueError(f"--teacher: {ns.model} is fitted on hard labels only; distil into a neural model")
    if not ns.teacher.is_dir():
        raise ValueError(f"--teacher folder not found: {ns.teacher}")
    return 0.5 if ns.teacher_weight is None else ns.teacher_weight


def run_set_level(ns: argparse.Namespace, argv: list[str]) -> None:
    """`set-level`: the level from --level-dbfs, else measured on --data; then rewrite the bundles."""
    from train.level import level_bundles, median_level_db, set_level

    level_bundles(ns.folder)  # a wrong folder fails before any audio is decoded
    if ns.level_dbfs is not None:
        if ns.data:
            raise ValueError("give --level-dbfs or --data/--dataset to measure it, not both")
        level = None if ns.level_dbfs == "off" else _float_arg("--level-dbfs", ns.level_dbfs)
    else:
        if not ns.data or not ns.dataset:
            raise ValueError("give --level-dbfs DB (or off), or --data and --dataset to measure the median level")
        from train.loop import TrainConfig
        from train.runs import RunSpec, load_run_data

        spec = RunSpec(parse_dataset_names(ns.dataset), list(ns.data), "bundle", ns.folder, TrainConfig(),
                       manifest=ns.manifest, calm_as_neutral=ns.calm_as_neutral)
        level = round(median_level_db(load_run_data(spec, None).data.waves), 1)
        print(f"median input level of the clips: {level} dB re full scale")
    paths = set_level(ns.folder, level, "python -m train " + shlex.join(argv))
    state = "off" if level is None else f"{level} dB re full scale"
    print(f"input-level normalisation {state} in {len(paths)} bundle(s) under {ns.folder}")


def _float_arg(name: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number or 'off', got {value!r}") from None


def _set_threads(requested: int | None) -> None:
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    torch.set_num_threads(requested or max(1, (os.cpu_count() or 1) // world))


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    from models.bundle import BundleError
    from models.registry import UnknownModelError
    from train.distributed import shutdown
    from train.loop import TrainingInterrupted

    mode = "in-place"
    try:
        from train.cli_checks import check_inputs, check_numbers, check_run_files, output_mode

        check_numbers(ns)
        check_inputs(ns)
        mode = output_mode(ns)
        check_run_files(ns)
        if ns.command == "calibrate":   # it rewrites its own run's model JSON: no --out; refuses a calibrated run
            return calibrate_command(ns)
        if ns.command == "report":
            from train.outputs import write_text
            from train.reports import comparison_table, with_notes_kept

            table = comparison_table(ns.runs)
            calibration = runs_calibration_table(ns.runs)   # ECE / Brier before and after, out-of-fold
            table += f"\n\n{calibration}\n" if calibration else ""
            print(table)
            if ns.out:
                write_text(ns.out, with_notes_kept(table, ns.out))  # notes around report:begin/end markers stay
            return 0
        _set_threads(ns.threads)
        if ns.command == "evaluate":
            from train.loop import TrainConfig
            from train.outputs import staged_folder
            from train.runs import RunSpec, run_evaluate

            with staged_folder(ns.out) as stage:
                spec = RunSpec(parse_dataset_names(ns.dataset), list(ns.data), "bundle", stage,
                               TrainConfig(device=ns.torch_device), manifest=ns.manifest,
                               calm_as_neutral=ns.calm_as_neutral)
                run_evaluate(ns.bundle, spec, ns.batch_size)
            print(f"written to {ns.out}")
            return 0
        if ns.command == "robustness":
            from train.loop import TrainConfig
            from train.cli_checks import robustness_out
            from train.robustness import run_robustness
            from train.room import CorruptionConfig
            from train.runs import RunSpec

            corruption = CorruptionConfig(snr_db=ns.snr_db, rt60_s=ns.rt60_s, noise_colour=ns.noise)
            spec = RunSpec(parse_dataset_names(ns.dataset), list(ns.data), "bundle", ns.run,
                           TrainConfig(device=ns.torch_device), manifest=ns.manifest)
            run_robustness(ns.run, spec, corruption, ns.batch_size, tuple(ns.gain_db), ns.partial,
                           robustness_out(ns))
            return 0
        if ns.command == "set-level":
            run_set_level(ns, sys.argv[1:] if argv is None else argv)
            return 0
        if ns.command == "fuse":
            from train.fuse import run_fuse
            from train.loop import TrainConfig
            from train.outputs import staged_folder
            from train.runs import RunSpec

            with staged_folder(ns.out) as stage:
                spec = RunSpec(parse_dataset_names(ns.dataset), list(ns.data), "fusion", stage,
                               TrainConfig(device=ns.torch_device), manifest=ns.manifest,
                               command="python -m train " + shlex.join(sys.argv[1:] if argv is None else argv))
                run_fuse(ns.runs, stage, spec, ns.name, ns.batch_size)
            print(f"written to {ns.out}")
            return 0
        from train.runs import run_cv, run_fit

        spec = spec_from_args(ns)
        if ns.command == "loco":
            from train.loco import run_loco

            def train(run_spec) -> None:
                run_loco(run_spec, tuple(parse_dataset_names(ns.hold_out)) if ns.hold_out else ())
        else:
            train = run_cv if ns.command == "cv" else run_fit
        if mode == "staged":   # --overwrite: the old run stays until the new one is complete
            from dataclasses import replace

            from train.outputs import staged_folder

            with staged_folder(ns.out) as stage:
                train(replace(spec, out_dir=stage))
            print(f"written to {ns.out}")
        else:
            train(spec)
        return 0
    except TrainingInterrupted as exc:
        if mode == "staged":
            print(f"\ninterrupted; {ns.out} is as it was (the replacement run was discarded)", file=sys.stderr)
        else:
            print(f"\n{exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("\ninterrupted before training started; nothing to resume", file=sys.stderr)
        return 130
    except (DataError, UnknownModelError, BundleError, ValueError, OSError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    finally:
        shutdown()
