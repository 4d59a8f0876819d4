"""Per-utterance CPU latency of every log-mel model (untrained weights; speed does not depend on them).

    python -m bench.model_speed [--clip-s 2.5] [--runs 50] [--warmup 15] [--threads 2] [--json out.json]

For each model: `forward_ms` is one model forward (log-mel front end included) on
one clip of --clip-s seconds under torch.inference_mode(); `predict_ms` is the
whole Classifier.predict path the engine uses (padding, eGeMAPS when the model
needs them, softmax). `forward_cpu_ms` is process CPU time per forward (all
threads; steadier than wall time when other jobs share the cores, but it also
counts OpenMP spin-waiting). Mean and 95th percentile over --runs runs after --warmup
runs (the first CPU calls pay for oneDNN kernel set-up). The eGeMAPS SVM row
has predict_ms only. Figures are wall-clock milliseconds; other processes on
the machine inflate them, so read p95 with care on a shared box.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Callable

import numpy as np

from bench.report import finish_cli, markdown_table

SAMPLE_RATE_HZ = 16_000


def _timed(fn: Callable[[], object], runs: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times, cpu_start = [], time.process_time()
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    cpu_ms = (time.process_time() - cpu_start) * 1000.0 / runs
    return {"mean_ms": float(np.mean(times)), "p95_ms": float(np.percentile(times, 95)), "cpu_ms": cpu_ms}


def _speech_like_clip(seconds: float) -> np.ndarray:
    """A voiced-sounding test clip: harmonic tone with vibrato plus noise, float32 [seconds * 16000]."""
    t = np.arange(int(seconds * SAMPLE_RATE_HZ)) / SAMPLE_RATE_HZ
    f0 = 160 + 20 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE_HZ
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6))
    noise = 0.02 * np.random.default_rng(0).standard_normal(t.shape[0])
    return (0.2 * voiced + noise).astype(np.float32)


def run(clip_s: float = 2.5, runs: int = 50, warmup: int = 15, threads: int = 2,
        names: list[str] | None = None) -> dict:
    """Returns {"clip_s", "threads", "runs", "rows": [{"model", "params", "weights_mb",
    "forward_mean_ms", "forward_p95_ms", "forward_cpu_ms", "predict_mean_ms", "predict_p95_ms"}]}."""
    import torch

    from models.functionals import feature_dim, functionals
    from models.features import pad_batch
    from models.registry import available, build_model
    from models.svm import SklearnClassifier
    from models.torch_classifier import TorchClassifier

    torch.set_num_threads(threads)
    clip = _speech_like_clip(clip_s)
    rows = []
    for name in names or available("logmel"):
        model = build_model(name).eval()
        params = sum(p.numel() for p in model.parameters())
        weights_mb = sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 1e6
        wave, lengths = pad_batch([clip])
        feats = (torch.from_numpy(functionals(clip, model.functionals_set))[None]
                 if model.functionals_set is not None else None)

        def forward() -> None:
            with torch.inference_mode():
                model(wave, lengths, feats)

        forward_t = _timed(forward, runs, warmup)
        classifier = TorchClassifier(model, name=name, device="cpu")
        predict_t = _timed(lambda: classifier.predict([clip]), runs, warmup)
        rows.append({"model": name, "params": params, "weights_mb": round(weights_mb, 2),
                     "forward_mean_ms": forward_t["mean_ms"], "forward_p95_ms": forward_t["p95_ms"],
                     "forward_cpu_ms": forward_t["cpu_ms"],
                     "predict_mean_ms": predict_t["mean_ms"], "predict_p95_ms": predict_t["p95_ms"]})
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 5)
    for name in available("classical") if names is None else []:
        model = build_model(name)
        model.fit(rng.standard_normal((labels.shape[0], feature_dim(model.functionals_set))), labels)
        classifier = SklearnClassifier(model, name=name)
        predict_t = _timed(lambda: classifier.predict([clip]), max(5, runs // 5), 2)
        rows.append({"model": name, "params": None, "weights_mb": None,
                     "forward_mean_ms": None, "forward_p95_ms": None, "forward_cpu_ms": None,
                     "predict_mean_ms": predict_t["mean_ms"], "predict_p95_ms": predict_t["p95_ms"]})
    return {"clip_s": clip_s, "threads": threads, "runs": runs, "rows": rows}


def table(result: dict) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    rows = [(row["model"], "-" if row["params"] is None else f"{row['params']:,}",
             "-" if row["weights_mb"] is None else f"{row['weights_mb']:.1f}",
             *(ms(row[key]) for key in ("forward_mean_ms", "forward_p95_ms", "forward_cpu_ms", "predict_mean_ms",
                                        "predict_p95_ms")))
            for row in result["rows"]]
    return (f"Per-utterance latency, {result['clip_s']} s clip, {result['threads']} torch threads, "
            f"{result['runs']} runs (ms)\n\n"
            + markdown_table(("model", "params", "weights MB", "forward mean", "forward p95", "forward CPU",
                              "predict mean", "predict p95"), rows, align="lrrrrrrr"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip-s", type=float, default=2.5, help="utterance length in seconds (default 2.5)")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per model (default 50)")
    parser.add_argument("--warmup", type=int, default=15, help="untimed runs first (default 15)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--model", action="append", dest="names", metavar="NAME",
                        help="only this log-mel registry model (repeatable; default: all + egemaps-svm)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    ns = parser.parse_args(argv)
    if ns.clip_s <= 0 or ns.runs < 1 or ns.warmup < 0 or ns.threads < 1:
        parser.error("need --clip-s > 0, --runs >= 1, --warmup >= 0, --threads >= 1")
    from models.registry import UnknownModelError, available

    unknown = [n for n in ns.names or [] if n not in available("logmel")]
    if unknown:
        parser.error(f"not log-mel models: {', '.join(unknown)}; choose from {', '.join(available('logmel'))}")
    return finish_cli(lambda: run(ns.clip_s, ns.runs, ns.warmup, ns.threads, ns.names), table, ns.json,
                      errors=(UnknownModelError,))


if __name__ == "__main__":
    sys.exit(main())
