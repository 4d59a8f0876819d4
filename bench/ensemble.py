"""Benchmark: one shared WavLM pass feeding K heads vs one head vs K separate backbones.

CPU only, torch.set_num_threads(2), a full WavLM shaped like microsoft/wavlm-base-plus with
random weights (built in a temporary folder, ~380 MB; the compute is real, the weights are not).
Each configuration runs in a fresh process so its peak RSS is its own:

    single    one wavlm-ultimate head on its frozen backbone (load_bundle_classifier)
    shared    K-head ensemble, one backbone pass per batch (load_ensemble, shared_backbone)
    separate  K heads, each with its own backbone copy and its own pass (the naive ensemble)

Times are per utterance (batch of one, as the real-time engine sends them), all three
configurations loaded in one process and called round-robin after a warm-up, so load from
other processes hits them alike; the fastest call is the estimate (the median is shown too).
RTF = compute time / audio duration (< 1 is faster than real time).

    python -m bench.ensemble [--heads 5] [--repeats 3] [--seconds 1 2.5 5] [--json out.json] [--tiny]
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import finish_cli, markdown_table

CONFIGS = ("single", "shared", "separate")
THREADS = 2
TARGET_SHARED_OVER_SINGLE = 1.3


def write_fixture(root: Path, heads: int, tiny: bool) -> Path:
    """Backbone folder + K frozen-head bundles + their ensemble under root; returns the ensemble folder."""
    from models.backbone import make_base_plus_shaped, make_tiny_backbone

    backbone = root / "backbone"
    if tiny:
        make_tiny_backbone(backbone, "wavlm")
    else:
        make_base_plus_shaped(backbone)
    return _save_heads(root / "ensemble", "wavlm-ultimate", {"backbone_dir": str(backbone)}, heads, str(backbone))


def _save_heads(ensemble: Path, name: str, args: dict[str, Any], heads: int, backbone_dir: str | None) -> Path:
    """K randomly initialised frozen heads as bundles + their ensemble (shared backbone); returns the folder."""
    import torch

    from models.bundle import save_bundle, save_ensemble
    from models.registry import build_model

    for k in range(heads):
        torch.manual_seed(k)
        save_bundle(ensemble / f"fold{k}", build_model(name, **args), name, {"fold": k, "git_commit": "benchmark"})
    return save_ensemble(ensemble, [f"fold{k}" for k in range(heads)], shared_backbone=True, backbone_dir=backbone_dir)


def _build_classifier(config: str, ensemble: Path):
    from models.ensemble import EnsembleClassifier
    from models.labels import EMOTIONS
    from models.loader import load_bundle, load_bundle_classifier, load_ensemble
    from models.torch_classifier import TorchClassifier

    if config == "single":
        return load_bundle_classifier(ensemble / "fold0", "cpu")
    if config == "shared":
        return load_ensemble(ensemble, "cpu")
    members = []
    for folder in sorted(p for p in ensemble.iterdir() if p.is_dir()):
        model, _ = load_bundle(folder, "cpu")  # outside load_ensemble nothing is shared: its own backbone copy
        members.append(TorchClassifier(model, name=folder.name, device="cpu"))
    classifier = EnsembleClassifier("separate", "cpu", EMOTIONS, [], members, [m.name for m in members])
    classifier.warmup()
    return classifier


def _peak_rss(config: str, ensemble: str) -> dict[str, Any]:
    """Runs in a fresh process: load one configuration, classify one 5 s clip, report peak RSS."""
    import torch

    torch.set_num_threads(THREADS)
    started = time.perf_counter()
    classifier = _build_classifier(config, Path(ensemble))
    load_s = time.perf_counter() - started
    classifier.predict([np.zeros(5 * 16_000, np.float32)])
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB
    return {"describe": classifier.describe(), "load_s": load_s, "peak_rss_mb": peak_rss_mb}


def _timings(ensemble: str, seconds: list[float], repeats: int) -> dict[str, Any]:
    """Runs in a fresh process: all configurations loaded side by side, calls interleaved
    round-robin so that load from other processes hits every configuration alike."""
    import torch

    torch.set_num_threads(THREADS)
    classifiers = {config: _build_classifier(config, Path(ensemble)) for config in CONFIGS}
    rng = np.random.default_rng(0)
    times: dict[str, dict[str, list[float]]] = {c: {} for c in CONFIGS}
    load_averages = []
    for duration in seconds:
        clip = (0.05 * rng.standard_normal(int(duration * 16_000))).astype(np.float32)
        for classifier in classifiers.values():
            classifier.predict([clip])  # warm-up for this length
        for config in CONFIGS:
            times[config][str(duration)] = []
        for r in range(repeats):
            order = CONFIGS[r % len(CONFIGS):] + CONFIGS[:r % len(CONFIGS)]
            for config in order:
                t0 = time.perf_counter()
                classifiers[config].predict([clip])
                times[config][str(duration)].append(time.perf_counter() - t0)
            load_averages.append(os.getloadavg()[0])
    return {"times_s": times, "host_load_average_1min": float(np.mean(load_averages))}


def run(heads: int = 5, repeats: int = 3, seconds: tuple[float, ...] = (1.0, 2.5, 5.0),
        tiny: bool = False, progress: bool = True) -> dict[str, Any]:
    """Build the fixture in a temp folder, measure every configuration; returns the results dict.

    Ratios use the fastest of the interleaved calls (least disturbed by other processes).
    """
    from tqdm import tqdm

    results: dict[str, Any] = {"backbone": "tiny random WavLM" if tiny else "base-plus-shaped WavLM (random)",
                               "heads": heads, "threads": THREADS, "repeats": repeats,
                               "seconds": list(seconds), "configs": {}}
    with tempfile.TemporaryDirectory(prefix="ved-bench-ensemble-") as tmp:
        ensemble = str(write_fixture(Path(tmp), heads, tiny))
        context = multiprocessing.get_context("spawn")  # fresh processes: honest peak RSS
        for config in tqdm(CONFIGS, desc="peak RSS per configuration", unit="config", disable=not progress):
            with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
                results["configs"][config] = pool.submit(_peak_rss, config, ensemble).result()
        if progress:
            print("timing all configurations, interleaved ...", file=sys.stderr)
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            timing = pool.submit(_timings, ensemble, list(seconds), repeats).result()
    results["host_load_average_1min"] = timing["host_load_average_1min"]
    for config in CONFIGS:
        rows = {}
        for duration in seconds:
            calls = timing["times_s"][config][str(duration)]
            rows[str(duration)] = {"ms_median": 1000.0 * statistics.median(calls), "ms_min": 1000.0 * min(calls),
                                   "rtf_min": min(calls) / duration}
        results["configs"][config]["by_seconds"] = rows
    ratios = {}
    for duration in seconds:
        key = str(duration)
        best = {c: results["configs"][c]["by_seconds"][key]["ms_min"] for c in CONFIGS}
        ratios[key] = {"shared_over_single": best["shared"] / best["single"],
                       "separate_over_shared": best["separate"] / best["shared"]}
    results["ratios"] = ratios
    results["target_shared_over_single"] = TARGET_SHARED_OVER_SINGLE
    results["meets_target"] = all(r["shared_over_single"] <= TARGET_SHARED_OVER_SINGLE for r in ratios.values())
    return results


def table(results: dict[str, Any]) -> str:
    """One row per configuration and clip length, then the ratio rows."""
    rows = [(config, f"{duration:g}", f"{row['ms_min']:.0f}", f"{row['ms_median']:.0f}", f"{row['rtf_min']:.3f}",
             f"{entry['peak_rss_mb']:.0f}", f"{entry['load_s']:.1f}")
            for config in CONFIGS for entry in [results["configs"][config]]
            for duration in results["seconds"] for row in [entry["by_seconds"][str(duration)]]]
    ratios = [(f"{duration:g}", f"{r['shared_over_single']:.2f}", f"{r['separate_over_shared']:.2f}")
              for duration in results["seconds"] for r in [results["ratios"][str(duration)]]]
    verdict = "meets" if results["meets_target"] else "MISSES"
    return "\n".join([
        f"Backbone: {results['backbone']}, {results['heads']} heads, {results['threads']} CPU threads, "
        f"{results['repeats']} interleaved calls per cell, batch of one utterance; host load average "
        f"during timing {results['host_load_average_1min']:.1f} (other processes included).", "",
        markdown_table(("config", "clip (s)", "ms / utterance (min)", "ms (median)", "RTF (min)", "peak RSS (MB)",
                        "load (s)"), rows), "",
        markdown_table(("clip (s)", "shared / single", "separate / shared"), ratios),
        f"\nshared/single target <= {results['target_shared_over_single']} (fastest calls): {verdict}"]) + "\n"


# ---------------------------------------------------------------- Whisper-encoder ensembles
WHISPER_ENCODERS = ("tiny.en", "base")
WHISPER_FRAME_POOL = 4  # as trained on CREMA-D (docs/whisper.md)
TARGET_WHISPER_P95_MS = 150.0


def speech_clip(seconds: float) -> tuple[np.ndarray, str]:
    """A real utterance of `seconds` (shared CREMA-D clips joined) when present, else noise."""
    import soundfile as sf

    from bench.vad_cost import DEFAULT_DATA

    clips = sorted((DEFAULT_DATA / "crema-d" / "AudioFLAC").glob("*.flac"))[:6]
    if not clips:
        rng = np.random.default_rng(0)
        return (0.05 * rng.standard_normal(int(seconds * 16_000))).astype(np.float32), "noise (no shared CREMA-D)"
    audio = np.concatenate([sf.read(str(p), dtype="float32")[0] for p in clips])
    return audio[:int(seconds * 16_000)], f"CREMA-D speech ({', '.join(p.stem for p in clips[:2])}, ...)"


def _whisper_timings(ensembles: dict[str, str], fast_dir: str | None, seconds: float,
                     repeats: int) -> dict[str, Any]:
    """Fresh process, THREADS torch threads: every classifier loaded, calls interleaved round-robin."""
    import torch

    from models.loader import load_bundle_classifier, load_classifier

    torch.set_num_threads(THREADS)
    classifiers = {label: load_classifier(folder, "cpu") for label, folder in ensembles.items()}
    if fast_dir:
        classifiers["fast model"] = load_bundle_classifier(fast_dir, "cpu")
    clip, note = speech_clip(seconds)
    times: dict[str, list[float]] = {label: [] for label in classifiers}
    cpu: dict[str, list[float]] = {label: [] for label in classifiers}  # process CPU time, all threads
    loads = []
    for _ in range(3):
        for classifier in classifiers.values():
            classifier.predict([clip])
    for _ in range(repeats):
        for label, classifier in classifiers.items():
            t0, c0 = time.perf_counter(), time.process_time()
            classifier.predict([clip])
            times[label].append(time.perf_counter() - t0)
            cpu[label].append(time.process_time() - c0)
        loads.append(os.getloadavg()[0])
    describe = {label: c.describe() for label, c in classifiers.items()}
    return {"times_s": times, "cpu_s": cpu, "describe": describe, "clip": note, "host_load_average_1min": float(np.mean(loads))}


def run_whisper(fast_dir: str | None, seconds: float = 4.0, repeats: int = 40, heads: int = 5,
                encoders: tuple[str, ...] = WHISPER_ENCODERS, trained: dict[str, str] | None = None) -> dict[str, Any]:
    """p50/p95 per utterance of K-head whisper-ultimate ensembles (one shared pass per encoder) beside
    the fast model, same process, same clip: K untrained heads per encoder (the same compute as trained
    ones), plus `trained`: label -> trained ensemble folder (e.g. the installed primary)."""
    with tempfile.TemporaryDirectory(prefix="ved-bench-whisper-") as tmp:
        ensembles = {f"whisper-ultimate {enc}, {heads} heads (untrained heads)": str(_save_heads(
            Path(tmp) / enc, "whisper-ultimate", {"encoder": enc, "frame_pool": WHISPER_FRAME_POOL}, heads, None))
            for enc in encoders}
        ensembles.update(trained or {})
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            timing = pool.submit(_whisper_timings, ensembles, fast_dir, seconds, repeats).result()
    rows = []
    for label, calls in timing["times_s"].items():
        ms = 1000.0 * np.asarray(calls)
        rows.append({"model": label, "describe": timing["describe"][label], "ms_p50": float(np.percentile(ms, 50)),
                     "ms_p95": float(np.percentile(ms, 95)), "ms_max": float(ms.max()),
                     "cpu_ms_p50": 1000.0 * float(np.median(timing["cpu_s"][label]))})
    return {"seconds": seconds, "repeats": repeats, "threads": THREADS, "clip": timing["clip"], "rows": rows,
            "host_load_average_1min": timing["host_load_average_1min"], "target_p95_ms": TARGET_WHISPER_P95_MS}


def whisper_table(result: dict[str, Any]) -> str:
    rows = [(row["model"], f"{row['ms_p50']:.0f}", f"{row['ms_p95']:.0f}", f"{row['ms_max']:.0f}",
             f"{row['cpu_ms_p50']:.0f}", row["describe"]) for row in result["rows"]]
    return "\n".join([
        f"One {result['seconds']:g} s utterance per call ({result['clip']}), {result['threads']} CPU threads, "
        f"{result['repeats']} interleaved calls per model; host load average during timing "
        f"{result['host_load_average_1min']:.1f}. CPU ms: the process's CPU time per call, all threads summed "
        "(less sensitive to other load than wall time).", "",
        markdown_table(("model", "ms p50", "ms p95", "ms max", "CPU ms p50", "how it runs"), rows)]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ensemble", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", type=int, default=5, help="ensemble members K (default 5)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per clip length (default 3)")
    parser.add_argument("--seconds", type=float, nargs="+", default=[1.0, 2.5, 5.0], metavar="S",
                        help="clip durations in seconds (default 1 2.5 5)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--tiny", action="store_true", help="tiny random backbone (a smoke run, seconds)")
    ns = parser.parse_args(argv)
    if ns.heads < 1 or ns.repeats < 1 or any(s <= 0 for s in ns.seconds):
        print("error: --heads and --repeats must be >= 1 and --seconds > 0", file=sys.stderr)
        return 2
    return finish_cli(lambda: run(ns.heads, ns.repeats, tuple(ns.seconds), ns.tiny), table, ns.json, indent=1)


if __name__ == "__main__":
    sys.exit(main())
