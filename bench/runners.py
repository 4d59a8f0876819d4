"""The runner of each `python -m bench` benchmark: options in (BenchContext), one BenchOutcome out
(status, markdown table, target verdicts, raw result). bench/__main__.py picks, runs and reports them."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bench.report import TargetCheck, markdown_table

CONFORMERS = ("conformer-v1", "conformer-v3.1", "conformer-v3.2")


@dataclass
class BenchContext:
    """What every benchmark runner gets: options, the data folder, the fast model folder."""

    quick: bool
    threads: int
    data_dir: Path
    data_note: str
    scratch: Path
    soak_minutes: float
    soak_pace: str
    model_dir: str | None = None
    model_note: str = ""
    primary_dir: str | None = None   # --primary: a primary bundle or ensemble folder
    crema_minutes: float | None = None   # --crema-minutes: length of each CREMA-D replay
    measured: dict[str, Any] = field(default_factory=dict)   # results so far, for cross-bench ratios


@dataclass
class BenchOutcome:
    """status: "ok", "error" or "not available"; table: markdown; checks: target verdicts."""

    name: str
    status: str
    seconds: float = 0.0
    error: str = ""
    table: str = ""
    checks: list[TargetCheck] = field(default_factory=list)
    result: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "seconds": round(self.seconds, 1), "error": self.error,
                "checks": [c.to_dict() for c in self.checks], "result": self.result}


def untrained_bundle(scratch: Path, name: str) -> str:
    """A registry model with random weights saved as a bundle in scratch: real compute, for timing only."""
    from models.bundle import is_bundle_folder, save_bundle
    from models.registry import build_model

    folder = scratch / f"untrained-{name}"
    if not is_bundle_folder(folder):
        save_bundle(folder, build_model(name), name, meta={"training": {"note": "untrained, benchmark timing only"}})
    return str(folder)


def default_model_name(ctx: BenchContext) -> str:
    from models.bundle import peek_bundle_meta

    name = ((peek_bundle_meta(ctx.model_dir or "") or {}).get("model") or {}).get("name")
    return name if isinstance(name, str) else "conformer-v3.2"


# ---------------------------------------------------------------- one runner per benchmark
def run_vad_cost(ctx: BenchContext, module) -> BenchOutcome:
    result = module.run(seconds=20.0 if ctx.quick else 120.0, block_ms=30, data_dir=ctx.data_dir)
    total = next(r for r in result["rows"] if r["stage"] == "front end total")
    checks = [TargetCheck("VAD + resampling CPU per second of audio", total["ms_per_audio_s"], "report", 0,
                          "ms/s", f"{100 * total['realtime_factor']:.2f}% of one core in real time")]
    return BenchOutcome("vad_cost", "ok", table=module.table(result), checks=checks, result=result)


def run_model_speed(ctx: BenchContext, module) -> BenchOutcome:
    default = default_model_name(ctx)
    names = None if not ctx.quick else sorted({"cnn", "conformer-v3.1", default})
    result = module.run(clip_s=2.5, runs=10 if ctx.quick else 50, warmup=3 if ctx.quick else 15,
                        threads=ctx.threads, names=names)
    rows = {r["model"]: r for r in result["rows"]}
    baseline = rows.get("cnn", {}).get("predict_mean_ms")
    ratio_rows = [(name, r["predict_mean_ms"], r["predict_mean_ms"] / baseline if baseline else None)
                  for name, r in rows.items()]
    table = (module.table(result) + "\n\nRatio to the CNN baseline measured in this run (predict mean):\n\n"
             + markdown_table(("model", "predict mean ms", "x CNN"), ratio_rows))
    checks = [TargetCheck("conformer-v3.1 forward, 2.5 s utterance (mean)",
                          rows.get("conformer-v3.1", {}).get("forward_mean_ms"), "<=", 15, "ms",
                          "log-mel front end included; training target of the log-mel family")]
    checks += [TargetCheck(f"{name} predict p95, model only (2.5 s clip)", rows.get(name, {}).get("predict_p95_ms"),
                           "<=", 50, "ms", "model alone; the end-to-end figure is in pipeline")
               for name in dict.fromkeys(("conformer-v3.1", default))]
    return BenchOutcome("model_speed", "ok", table=table, checks=checks, result=result)


def _pipeline_checks(label: str, result: dict[str, Any]) -> list[TargetCheck]:
    return [TargetCheck(f"{label} p95 per utterance, end-to-end in the engine", result.get("engine_latency_p95_ms"),
                        "<=", 50, "ms", "utterance available -> result; + VAD hangover for end of speech -> on "
                        f"disk: p95 {result.get('end_of_speech_to_written_p95_ms')} ms")]


def run_pipeline(ctx: BenchContext, module) -> BenchOutcome:
    duration_s = 45.0 if ctx.quick else 180.0
    default = default_model_name(ctx)
    result = module.run(duration_s=duration_s, classifiers="fallback", model_dir=ctx.model_dir,
                        data_dir=ctx.data_dir, threads=ctx.threads)
    checks = _pipeline_checks(f"{default} (the default model)", result) + [
        TargetCheck("live trace update interval while speaking (p95)", result.get("partial_interval_p95_ms"), "<=",
                    500, "ms", f"p50 {result.get('partial_interval_p50_ms')} ms, max "
                    f"{result.get('partial_interval_max_ms')} ms; windows are due every 500 ms of audio (hop_ms), "
                    "the rest is inference-time jitter"),
        TargetCheck("dropped utterances at real-time pace", result.get("dropped_utterances"), "==", 0, "",
                    f"{duration_s:.0f} s replay, {result.get('utterances')} utterances"),
    ]
    table = f"Default model ({default}):\n\n" + module.table(result)
    speed = ctx.measured.get("model_speed")
    if speed:
        model_p95 = {r["model"]: r["predict_p95_ms"] for r in speed["rows"]}.get(default)
        if model_p95 and result.get("engine_latency_p95_ms"):
            result["engine_over_model_p95"] = round(result["engine_latency_p95_ms"] / model_p95, 2)
    if default not in CONFORMERS:   # the 50 ms target is the Conformer's: measure it too
        conformer = module.run(duration_s=duration_s * 2 / 3, classifiers="fallback",
                               model_dir=untrained_bundle(ctx.scratch, "conformer-v3.1"), data_dir=ctx.data_dir,
                               threads=ctx.threads)
        checks = _pipeline_checks("conformer-v3.1 (untrained weights, same compute)", conformer) + checks
        table += "\n\nconformer-v3.1 (untrained weights, same compute):\n\n" + module.table(conformer)
        result["conformer_v3_1"] = conformer
    return BenchOutcome("pipeline", "ok", table=table, checks=checks, result=result)


def run_ensemble(ctx: BenchContext, module) -> BenchOutcome:
    seconds = (1.0, 2.5, 4.0)
    result = module.run(heads=5, repeats=3 if ctx.quick else 7, seconds=seconds, tiny=ctx.quick, progress=True)
    ctx.measured["ensemble"] = result   # kept in the JSON even if reading it below fails
    row = result["configs"]["shared"]["by_seconds"][str(4.0)]
    # bench.ensemble has reported its per-utterance time under these names (newest first).
    statistic = next((key for key in ("ms_p95", "p95_ms", "ms_median", "ms_per_utterance") if key in row), None)
    worst_ratio = max(r["shared_over_single"] for r in result["ratios"].values())
    kind = "tiny random backbone: indicative only" if ctx.quick else "base-plus-shaped backbone"
    checks = [
        TargetCheck("5-fold shared ensemble, 4 s utterance", row.get(statistic) if statistic else None, "<=", 400,
                    "ms", f"{statistic or 'no time'} of {result['repeats']} calls, {kind}"),
        TargetCheck("shared ensemble / single model (worst clip length)", round(worst_ratio, 2), "<=", 1.3, "x",
                    "both measured in this run"),
    ]
    return BenchOutcome("ensemble", "ok", table=module.table(result), checks=checks, result=result)


def run_whisper_ensemble(ctx: BenchContext, module) -> BenchOutcome:
    """5-head whisper-ultimate ensembles (tiny.en, base; one shared encoder pass) and the primary
    (--primary, else models/primary/ when installed) beside the fast model."""
    from realtime.wiring import resolve_primary

    primary = ctx.primary_dir or resolve_primary(None)
    trained = {f"primary ({Path(primary).name})": str(primary)} if primary else None
    result = module.run_whisper(ctx.model_dir, seconds=4.0, repeats=10 if ctx.quick else 40, trained=trained)
    fast = next((r for r in result["rows"] if r["model"] == "fast model"), None)
    checks = [TargetCheck(f"{r['model']}, 4 s utterance p95", round(r["ms_p95"], 1), "<=", result["target_p95_ms"],
                          "ms", f"fast model p95 {fast['ms_p95']:.0f} ms in the same run" if fast else "")
              for r in result["rows"] if r is not fast]
    return BenchOutcome("whisper_ensemble", "ok", table=module.whisper_table(result), checks=checks, result=result)


def run_pipeline_ensemble(ctx: BenchContext, module) -> BenchOutcome:
    """Real-time replay with the 5-head WavLM ensemble as primary and the default model as fallback."""
    from bench.ensemble import write_fixture

    duration_s = 45.0 if ctx.quick else 120.0
    primary = write_fixture(ctx.scratch / "ensemble-fixture", heads=5, tiny=ctx.quick)
    result = module.run(duration_s=duration_s, classifiers="primary+fallback", model_dir=ctx.model_dir,
                        primary_dir=str(primary), data_dir=ctx.data_dir, threads=ctx.threads)
    kind = "tiny random backbone" if ctx.quick else "base-plus-shaped backbone"
    checks = [TargetCheck("dropped utterances at real-time pace, ensemble primary", result.get("dropped_utterances"),
                          "==", 0, "", f"{duration_s:.0f} s replay, {kind}; utterances per model "
                          f"{result.get('models')}, fallback share {result.get('fallback_share')}")]
    return BenchOutcome("pipeline_ensemble", "ok", table=module.table(result), checks=checks, result=result)


def run_speculation(ctx: BenchContext, module) -> BenchOutcome:
    """Fast model and primary, each with and without classifying during the VAD hangover. The
    primary: --primary, else models/primary/ when installed, else a generated WavLM ensemble."""
    from bench.ensemble import write_fixture
    from realtime.wiring import resolve_primary

    duration_s = 30.0 if ctx.quick else 90.0
    installed = ctx.primary_dir or resolve_primary(None)
    if installed:
        primary, kind = str(installed), f"primary {installed}"
    else:
        primary = str(write_fixture(ctx.scratch / "speculation-primary", heads=5, tiny=ctx.quick))
        kind = "5-head WavLM ensemble, " + ("tiny" if ctx.quick else "base-plus-shaped") + " random backbone"
    result = module.speculation_ab(duration_s, ctx.model_dir, primary, ctx.data_dir, ctx.threads)
    result["primary"] = kind
    rows = {(r["setup"], r["speculate"]): r for r in result["rows"]}
    fast, fast_off = rows[("fast model", True)], rows[("fast model", False)]
    prim, prim_off = rows[("primary + fast fallback", True)], rows[("primary + fast fallback", False)]
    hangover = fast["hangover_ms"]
    primary_limit = max(hangover, prim["primary_compute_p95_ms"]) + 60
    checks = [
        TargetCheck("fast model, end of speech -> on disk p95, speculation", fast["end_of_speech_to_written_p95_ms"],
                    "<=", hangover + 60, "ms", f"without: {fast_off['end_of_speech_to_written_p95_ms']} ms; "
                    f"wasted share {fast['speculative_wasted_share']}; {duration_s:.0f} s replay"),
        TargetCheck("primary, end of speech -> on disk p95, speculation", prim["end_of_speech_to_written_p95_ms"],
                    "<=", round(primary_limit), "ms", f"max(hangover, primary compute p95 "
                    f"{prim['primary_compute_p95_ms']} ms) + 60; without: {prim_off['end_of_speech_to_written_p95_ms']}"
                    f" ms; wasted share {prim['speculative_wasted_share']}; fallback share {prim['fallback_share']}; "
                    f"{kind}"),
        TargetCheck("live trace update interval p95, deadline-scheduled windows", fast["partial_interval_p95_ms"],
                    "<=", 500, "ms", f"fast model; with the primary: {prim['partial_interval_p95_ms']} ms"),
        TargetCheck("dropped utterances, 4 real-time replays", sum(r["dropped_utterances"] for r in rows.values()),
                    "==", 0, "", f"{sum(r['utterances'] for r in rows.values())} utterances"),
    ]
    return BenchOutcome("speculation", "ok", table=module.speculation_table(result), checks=checks, result=result)


# Fewer live results than this in a replay (a starved host) judge nothing: the verdict is n/a.
MIN_LIVE_SAMPLES = 10


def crema_replay_checks(result: dict[str, Any], before: dict[str, Any], duration_s: float) -> list[TargetCheck]:
    """Targets of the CREMA-D replay: `result` with live traces from the primary, `before` from
    the fast model on the same replay (bench.pipeline.run figures)."""
    n_4s = result["primary_utterances_upto_4s"]
    replay = f"{duration_s / 60:g} min replay"
    load = (f"load average {result['load_average_before']}-{result['load_average_after']} "
            f"(fast-model-traces run {before['load_average_before']}-{before['load_average_after']})")
    judged = result["utterances_with_partial"] >= MIN_LIVE_SAMPLES
    enough = result["partials"] >= MIN_LIVE_SAMPLES
    few = f"too few live results to judge ({result['partials']} partials); "
    return [
        TargetCheck("primary, utterance <= 4 s available -> result p95 (CREMA-D replay)",
                    result["primary_latency_upto_4s_p95_ms"] if n_4s else None, "<=", 150, "ms",
                    f"{n_4s} primary utterances up to 4 s; primary compute p95 {result['primary_compute_p95_ms']} ms"),
        TargetCheck("fallback share, real-time CREMA-D replay", result["fallback_share"], "<=", 0.05, "",
                    f"{replay}, {result['clips']} clips; utterances per model {result['models']}"),
        TargetCheck("dropped utterances, real-time CREMA-D replay", result["dropped_utterances"], "==", 0, "",
                    f"{result['utterances']} utterances"),
        TargetCheck("last live result agrees with the final result, live traces from the primary (CREMA-D replay)",
                    result["last_partial_agreement"] if judged else None, ">=", 0.80, "",
                    f"{result['utterances_with_partial']} of {result['utterances']} utterances had a live result; "
                    f"fast-model traces (before): {before['last_partial_agreement']} over "
                    f"{before['utterances_with_partial']}; {replay}"),
        TargetCheck("live trace update interval p95, live traces from the primary (CREMA-D replay)",
                    result["partial_interval_p95_ms"] if enough else None, "<=", 500, "ms",
                    f"{'' if enough else few}fast-model traces: {before['partial_interval_p95_ms']} ms; {load}"),
        TargetCheck("live-window fallback share, live traces from the primary (CREMA-D replay)",
                    result["partial_fallback_share"] if enough else None, "<=", 0.05, "",
                    f"{'' if enough else few}partials per model {result['partial_models']}; branch compute p95 "
                    f"{result['live_trace_model_compute_p95_ms']} ms; {replay}"),
    ]


def run_crema_replay(ctx: BenchContext, module) -> BenchOutcome:
    """The shipped pair on English speech: CREMA-D clips replayed in real time (10 min; --quick 1 min;
    --crema-minutes N) with the primary (--primary, else models/primary/) and the fast model as its
    fallback. Twice on the same replay: live traces from the primary's cheapest branch (the engine
    default; every target is read from this run) and, for comparison, from the fast model."""
    from realtime.wiring import resolve_primary

    primary = ctx.primary_dir or resolve_primary(None)
    if primary is None:
        return BenchOutcome("crema_replay", "not available", error="no primary: pass --primary or install models/primary/")
    duration_s = 60.0 * ctx.crema_minutes if ctx.crema_minutes else (60.0 if ctx.quick else 600.0)
    runs = {on_primary: module.run(duration_s=duration_s, classifiers="primary+fallback", model_dir=ctx.model_dir,
                                   primary_dir=str(primary), data_dir=ctx.data_dir, threads=ctx.threads,
                                   corpus="crema-d", live_traces_on_primary=on_primary)
            for on_primary in (True, False)}
    result, before = runs[True], runs[False]
    result["fast_model_traces"] = before
    checks = crema_replay_checks(result, before, duration_s)
    result["primary_dir"] = str(primary)
    table = (module.table({k: v for k, v in result.items() if k != "fast_model_traces"})
             + "\n\nSame replay, live traces from the fast model (before):\n\n" + module.table(before))
    return BenchOutcome("crema_replay", "ok", table=table, checks=checks, result=result)


def run_soak(ctx: BenchContext, module) -> BenchOutcome:
    result = module.run(minutes=ctx.soak_minutes, pace=ctx.soak_pace, model_dir=ctx.model_dir,
                        data_dir=ctx.data_dir, threads=ctx.threads, reload_hours=2.0)
    reload = result.get("timeline_reload", {})
    window = f"median of last vs first {result['window_audio_s']:.0f} s of audio after {result['warmup_audio_s']:.0f} s"
    checks = [
        TargetCheck(f"soak RSS growth ({result['minutes_audio']} min audio, {ctx.soak_pace})",
                    result.get("rss_growth_mb"), "<", 50, "MB", window),
        TargetCheck("soak thread count stable (1 = yes)", int(result["threads_stable"]), "==", 1, "",
                    f"OS threads {result['os_threads_min']}-{result['os_threads_max']}, "
                    f"Python threads {result['py_threads_min']}-{result['py_threads_max']}"),
        TargetCheck("soak dropped utterances", result["dropped_utterances"], "==", 0, "",
                    f"{result['utterance_predictions']} predictions for {result['clips_streamed']} clips streamed"),
        TargetCheck("2-hour timeline reload", reload.get("reload_s"), "<", 1.0, "s",
                    f"{reload.get('utterances')} utterances + {reload.get('partials')} partials, "
                    f"{reload.get('file_mb')} MB"),
    ]
    return BenchOutcome("soak", "ok", table=module.table(result), checks=checks, result=result)


def run_train_cv(ctx: BenchContext, module) -> BenchOutcome:
    """The default recipe's full speaker-independent CV, timed (the shared copy of its corpus only)."""
    if not ctx.data_note.startswith("real speech"):
        return BenchOutcome("train_cv", "not available",
                            error="needs the shared copy of the default model's corpus (../shared/data: emodb/ or crema-d/)")
    result = module.run(ctx.data_dir, threads=ctx.threads, epochs=2 if ctx.quick else None)
    scope = "2 epochs (--quick): indicative only" if ctx.quick else "the default model's recorded recipe"
    checks = [TargetCheck("full speaker-independent CV of the default recipe", result["wall_minutes"], "<=", 15, "min",
                          f"{result['folds']} folds, {scope}; macro-F1 {result['macro_f1_mean']:.3f} ± "
                          f"{result['macro_f1_std']:.3f}")]
    return BenchOutcome("train_cv", "ok", table=module.table(result), checks=checks, result=result)


RUNNERS: dict[str, Callable[[BenchContext, Any], BenchOutcome]] = {
    "vad_cost": run_vad_cost, "model_speed": run_model_speed, "pipeline": run_pipeline,
    "ensemble": run_ensemble, "whisper_ensemble": run_whisper_ensemble, "pipeline_ensemble": run_pipeline_ensemble,
    "speculation": run_speculation, "crema_replay": run_crema_replay, "soak": run_soak, "train_cv": run_train_cv}
