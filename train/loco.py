"""`python -m train loco`: leave one corpus out. Train on every corpus but one, score the one left out.

For each held-out corpus H of the pooled data: the model is trained on the other corpora (a
speaker-grouped validation split of every training corpus for early stopping) and scored on all of
H, whose speakers and recordings it never heard. Writes, per held-out corpus, RUN/holdout-H/ with the
bundle, its training metrics.json and loco.json (macro-F1 over H's classes, per-class recall, the
confusion matrix, and the sad -> disgust and neutral -> disgust shares); RUN/loco.json gathers
the corpora finished so far. With a per-speaker baseline, H is scored twice more: every speaker's
clips in file order with the running baseline, and with it frozen after 5 utterances.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from models.baseline import BaselineConfig
from models.labels import EMOTIONS
from train.corpora import DataError
from train.evaluate import EvalResult, score_present_classes
from train.folds import validation_split
from train.reports import write_json

LOCO_JSON = "loco.json"
FIRST_UTTERANCES = 5  # the baseline's budget the issue sets: it must help within 5 utterances


def confusion_share(result: EvalResult, true: str, predicted: str) -> float | None:
    """Share of clips of class `true` predicted as `predicted` (None when `true` has no clips)."""
    if true not in result.labels or predicted not in result.labels:
        return None
    row = result.confusion[result.labels.index(true)]
    return row[result.labels.index(predicted)] / sum(row) if sum(row) else None


def holdout_record(result: EvalResult, n_speakers: int) -> dict:
    """What loco.json says of one scoring: scores, per-class recall, confusion, the two confusions."""
    return {"eval": result.to_dict(), "macro_f1": result.macro_f1,
            "recall": {c: s.recall for c, s in result.per_class.items()}, "speakers": n_speakers,
            "sad_as_disgust": confusion_share(result, "sad", "disgust"),
            "neutral_as_disgust": confusion_share(result, "neutral", "disgust")}


def run_loco(spec, holdouts: tuple[str, ...] = ()) -> dict:
    """Train and score every held-out corpus of spec.datasets (or just `holdouts`); returns loco.json."""
    from train.runs import _fit_one, _predict, load_run_data

    if len(set(spec.datasets)) < 2:
        raise DataError("leave-one-corpus-out needs at least two corpora (--dataset A B ...)")
    unknown = [h for h in holdouts if h not in spec.datasets]
    if unknown:
        raise DataError(f"--hold-out {', '.join(unknown)} is not among --dataset {' '.join(spec.datasets)}")
    loaded = load_run_data(spec, None, partial_classes=True)
    clips, data = loaded.clips, loaded.data
    out = Path(spec.out_dir)
    for held in holdouts or tuple(dict.fromkeys(spec.datasets)):
        folder = out / f"holdout-{held}"
        if spec.resume and (folder / LOCO_JSON).is_file():
            print(f"held-out {held}: already finished, reusing {folder / LOCO_JSON}")
            continue
        started = time.monotonic()
        train_idx = [i for i, c in enumerate(clips) if c.dataset != held]
        test_idx = [i for i, c in enumerate(clips) if c.dataset == held]
        fit_idx, val_idx = validation_split(clips, train_idx, spec.train.seed, spec.val_fraction)
        print(f"held-out {held}: training on {len(fit_idx)} clips of "
              f"{', '.join(sorted({clips[i].dataset for i in train_idx}))}, scoring {len(test_idx)}")
        model, info = _fit_one(spec, data, clips, fit_idx, val_idx, folder)
        test = data.subset(test_idx)
        record = {"held_out": held, "trained_on": sorted({clips[i].dataset for i in train_idx}),
                  "train_clips": len(fit_idx), "val_clips": len(val_idx), "best_epoch": info["best_epoch"],
                  "scores": {}}
        speakers = len({clips[i].speaker for i in test_idx})
        for variant, baseline in _variants(spec.train.speaker_baseline):
            probs = _predict(model, test, spec, baseline)
            result = score_present_classes(test.labels, probs, EMOTIONS).restricted
            record["scores"][variant] = holdout_record(result, speakers)
            print(f"held-out {held} ({variant}): macro-F1 {result.macro_f1:.3f}, "
                  + ", ".join(f"{c} {s.recall:.2f}" for c, s in result.per_class.items()))
        record["wall_time_s"] = time.monotonic() - started + info["earlier_train_s"]
        _save(folder, model, spec, record, clips, train_idx)
    # RUN/loco.json gathers every finished held-out corpus, also those of parallel --hold-out jobs
    summary = {"model": spec.model, "command": spec.command, "datasets": spec.datasets,
               "training": spec.train.to_dict(),
               "holdouts": {p.parent.name.removeprefix("holdout-"): json.loads(p.read_text())
                            for p in sorted(out.glob(f"holdout-*/{LOCO_JSON}"))}}
    write_json(out / LOCO_JSON, summary)
    return summary


def _variants(baseline: BaselineConfig | None) -> list[tuple[str, BaselineConfig | None]]:
    """How the held-out corpus is scored: as trained, and for a baseline model also frozen after
    FIRST_UTTERANCES utterances (the monitor's budget)."""
    if baseline is None:
        return [("plain", None)]
    return [("baseline", baseline), (f"baseline-first{FIRST_UTTERANCES}",
                                     replace(baseline, max_utterances=FIRST_UTTERANCES))]


def _save(folder: Path, model, spec, record: dict, clips, train_idx: list[int]) -> None:
    from models.bundle import save_bundle
    from train.corpora import provenance
    from train.runs import _training_meta

    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / LOCO_JSON, record)   # the scores first: they are what the run is for
    train_clips = [clips[i] for i in train_idx]
    save_bundle(folder, model, spec.model, {
        "fold": None, "metrics": {"held_out": record["held_out"], "scores": record["scores"]},
        "training": _training_meta(spec, {"best_epoch": record["best_epoch"]}),
        "data": provenance(train_clips, sorted({c.dataset for c in train_clips}), spec.data_dirs)})
