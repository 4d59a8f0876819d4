"""The linear-probe floor for whisper-ultimate: mean + std pooling of the encoder's last state,
then logistic regression, on the same folds as `python -m train cv` and its feature cache.

    python -m train.whisper_probe --dataset crema-d --data ../shared/data/crema-d/AudioFLAC \
        --manifest ../shared/data/crema-d/flac_manifest.csv --folds 5 --cache-dir /work/cache/crema \
        --model-arg encoder=tiny.en --model-arg frame_pool=4 --out runs/whisper-tiny-probe

The encoder states come from the whisper-ultimate cache for the same model args (computed
when missing), so the probe sees exactly what the BiLSTM heads saw. Writes the run-folder
layout `python -m train report` reads: folds.json, fold{k}/metrics.json, cv_metrics.json.
Like every row of the CREMA-D table, each fold leaves the same 20 % validation actors of its
training half out (`validation_split`, as `train cv` does); a probe has no early stopping to use them for.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from train.cli import parse_model_args
from train.corpora import DataError, parse_dataset_names

PROBE_NAME = "whisper-linear-probe"


def pooled_last_state(paths: list[Path]) -> np.ndarray:
    """Cached clips [F, L+1, D] (fp16) -> [N, 2D] float32: mean and std over frames of the last state."""
    rows = []
    for path in paths:
        last = np.load(path, mmap_mode="r")[:, -1].astype(np.float32)
        rows.append(np.concatenate([last.mean(0), last.std(0)]))
    return np.stack(rows)


def _fit_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, c: float) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))
    probe.fit(train_x, train_y)
    return probe.predict(test_x)


def run_probe(ns: argparse.Namespace) -> dict:
    import torch

    from models.registry import build_model
    from train.distributed import DistInfo
    from train.evaluate import score, summarise_folds
    from train.feature_cache import cached_feature_data
    from train.folds import make_folds, validation_split, write_folds_json
    from train.loop import TrainConfig
    from train.reports import write_json
    from train.runs import RunSpec, load_run_data

    started = time.monotonic()
    model_args = parse_model_args(ns.model_arg, None)
    spec = RunSpec(parse_dataset_names(ns.dataset), list(ns.data), "whisper-ultimate", ns.out,
                   TrainConfig(device="cpu", seed=ns.seed), model_args=model_args, manifest=ns.manifest,
                   folds=ns.folds, cache_dir=ns.cache_dir)
    loaded = load_run_data(spec, None)
    clips, labels = loaded.clips, loaded.data.labels
    model = build_model("whisper-ultimate", **model_args).eval()
    paths, _, _ = cached_feature_data(model, loaded.data.waves, Path(ns.cache_dir), torch.device("cpu"), DistInfo())
    features = pooled_last_state(paths)
    folds = make_folds(clips, ns.folds, ns.seed)
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    write_folds_json(out / "folds.json", folds, clips, ns.seed)
    oof = np.full(len(clips), -1, dtype=np.int64)
    results, walls = [], []
    for fold in folds:
        fold_started = time.monotonic()
        fit_idx, _ = validation_split(clips, fold.train_idx, ns.seed + fold.index, ns.val_fraction)
        preds = _fit_predict(features[fit_idx], labels[fit_idx], features[fold.test_idx], ns.C)
        oof[fold.test_idx] = preds
        result = score(labels[fold.test_idx], preds)
        results.append(result)
        walls.append(time.monotonic() - fold_started)
        (out / f"fold{fold.index}").mkdir(exist_ok=True)
        write_json(out / f"fold{fold.index}" / "metrics.json", {
            "model": PROBE_NAME, "fold": fold.index, "eval": result.to_dict(), "val": None,
            "validation": {"val_fraction": ns.val_fraction,
                           "note": "validation actors left out of training, unused (no early stopping)"},
            "history": [], "best_epoch": None, "test_speakers": fold.test_speakers,
            "test_predictions": preds.tolist(), "wall_time_s": walls[-1]})
        print(f"fold {fold.index + 1}/{len(folds)}: test macro-F1 {result.macro_f1:.3f}", flush=True)
    summary, oof_eval = summarise_folds(results), score(labels, oof)
    training = {"model": PROBE_NAME, "model_args": {**model_args, "pooling": "mean+std of the last state",
                                                    "classifier": f"StandardScaler + LogisticRegression(C={ns.C})"},
                "command": "python -m train.whisper_probe " + shlex.join(sys.argv[1:])}
    payload = {"model": PROBE_NAME, "summary": summary, "oof": oof_eval.to_dict(),
               "wall_time_s": time.monotonic() - started, "fold_wall_time_s": walls, "training": training}
    write_json(out / "cv_metrics.json", payload)
    print(f"CV macro-F1 {summary['macro_f1']['mean']:.3f} ± {summary['macro_f1']['std']:.3f} "
          f"(out-of-fold {oof_eval.macro_f1:.3f}) -> {out}")
    return payload


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.whisper_probe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", action="append", required=True, metavar="NAME", help="e.g. crema-d")
    p.add_argument("--data", action="append", type=Path, required=True, metavar="DIR", help="dataset folder")
    p.add_argument("--manifest", type=Path, metavar="CSV", help="crema-d manifest to verify the clips")
    p.add_argument("--folds", type=int, default=5, metavar="K", help="actor-grouped folds (default 5)")
    p.add_argument("--seed", type=int, default=0, help="fold seed (default 0, as `python -m train cv`)")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="whisper-ultimate args that decide the cached states (encoder=..., frame_pool=...)")
    p.add_argument("--val-fraction", type=float, default=0.2, metavar="F",
                   help="share of training actors left out, as `train cv` (default 0.2; 0 = train on all)")
    p.add_argument("--C", type=float, default=1.0, help="inverse L2 strength of the logistic regression")
    p.add_argument("--cache-dir", type=Path, required=True, metavar="DIR", help="whisper-ultimate feature cache")
    p.add_argument("--threads", type=int, default=1, metavar="N", help="torch threads (default 1)")
    p.add_argument("--out", type=Path, required=True, metavar="RUN_DIR", help="run folder to write")
    ns = p.parse_args(argv)
    import torch

    torch.set_num_threads(ns.threads)
    try:
        run_probe(ns)
    except (DataError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
