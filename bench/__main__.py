"""VED benchmarks front door: run every available benchmark, print ONE markdown report, write JSON.

    python -m bench                          # all benchmarks, default sizes (tens of minutes on 2 cores)
    python -m bench --quick                  # small sizes, a few minutes; figures are indicative only
    python -m bench --only pipeline soak     # just these
    python -m bench --soak-minutes 30        # the full 30-minute REAL-TIME soak (takes 30 minutes)
    python -m bench --only speculation --primary FOLDER   # classify-during-hangover A/B with this primary
    python -m bench --only crema_replay --crema-minutes 3  # the shipped pair on two 3-minute CREMA-D replays

Units: latencies and intervals in milliseconds (ms), memory in MB (10^6 bytes), durations of
audio in seconds or minutes as named, CPU as percent of one core, ratios are plain numbers
measured against a baseline in the same run (e.g. shared ensemble / single model).
Targets (from the issue): Conformer p95 <= 50 ms per utterance end-to-end; 5-fold ensemble
<= 400 ms for utterances up to 4 s; live trace update at least every 500 ms while speaking;
0 dropped utterances at real-time pace (also with the ensemble as primary); shared-backbone
ensemble <= 1.3x one model; VAD + resampling cost per second of audio (reported); soak RSS
growth < 50 MB with a stable thread count; a 2-hour timeline reloads in < 1 s; a 2.5 s
utterance through the Conformer in <= 15 ms; the default recipe's full speaker-independent CV
in <= 15 minutes.
Real clips come from ../shared/data (or $VED_SHARED_DATA) when present, else generated speech
(espeak-ng); the report says which. Models: models/default/ when trained, else an untrained
full-size conformer-v3.2 bundle (same compute, meaningless probabilities; the report says so).
Each benchmark runs in its own try block: a failure is one line in the report, not an abort.
"""
from __future__ import annotations

import argparse
import importlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import machine_info, markdown_table, targets_table
from bench.runners import RUNNERS, BenchContext, BenchOutcome, untrained_bundle

BENCHMARKS = ("vad_cost", "model_speed", "pipeline", "ensemble", "whisper_ensemble", "pipeline_ensemble", "speculation",
              "crema_replay", "soak", "train_cv")
# Benchmarks whose code lives in another benchmark's module.
MODULE_OF = {"pipeline_ensemble": "pipeline", "speculation": "pipeline", "whisper_ensemble": "ensemble",
             "crema_replay": "pipeline"}
# Benchmarks that run the fast model (alone, or as the primary's fallback).
USES_FAST_MODEL = ("model_speed", "pipeline", "whisper_ensemble", "pipeline_ensemble", "speculation", "crema_replay",
                   "soak")
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "latest.json"


# ---------------------------------------------------------------- inputs shared by the benchmarks
def find_data(scratch: Path) -> tuple[Path, str]:
    """The shared data folder when it holds EmoDB, else a generated stand-in with the same layout
    (emodb/wav/*.wav, 22,050 Hz): espeak-ng sentences, or voiced tones when espeak-ng is missing."""
    from bench.vad_cost import DEFAULT_DATA

    if sorted((DEFAULT_DATA / "emodb" / "wav").glob("*.wav")):
        return DEFAULT_DATA, f"real speech: EmoDB clips from {DEFAULT_DATA}"
    import soundfile as sf

    folder = scratch / "generated-data" / "emodb" / "wav"
    folder.mkdir(parents=True)
    rate = 22_050
    sentences = ["The train leaves at noon.", "I told you not to touch that.", "What a lovely surprise this is.",
                 "Please leave me alone now.", "We lost everything in the fire.", "Nobody answered the phone."]
    if shutil.which("espeak-ng"):
        for i in range(36):
            wav = folder / f"gen{i:02d}.wav"
            subprocess.run(["espeak-ng", "-w", str(wav), "-s", str(130 + 5 * (i % 6)), "-p", str(30 + 7 * (i % 7)),
                            sentences[i % len(sentences)]], check=True, capture_output=True, timeout=60)
        return folder.parent.parent, "GENERATED speech (espeak-ng; shared EmoDB data not found)"
    t = np.arange(2 * rate) / rate
    for i in range(36):
        f0 = 120 + 10 * i + 20 * np.sin(2 * np.pi * 3 * t)
        voiced = sum(np.sin(k * 2 * np.pi * np.cumsum(f0) / rate) / k for k in range(1, 6))
        envelope = (np.sin(np.pi * t / 2.0) > 0.3).astype(np.float32)
        sf.write(str(folder / f"tone{i:02d}.wav"), (0.2 * voiced * envelope).astype(np.float32), rate)
    return folder.parent.parent, "GENERATED voiced tones (no shared data, no espeak-ng): VAD figures only"


def find_model(scratch: Path) -> tuple[str, str]:
    """(bundle folder, note): models/default/ when trained, else an untrained full-size conformer-v3.2."""
    from realtime.wiring import DEFAULT_BUNDLE_DIR

    from models.bundle import holds_model, peek_bundle_meta

    if holds_model(DEFAULT_BUNDLE_DIR):
        name = (peek_bundle_meta(DEFAULT_BUNDLE_DIR) or {}).get("model", {}).get("name", "ensemble")
        return str(DEFAULT_BUNDLE_DIR), f"trained default bundle {DEFAULT_BUNDLE_DIR} ({name})"
    folder = untrained_bundle(scratch, "conformer-v3.2")
    return folder, "UNTRAINED full-size conformer-v3.2 (models/default/ not present): timing only"


def run_one(name: str, ctx: BenchContext) -> BenchOutcome:
    """Import bench.<name> and run it; any failure is one line in the report."""
    started = time.monotonic()
    try:
        module = importlib.import_module(f"bench.{MODULE_OF.get(name, name)}")
        outcome = RUNNERS[name](ctx, module)
    except Exception as exc:  # one benchmark's failure must not cost the others
        where = traceback.extract_tb(exc.__traceback__)[-1]
        message = " ".join(str(exc).split()) or type(exc).__name__
        outcome = BenchOutcome(name, "error", error=f"{type(exc).__name__}: {message} "
                                                    f"({Path(where.filename).name}:{where.lineno})",
                               result=ctx.measured.get(name))
    outcome.seconds = time.monotonic() - started
    if outcome.result is not None:
        ctx.measured[name] = outcome.result
    return outcome


def render(outcomes: list[BenchOutcome], machine: dict[str, Any], ctx: BenchContext, soak_note: str) -> str:
    """The one markdown report."""
    lines = [f"# VED benchmarks ({'quick' if ctx.quick else 'full'} run, "
             f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')})", "",
             f"Machine: {machine['cpu']}, {machine['usable_cores']} usable cores ({machine['logical_cores']} logical), "
             f"load average {machine['load_average_1min']} at start, Python {machine['python']}, torch "
             f"{machine['torch']}, {machine['torch_threads']} torch threads, CUDA {machine['cuda']}.",
             f"Audio: {ctx.data_note}.", f"Fast model: {ctx.model_note or '-'}.", f"Soak: {soak_note}.", "",
             "## Targets", "", targets_table([c for o in outcomes for c in o.checks]) or "(none measured)", ""]
    lines += ["## Benchmarks", "", markdown_table(("benchmark", "status", "seconds", "note"),
                                                  [(o.name, o.status, round(o.seconds, 1), o.error) for o in outcomes])]
    for o in outcomes:
        lines += ["", f"### {o.name}", ""]
        lines.append(o.table if o.status == "ok" else f"{o.status}: {o.error}")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (20-45 s of audio, 5-min soak, tiny "
                        "ensemble backbone): minutes instead of tens of minutes; figures indicative only")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, metavar="NAME",
                        help=f"run only these benchmarks ({', '.join(BENCHMARKS)})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file (default "
                        "bench/results/latest.json)")
    parser.add_argument("--soak-minutes", type=float, metavar="N",
                        help="run the soak on N minutes of audio at REAL-TIME pace (takes N minutes); default: "
                             "30 minutes of audio processed as fast as possible (5 with --quick)")
    parser.add_argument("--soak-pace", choices=("fast", "realtime"),
                        help="override the soak pace (default: realtime with --soak-minutes, else fast)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--crema-minutes", type=float, metavar="N",
                        help="minutes of CREMA-D speech in each crema_replay run, replayed in REAL TIME twice "
                             "(live traces from the primary, then from the fast model): about 2 x N minutes "
                             "(default 10, 1 with --quick)")
    parser.add_argument("--primary", metavar="FOLDER", help="primary bundle or ensemble folder for the speculation "
                        "and crema_replay benchmarks (default: models/primary/ when installed; speculation "
                        "otherwise generates a 5-head WavLM ensemble with random weights)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads < 1 or any(v is not None and v <= 0 for v in (args.soak_minutes, args.crema_minutes)):
        print("error: --threads must be >= 1, --soak-minutes and --crema-minutes > 0", file=sys.stderr)
        return 2
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_name(args.out.name + ".check").write_text("")
        args.out.with_name(args.out.name + ".check").unlink()
    except OSError as exc:
        print(f"error: cannot write results to {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(args.threads)
    soak_minutes = args.soak_minutes or (5.0 if args.quick else 30.0)
    soak_pace = args.soak_pace or ("realtime" if args.soak_minutes else "fast")
    soak_note = (f"{soak_minutes:g} min of audio at {soak_pace} pace"
                 + ("" if soak_pace == "realtime" else
                    "; the 30-minute real-time soak is `python -m bench --only soak --soak-minutes 30`"))
    selected = args.only or list(BENCHMARKS)
    with tempfile.TemporaryDirectory(prefix="ved-bench-") as tmp:
        scratch = Path(tmp)
        data_dir, data_note = find_data(scratch)
        ctx = BenchContext(quick=args.quick, threads=args.threads, data_dir=data_dir, data_note=data_note,
                           scratch=scratch, soak_minutes=soak_minutes, soak_pace=soak_pace)
        machine = machine_info(args.threads)
        ctx.primary_dir = args.primary
        ctx.crema_minutes = args.crema_minutes
        if any(name in selected for name in USES_FAST_MODEL):
            try:
                ctx.model_dir, ctx.model_note = find_model(scratch)
            except Exception as exc:  # the model-free benchmarks still run
                ctx.model_note = f"no model available ({type(exc).__name__}: {' '.join(str(exc).split())})"
        outcomes = []
        for name in BENCHMARKS:
            if name in selected:
                print(f"[bench] {name} ...", file=sys.stderr, flush=True)
                outcomes.append(run_one(name, ctx))
                print(f"[bench] {name}: {outcomes[-1].status} in {outcomes[-1].seconds:.0f} s", file=sys.stderr,
                      flush=True)
        print(render(outcomes, machine, ctx, soak_note))
    payload = {"created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
               "quick": args.quick, "machine": machine, "audio": data_note, "model": ctx.model_note,
               "soak": soak_note, "benchmarks": {o.name: o.to_dict() for o in outcomes}}
    args.out.write_text(json.dumps(payload, indent=1, default=float) + "\n")
    print(f"results written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
