"""Benchmark: one shared WavLM pass feeding K heads vs one head vs K separate backbones.

CPU only, torch.set_num_threads(2), a full WavLM shaped like microsoft/wavlm-base-plus with
random weights (built in a temporary folder, ~380 MB; the compute is real, the weights are not).
Each configuration runs in a fresh process so its peak RSS is its own:

    single    one wavlm-ultimate head on its frozen backbone (load_bundle_classifier)
    shared    K-head ensemble, one backbone pass per batch (load_ensemble, shared_backbone)
    separate  K heads, each with its own backbone copy and its own pass (the naive ensemble)

Times are per utterance (batch of one, as the real-time engine sends them): median of
`repeats` calls after a warm-up. RTF = compute time / audio duration (< 1 is faster than real time).

    python -m bench.ensemble [--heads 5] [--repeats 3] [--seconds 1 2.5 5] [--json out.json] [--tiny]
"""
from __future__ import annotations

import argparse
import json
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

CONFIGS = ("single", "shared", "separate")
THREADS = 2
TARGET_SHARED_OVER_SINGLE = 1.3


def _write_fixture(root: Path, heads: int, tiny: bool) -> Path:
    """Backbone folder + K frozen-head bundles + ensemble.json under root; returns the ensemble folder."""
    import torch

    from models.backbone import make_base_plus_shaped, make_tiny_backbone
    from models.bundle import save_bundle
    from models.registry import build_model

    backbone = root / "backbone"
    if tiny:
        make_tiny_backbone(backbone, "wavlm")
    else:
        make_base_plus_shaped(backbone)
    ensemble = root / "ensemble"
    for k in range(heads):
        torch.manual_seed(k)
        model = build_model("wavlm-ultimate", backbone_dir=str(backbone))
        save_bundle(ensemble / f"fold{k}", model, "wavlm-ultimate", {"fold": k, "git_commit": "benchmark"})
    (ensemble / "ensemble.json").write_text(json.dumps({
        "format_version": 1, "kind": "ensemble", "members": [f"fold{k}" for k in range(heads)],
        "shared_backbone": True, "backbone_dir": str(backbone)}))
    return ensemble


def _build_classifier(config: str, ensemble: Path):
    from models.bundle import load_bundle_classifier, read_bundle_json
    from models.ensemble import EnsembleClassifier, load_ensemble
    from models.labels import EMOTIONS
    from models.registry import build_model
    from models.torch_classifier import TorchClassifier

    if config == "single":
        return load_bundle_classifier(ensemble / "fold0", "cpu")
    if config == "shared":
        return load_ensemble(ensemble, "cpu")
    from safetensors.torch import load_file

    members = []
    for folder in sorted(p for p in ensemble.iterdir() if p.is_dir()):
        meta = read_bundle_json(folder)
        model = build_model(meta["model"]["name"], **meta["model"]["args"])  # its own backbone copy
        model.load_state_dict(load_file(str(folder / "model.safetensors")))
        members.append(TorchClassifier(model, name=folder.name, device="cpu"))
    classifier = EnsembleClassifier("separate", "cpu", EMOTIONS, [], members, [m.name for m in members])
    classifier.warmup()
    return classifier


def _measure(config: str, ensemble: str, seconds: list[float], repeats: int) -> dict[str, Any]:
    """Runs in a fresh process: load one configuration, time it per clip length, report peak RSS."""
    import torch

    torch.set_num_threads(THREADS)
    started = time.perf_counter()
    classifier = _build_classifier(config, Path(ensemble))
    load_s = time.perf_counter() - started
    rng = np.random.default_rng(0)
    rows = {}
    for duration in seconds:
        clip = (0.05 * rng.standard_normal(int(duration * 16_000))).astype(np.float32)
        classifier.predict([clip])  # warm-up for this length
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            classifier.predict([clip])
            times.append(time.perf_counter() - t0)
        median = statistics.median(times)
        rows[str(duration)] = {"ms_per_utterance": 1000.0 * median, "rtf": median / duration}
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB
    return {"config": config, "describe": classifier.describe(), "load_s": load_s,
            "load_average_1min": os.getloadavg()[0],
            "peak_rss_mb": peak_rss_mb, "by_seconds": rows}


def run(heads: int = 5, repeats: int = 3, seconds: tuple[float, ...] = (1.0, 2.5, 5.0),
        tiny: bool = False, progress: bool = True) -> dict[str, Any]:
    """Build the fixture in a temp folder, measure every configuration; returns the results dict."""
    from tqdm import tqdm

    results: dict[str, Any] = {"backbone": "tiny random WavLM" if tiny else "base-plus-shaped WavLM (random)",
                               "heads": heads, "threads": THREADS, "repeats": repeats,
                               "seconds": list(seconds), "configs": {}}
    with tempfile.TemporaryDirectory(prefix="ved-bench-ensemble-") as tmp:
        ensemble = _write_fixture(Path(tmp), heads, tiny)
        context = multiprocessing.get_context("spawn")  # a fresh process per config: honest peak RSS
        for config in tqdm(CONFIGS, desc="configurations", unit="config", disable=not progress):
            with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
                results["configs"][config] = pool.submit(
                    _measure, config, str(ensemble), list(seconds), repeats).result()
    ratios = {}
    for duration in seconds:
        key = str(duration)
        single = results["configs"]["single"]["by_seconds"][key]["ms_per_utterance"]
        shared = results["configs"]["shared"]["by_seconds"][key]["ms_per_utterance"]
        separate = results["configs"]["separate"]["by_seconds"][key]["ms_per_utterance"]
        ratios[key] = {"shared_over_single": shared / single, "separate_over_shared": separate / shared}
    results["ratios"] = ratios
    results["target_shared_over_single"] = TARGET_SHARED_OVER_SINGLE
    results["meets_target"] = all(r["shared_over_single"] <= TARGET_SHARED_OVER_SINGLE for r in ratios.values())
    return results


def markdown_table(results: dict[str, Any]) -> str:
    """One row per configuration and clip length, then the ratio rows."""
    lines = [f"Backbone: {results['backbone']}, {results['heads']} heads, {results['threads']} CPU threads, "
             f"median of {results['repeats']} calls, batch of one utterance; host load average "
             f"(1 min, other processes included) shown per config.", "",
             "| config | clip (s) | ms / utterance | RTF | peak RSS (MB) | model load (s) | host load avg |",
             "|---|---|---|---|---|---|---|"]
    for config in CONFIGS:
        entry = results["configs"][config]
        for duration in results["seconds"]:
            row = entry["by_seconds"][str(duration)]
            lines.append(f"| {config} | {duration:g} | {row['ms_per_utterance']:.0f} | {row['rtf']:.3f} | "
                         f"{entry['peak_rss_mb']:.0f} | {entry['load_s']:.1f} | "
                         f"{entry['load_average_1min']:.1f} |")
    lines += ["", "| clip (s) | shared / single | separate / shared |", "|---|---|---|"]
    for duration in results["seconds"]:
        r = results["ratios"][str(duration)]
        lines.append(f"| {duration:g} | {r['shared_over_single']:.2f} | {r['separate_over_shared']:.2f} |")
    verdict = "meets" if results["meets_target"] else "MISSES"
    lines.append(f"\nshared/single target <= {results['target_shared_over_single']}: {verdict}")
    return "\n".join(lines) + "\n"


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
    results = run(ns.heads, ns.repeats, tuple(ns.seconds), ns.tiny)
    print(markdown_table(results))
    if ns.json:
        ns.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
