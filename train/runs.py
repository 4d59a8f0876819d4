"""What `python -m train fit|cv|evaluate` do: data -> folds -> training -> bundles + reports.

Each function takes a `RunSpec` (everything the command line said) and writes a run folder.
Only rank 0 writes when several processes train together under torchrun.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from models.bundle import is_bundle_folder, peek_ensemble_meta, save_bundle, save_ensemble
from models.contract import FunctionalsModel, shares_frontend
from models.labels import EMOTIONS
from models.registry import get_spec
from train.corpora import AudioCache, Clip, DataError, LoadResult, load_datasets, provenance
from train.distributed import barrier, dist_info
from train.evaluate import EvalResult, score, score_present_classes, summarise_folds
from train.folds import make_folds, validation_split, write_folds_json
from train.loop import ClipData, TrainConfig, predict_proba, train_model
from train.calibrate import calibration_summary, summary_line, write_run_oof
from train.reports import comparison_table, plot_confusion, plot_learning_curves, write_json


@dataclass(frozen=True)
class RunSpec:
    """One command: which data, which model, how to train, where to write."""

    datasets: list[str]
    data_dirs: list[Path]
    model: str
    out_dir: Path
    train: TrainConfig
    model_args: dict[str, Any] = field(default_factory=dict)
    manifest: Path | None = None
    folds: int = 4
    only_folds: tuple[int, ...] = ()  # train just these folds (parallel jobs); a later --resume run collects
    val_fraction: float = 0.2
    resume: bool = False
    cache_dir: Path | None = None
    command: str = ""
    calm_as_neutral: bool = False  # RAVDESS / CSV "calm" counts as neutral (otherwise dropped)
    # knowledge distillation (train.teacher): in cv, fold k learns from the teacher's fold-k members,
    # in fit from the whole teacher; train.teacher_weight says how much of each target is the teacher's
    teacher_dir: Path | None = None


@dataclass
class RunOutcome:
    """metrics: what was written to cv_metrics.json / metrics.json; model: the (last) trained model."""

    metrics: dict
    model: Any


@dataclass
class LoadedData:
    clips: list[Clip]
    data: ClipData
    load: LoadResult


def _say(msg: str) -> None:
    if dist_info().is_main:
        print(msg, flush=True)


def load_run_data(spec: RunSpec, functionals: str | None, partial_classes: bool = False) -> LoadedData:
    """Load, screen and decode every clip (16 kHz float32), plus the openSMILE functionals of
    set `functionals` ("eGeMAPSv02", "ComParE_2016") when it is not None.

    partial_classes: accept a set holding only some of the classes (evaluate); it still needs
    two classes or more and labels that all map to a class (checked before any decoding)."""
    from tqdm import tqdm

    result = load_datasets(spec.datasets, spec.data_dirs, spec.manifest, require_all_classes=not partial_classes,
                           calm_as_neutral=spec.calm_as_neutral)
    if partial_classes:
        _check_scorable(result)
    if result.skipped or result.missing:
        _say(result.skip_report())
    counts = result.class_counts()
    _say(f"{len(result.clips)} clips from {len({c.speaker for c in result.clips})} speakers: "
         + ", ".join(f"{k} {v}" for k, v in counts.items()))
    cache = AudioCache(preloaded=result.waves)  # clips the loader decoded while checking them
    result.waves = {}  # the cache holds them now; one copy in memory
    waves = [cache.load(c.path) for c in tqdm(result.clips, desc="decoding audio", unit="clip",
                                               disable=not dist_info().is_main)]
    labels = np.array([EMOTIONS.index(c.label) for c in result.clips], dtype=np.int64)
    egemaps = None
    if functionals is not None:
        from models.functionals import cached_functionals, functionals_batch

        if spec.cache_dir is not None:
            dist = dist_info()
            if not dist.is_main:
                barrier()  # rank 0 fills the shared cache first; the others then only read it
            egemaps = cached_functionals([c.path for c in result.clips], Path(spec.cache_dir) / "egemaps",
                                     load_wave=cache.load, progress=dist.is_main, feature_set=functionals)
            if dist.is_main:
                barrier()
        else:
            egemaps = functionals_batch(waves, functionals, progress=dist_info().is_main)
        egemaps = np.asarray(egemaps, dtype=np.float32)
    return LoadedData(result.clips, ClipData(waves, labels, egemaps, speakers=[c.speaker for c in result.clips],
                                             corpora=[c.dataset for c in result.clips]), result)


def _check_scorable(result: LoadResult) -> None:
    """Raise DataError (one line) unless every label mapped to a class and two classes or more occur."""
    if result.unmapped_labels:
        raw = sorted(set(result.unmapped_labels))
        counts = ", ".join(f"{r!r} ({result.unmapped_labels.count(r)} clips)" for r in raw)
        hint = "pass --calm-as-neutral to score calm as neutral, or " if any(r.strip().lower() == "calm" for r in raw) \
            else ""
        raise DataError(f"label(s) {counts} do not map to {', '.join(EMOTIONS)} (nor their usual spellings); "
                        f"{hint}drop those rows")
    present = [c for c, n in result.class_counts().items() if n]
    if len(present) < 2:
        have = f"only {present[0]}" if present else "none"
        raise DataError(f"scoring needs usable clips of at least two classes; this set has {have}")


def fits_on_functionals(model_name: str) -> bool:
    """True when the entry builds a FunctionalsModel (models/contract.py: fitted once on hard labels,
    no epochs, no soft targets). Asked of an untrained build with the entry's own arguments (the kind
    does not depend on them); pretrained-encoder heads are never one and are not built to ask."""
    from models.registry import build_model

    if get_spec(model_name).pretrained_encoder:
        return False
    return isinstance(build_model(model_name), FunctionalsModel)


def _functionals_set(spec: RunSpec) -> str | None:
    """The openSMILE set the model reads (its `functionals_set`, models.contract; built once to ask),
    else None. Pretrained-encoder models never need functionals, and building one would load the encoder."""
    from models.registry import build_model

    if get_spec(spec.model).pretrained_encoder:
        return None
    model = build_model(spec.model, **spec.model_args)
    return model.functionals_set


def _training_meta(spec: RunSpec, extra: dict | None = None) -> dict:
    return {**spec.train.to_dict(), "model": spec.model, "model_args": spec.model_args,
            "command": spec.command, **(extra or {})}


def _fit_one(spec: RunSpec, data: ClipData, clips: list[Clip], fit_idx: list[int], val_idx: list[int],
             run_dir: Path, teacher_members: tuple[str, ...] | None = None) -> tuple[Any, dict]:
    """Build, normalise and train one model; returns (trained model, info for metrics.json).

    An empty val_idx (val-fraction 0) trains without a validation split: info["val"] is None.
    With spec.teacher_dir, the teacher's probabilities on the training clips join the targets: the
    mean of its `teacher_members` (member names in its ensemble), or of the whole model when None.
    """
    from models.registry import build_model
    from train.loop import resolve_device
    from train.teacher import teacher_probabilities

    fit_data, val_data = data.subset(fit_idx), data.subset(val_idx)
    if spec.teacher_dir is not None:
        fit_data.teacher = teacher_probabilities(spec.teacher_dir, fit_data.waves, resolve_device(spec.train.device),
                                                 teacher_members, spec.cache_dir)
    model = build_model(spec.model, **spec.model_args)
    if isinstance(model, FunctionalsModel):
        model.fit(fit_data.egemaps, fit_data.labels)
        val = score(val_data.labels, model.predict_proba(val_data.egemaps).argmax(1)).to_dict() if val_idx else None
        return model, {"val": val, "history": [], "best_epoch": None, "earlier_train_s": 0.0}
    model.fit_normalisation(fit_data.waves, fit_data.egemaps)
    result = train_model(model, fit_data, val_data, spec.train, run_dir, resume=spec.resume,
                         cache_dir=spec.cache_dir)
    if dist_info().is_main:
        plot_learning_curves(result.history, run_dir / "learning_curves.png", f"{spec.model} ({run_dir.name})")
    return result.model, {"val": None if result.val_eval is None else result.val_eval.to_dict(),
                          "history": result.history, "best_epoch": result.best_epoch,
                          "earlier_train_s": result.earlier_train_s}


def _predict(model: Any, data: ClipData, spec: RunSpec | None = None, baseline: Any = "as-trained") -> np.ndarray:
    """Probabilities [N, 6] from a trained torch model or the eGeMAPS SVM.

    With a per-speaker baseline (models.baseline.BaselineConfig; "as-trained": spec.train.speaker_baseline),
    a frozen-encoder model trained from spec.cache_dir is scored from that cache, each speaker's clips
    normalised with the running baseline in list order, as `train evaluate` and the monitor do."""
    from models.contract import CacheableFrontEnd

    if not isinstance(model, nn.Module):  # a functionals classifier (models/svm.py)
        return np.asarray(model.predict_proba(data.egemaps), dtype=np.float32)
    if baseline == "as-trained":
        baseline = None if spec is None else spec.train.speaker_baseline
    if baseline is None:  # the full-precision encoder, as before baselines existed
        return predict_proba(model, data)
    if spec is None or spec.cache_dir is None or not isinstance(model, CacheableFrontEnd):
        raise ValueError("per-speaker normalisation needs a frozen-encoder model and --cache-dir")
    import torch

    from train.feature_cache import CachedHead, SpeakerNorm, cached_feature_data

    items, _, time_axis = cached_feature_data(model, data.waves, Path(spec.cache_dir), torch.device("cpu"),
                                              dist_info())
    norm = SpeakerNorm(baseline).add(items, data.speakers)
    return CachedHead(model, time_axis).predict_items(items, spec.train.eval_batch_size, "cpu", norm)


def corpus_scores(clips: list[Clip], labels: np.ndarray, oof: np.ndarray, folds: list) -> dict:
    """Pooled CV, per corpus: the out-of-fold scores on its clips and the mean ± std over folds of
    each fold's scores on its own test speakers of that corpus."""
    corpora = sorted({c.dataset for c in clips})
    out = {}
    for corpus in corpora:
        mine = np.array([c.dataset == corpus for c in clips])
        per_fold = [score(labels[idx], oof[idx]) for idx in
                    (np.array([i for i in f.test_idx if mine[i]]) for f in folds) if len(idx)]
        out[corpus] = {"oof": score(labels[mine], oof[mine]).to_dict(), "summary": summarise_folds(per_fold)}
    return out


def _validation_info(clips: list[Clip], val_idx: list[int], val_fraction: float) -> dict:
    """What metrics.json says about the early-stopping split (none when val-fraction is 0)."""
    if not val_idx:
        return {"val_fraction": val_fraction, "val_speakers": [],
                "note": "no validation split: trained on every training speaker, final-epoch weights kept"}
    return {"val_fraction": val_fraction, "val_speakers": sorted({clips[i].speaker for i in val_idx})}


def _fold_teachers(spec: RunSpec, folds: list) -> dict[int, tuple[str, ...]]:
    """fold index -> the teacher members it learns from, checked for every fold to train before any trains."""
    if spec.teacher_dir is None:
        return {}
    from train.teacher import fold_members

    return {f.index: fold_members(spec.teacher_dir, f.index, f.test_speakers) for f in folds
            if not spec.only_folds or f.index in spec.only_folds}


def _teacher_meta(spec: RunSpec, members: tuple[str, ...] | None) -> dict:
    """What a bundle records about its teacher: folder, ensemble name, the members it learnt from."""
    if spec.teacher_dir is None:
        return {}
    name = (peek_ensemble_meta(spec.teacher_dir) or {}).get("name")
    return {"teacher": {"folder": str(spec.teacher_dir), "name": name, "members": members or "all"}}


def run_cv(spec: RunSpec) -> RunOutcome:
    """Speaker-grouped K-fold CV; writes fold{k}/ bundles, their ensemble, cv_metrics.json and reports."""
    started = time.monotonic()
    dist = dist_info()
    loaded = load_run_data(spec, _functionals_set(spec))
    clips, data = loaded.clips, loaded.data
    folds = make_folds(clips, spec.folds, spec.train.seed)
    if any(not 0 <= i < len(folds) for i in spec.only_folds):
        raise DataError(f"--fold must be between 0 and {len(folds) - 1}, got {list(spec.only_folds)}")
    teachers = _fold_teachers(spec, folds)
    out = Path(spec.out_dir)
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_folds_json(out / "folds.json", folds, clips, spec.train.seed)
    oof = np.full(len(clips), -1, dtype=np.int64)
    oof_probs = np.full((len(clips), len(EMOTIONS)), np.nan)   # what `train calibrate` fits on
    fold_seconds: dict[int, float] = {}
    model = None
    fold_results: list[EvalResult] = []
    shared_backbone, backbone_dir = False, spec.model_args.get("backbone_dir")
    for fold in folds:
        fold_dir = out / f"fold{fold.index}"
        done = fold_dir / "metrics.json"
        if spec.resume and done.is_file() and is_bundle_folder(fold_dir):
            saved = json.loads(done.read_text())
            _say(f"fold {fold.index}: already finished, reusing {done}")
            fold_results.append(EvalResult.from_dict(saved["eval"]))
            oof[fold.test_idx] = saved["test_predictions"]
            if "test_probabilities" in saved:   # folds written before calibration kept only the class
                oof_probs[fold.test_idx] = saved["test_probabilities"]
            fold_seconds[fold.index] = saved.get("wall_time_s", 0.0)
            continue
        if spec.only_folds and fold.index not in spec.only_folds:
            continue
        _say(f"fold {fold.index + 1}/{len(folds)}: test speakers {', '.join(fold.test_speakers)}")
        fold_started = time.monotonic()
        fit_idx, val_idx = validation_split(clips, fold.train_idx, spec.train.seed + fold.index, spec.val_fraction)
        model, info = _fit_one(spec, data, clips, fit_idx, val_idx, fold_dir, teachers.get(fold.index))
        shared_backbone = shares_frontend(model)
        probs = _predict(model, data.subset(fold.test_idx), spec)
        preds = probs.argmax(1)
        oof[fold.test_idx] = preds
        oof_probs[fold.test_idx] = probs
        result = score(data.labels[fold.test_idx], preds)
        fold_results.append(result)
        # A fold resumed from train_state.pt also counts the training its interrupted runs did.
        fold_seconds[fold.index] = time.monotonic() - fold_started + info["earlier_train_s"]
        _say(f"fold {fold.index + 1}: test macro-F1 {result.macro_f1:.3f}, accuracy {result.accuracy:.3f}")
        if dist.is_main:
            train_clips = [clips[i] for i in fold.train_idx]
            save_bundle(fold_dir, model, spec.model, {
                "fold": fold.index, "metrics": {"test": result.to_dict(), "val": info["val"],
                                                "test_speakers": fold.test_speakers},
                "training": _training_meta(spec, {"best_epoch": info["best_epoch"],
                                                  **_teacher_meta(spec, teachers.get(fold.index))}),
                "data": provenance(train_clips, spec.datasets, spec.data_dirs)})
            write_json(done, {"model": spec.model, "fold": fold.index, "eval": result.to_dict(),
                              "val": info["val"], "validation": _validation_info(clips, val_idx, spec.val_fraction),
                              "history": info["history"], "best_epoch": info["best_epoch"],
                              "test_speakers": fold.test_speakers, "test_predictions": preds.tolist(),
                              "test_probabilities": np.round(probs, 6).tolist(),
                              "wall_time_s": fold_seconds[fold.index]})
            plot_confusion(result, fold_dir / "confusion.png", f"{spec.model} fold {fold.index}")
    if model is None and len(fold_results) == len(folds):
        # Every fold came from disk (--fold jobs, then --resume): ask an untrained build whether the
        # heads share one frozen front end, so the ensemble still says so.
        from models.registry import build_model

        shared_backbone = shares_frontend(build_model(spec.model, **spec.model_args))
    if len(fold_results) < len(folds):
        _say(f"{len(fold_results)} of {len(folds)} folds finished; once all are, run the same command with "
             "--resume and without --fold to write the CV summary")
        return RunOutcome({}, model)
    summary = summarise_folds(fold_results)
    oof_eval = score(data.labels, oof)
    payload = {"model": spec.model, "summary": summary, "oof": oof_eval.to_dict(),
               "wall_time_s": time.monotonic() - started,
               "fold_wall_time_s": [fold_seconds[f.index] for f in folds], "training": _training_meta(spec),
               "data": provenance(clips, spec.datasets, spec.data_dirs)}
    if len(set(spec.datasets)) > 1:
        payload["by_corpus"] = corpus_scores(clips, data.labels, oof, folds)
        for corpus, scores in payload["by_corpus"].items():
            _say(f"  {corpus}: macro-F1 {scores['summary']['macro_f1']['mean']:.3f} ± "
                 f"{scores['summary']['macro_f1']['std']:.3f} over folds, out-of-fold {scores['oof']['macro_f1']:.3f}")
    if dist.is_main:
        write_json(out / "cv_metrics.json", payload)
        write_run_oof(out, clips, folds, oof_probs, _say)
        save_ensemble(out, [f"fold{f.index}" for f in folds], shared_backbone, backbone_dir)
        plot_confusion(oof_eval, out / "confusion_oof.png", f"{spec.model} {len(folds)}-fold CV, out-of-fold")
        (out / "report.md").write_text(comparison_table([out]))
        from train.ssl_report import write_layer_weight_report

        write_layer_weight_report(out)   # learned layer weights per fold and averaged (heads that learn them)
        _say(f"CV macro-F1 {summary['macro_f1']['mean']:.3f} ± {summary['macro_f1']['std']:.3f} "
             f"(out-of-fold {oof_eval.macro_f1:.3f}) in {payload['wall_time_s'] / 60:.1f} min -> {out}")
    return RunOutcome(payload, model)


def run_fit(spec: RunSpec) -> RunOutcome:
    """Train on all data (speaker-grouped validation split for early stopping, or none with
    val-fraction 0); write one bundle. metrics.json's eval is None when there was no validation split."""
    started = time.monotonic()
    dist = dist_info()
    loaded = load_run_data(spec, _functionals_set(spec))
    clips, data = loaded.clips, loaded.data
    out = Path(spec.out_dir)
    fit_idx, val_idx = validation_split(clips, list(range(len(clips))), spec.train.seed, spec.val_fraction)
    model, info = _fit_one(spec, data, clips, fit_idx, val_idx, out)
    validation = _validation_info(clips, val_idx, spec.val_fraction)
    payload = {"model": spec.model, "eval": info["val"], "split": "validation" if val_idx else "none",
               **validation, "best_epoch": info["best_epoch"],
               "history": info["history"],
               "wall_time_s": time.monotonic() - started + info["earlier_train_s"]}
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_bundle(out, model, spec.model, {
            "fold": None, "metrics": {"val": info["val"], **validation},
            "training": _training_meta(spec, {"best_epoch": info["best_epoch"], **_teacher_meta(spec, None)}),
            "data": provenance(clips, spec.datasets, spec.data_dirs)})
        write_json(out / "metrics.json", payload)
        if info["val"] is None:
            _say(f"no validation split: trained on all {len(clips)} clips, final weights; bundle written to {out}")
        else:
            val_eval = EvalResult.from_dict(info["val"])
            plot_confusion(val_eval, out / "confusion_val.png", f"{spec.model} validation speakers")
            _say(f"validation macro-F1 {val_eval.macro_f1:.3f}; bundle written to {out}")
    return RunOutcome(payload, model)


def _predict_speaker_by_speaker(classifier: Any, data: ClipData, batch_size: int) -> np.ndarray:
    """Probabilities [N, 6] from a model that learns its speaker (a per-speaker baseline): each
    speaker is a session of its own, its clips its utterances in file order, as the monitor hears them."""
    from tqdm import tqdm

    probs = np.zeros((len(data.waves), len(EMOTIONS)), dtype=np.float32)
    order: dict[str, list[int]] = {}
    for i, speaker in enumerate(data.speakers):
        order.setdefault(speaker, []).append(i)
    with tqdm(total=len(data.waves), desc="evaluating speaker by speaker", unit="clip") as bar:
        for clips in order.values():
            classifier.reset_session()
            for start in range(0, len(clips), batch_size):
                batch = clips[start:start + batch_size]
                probs[batch] = classifier.predict_utterance([data.waves[i] for i in batch])
                bar.update(len(batch))
    return probs


def run_evaluate(bundle_dir: Path, spec: RunSpec, batch_size: int = 16) -> EvalResult:
    """Score a bundle (or ensemble folder) on a dataset; writes metrics.json + confusion.png to out_dir."""
    from tqdm import tqdm

    from models.calibration import without_calibration
    from models.loader import load_classifier

    classifier = load_classifier(str(bundle_dir), device=None if spec.train.device == "auto" else spec.train.device)
    raw_model, calibration = without_calibration(classifier)   # ECE and Brier before and after calibration
    loaded = load_run_data(spec, functionals=None, partial_classes=True)
    if raw_model.learns_speaker:
        raw = _predict_speaker_by_speaker(raw_model, loaded.data, batch_size)
    else:
        probs = []
        for start in tqdm(range(0, len(loaded.data.waves), batch_size), desc="evaluating", unit="batch"):
            probs.append(raw_model.predict(loaded.data.waves[start:start + batch_size]))
        raw = np.concatenate(probs)
    calibration_info = calibration_summary(raw, loaded.data.labels, calibration)
    scores = score_present_classes(loaded.data.labels, raw if calibration is None else calibration.apply(raw),
                                   EMOTIONS)
    result, absent = scores.restricted, [c for c in EMOTIONS if c not in scores.scored]
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", {"model": str(bundle_dir), "eval": result.to_dict(), "split": "evaluate",
                                      "scored_classes": list(scores.scored), "six_way": scores.six_way.to_dict(),
                                      "calibration": calibration_info,
                                      "data": provenance(loaded.clips, spec.datasets, spec.data_dirs)})
    title = f"{Path(bundle_dir).name} on {'+'.join(spec.datasets)}"
    plot_confusion(result, out / "confusion.png", title)
    print(f"scored classes: {', '.join(scores.scored)}"
          + (f" ({len(scores.scored)} of {len(EMOTIONS)}; predictions restricted to these; not in the set: "
             f"{', '.join(absent)})" if absent else ""))
    print(f"macro-F1 {result.macro_f1:.3f}, accuracy {result.accuracy:.3f}, UAR {result.uar:.3f} "
          f"on {result.n} clips -> {out}")
    print(summary_line(calibration_info))
    if absent:
        plot_confusion(scores.six_way, out / "confusion_six_way.png", f"{title}, unrestricted")
        print(_six_way_table(scores.six_way, scores.scored))
    return result


def _six_way_table(six_way: EvalResult, scored: tuple[str, ...]) -> str:
    """The unrestricted confusion as text: one row per scored class, one column per model class."""
    width = max(len(c) for c in six_way.labels) + 1
    lines = [f"unrestricted {len(six_way.labels)}-way confusion (rows: true class, columns: argmax over all "
             f"classes); accuracy {six_way.accuracy:.3f}",
             " " * width + "".join(f"{c[:7]:>8}" for c in six_way.labels)]
    for i, true in enumerate(six_way.labels):
        if true in scored:
            lines.append(f"{true:<{width}}" + "".join(f"{n:>8}" for n in six_way.confusion[i]))
    return "\n".join(lines)
