"""Whole headless pipeline on a real-time replay of real speech: latency, live-trace cadence, drops, CPU, memory.

    python -m bench.pipeline [--duration-s 60] [--classifiers fallback|primary+fallback]
                             [--model FOLDER] [--primary FOLDER] [--no-speculation] [--json out.json]

The input is EmoDB clips (../shared/data) joined with 0.8-2.0 s of silence (every fourth
pair back to back, for longer utterances), written to a temporary WAV and replayed by
FileSource at real-time pace, exactly as `main.py --headless --input` would.

Figures:
* engine latency: EmotionPrediction.latency_ms (utterance available -> result);
* end of speech -> timeline written: from the moment the block holding the utterance's last
  sample reached the engine to the moment its timeline line was fsync'd (includes the VAD
  hangover, which is what a user waits for);
* partial trace interval: wall time between consecutive live (partial) results within one
  utterance (the hop is 500 ms of audio);
* CPU: process CPU time / wall time over the session (100% = one core); peak RSS sampled
  every 0.25 s during the session;
* model compute: wall time of each predict call of that model (speculative ones included);
* speculation (EngineConfig.speculate): results classified during the VAD hangover and used,
  and the wasted share = discarded / (used + discarded) speculative classifications;
* live traces (EngineConfig.live_traces_on_primary): partials per model, the share the
  fallback made, and the last-partial agreement: for each utterance, the last live result
  shown before its final one (window starting inside the utterance) has the same top class;
* host load: the 1-minute load average before and after the replay (the CPU is shared).

`speculation_ab` runs the fast model and the primary, each with and without speculation.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import soundfile as sf
from tqdm import tqdm

from bench.report import finish_cli, markdown_table, measure_table
from models.classifier import Classifier
from realtime.engine import Engine, EngineConfig
from realtime.source import AudioSource
from realtime.timeline import TimelineWriter
from realtime.types import EmotionPrediction

DEFAULT_DATA = Path(os.environ.get("VED_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CLASSIFIER_CHOICES = ("fallback", "primary+fallback")


REPLAY_CORPORA = {"emodb": ("emodb/wav", "*.wav"), "crema-d": ("crema-d/AudioFLAC", "*.flac")}


def write_replay_file(path: Path, duration_s: float, data_dir: Path = DEFAULT_DATA, seed: int = 0,
                      corpus: str = "emodb") -> int:
    """Clips of `corpus` (REPLAY_CORPORA) with random silences up to duration_s -> WAV at the
    corpus's rate (EmoDB 22,050 Hz in name order; CREMA-D 16 kHz, shuffled by `seed` so actors and
    emotions mix). Returns clips used."""
    if corpus not in REPLAY_CORPORA:
        raise ValueError(f"unknown replay corpus {corpus!r}; choose one of: {', '.join(REPLAY_CORPORA)}")
    folder, pattern = REPLAY_CORPORA[corpus]
    files = sorted((data_dir / folder).glob(pattern))
    if not files:
        raise FileNotFoundError(f"no {corpus} clips under {data_dir / folder} (set VED_SHARED_DATA)")
    rng = np.random.default_rng(seed)
    if corpus == "crema-d":
        files = [files[i] for i in rng.permutation(len(files))]
    parts, total, rate, used = [], 0, 22_050, 0
    while total < duration_s * rate:
        audio, rate = sf.read(str(files[used % len(files)]), dtype="float32")
        gap = 0.0 if used % 8 == 3 else rng.uniform(0.8, 2.0)
        parts += [audio, np.zeros(int(gap * rate), np.float32)]
        total += len(audio) + int(gap * rate)
        used += 1
    audio = np.concatenate(parts)[: int(duration_s * rate)]
    audio += (1e-4 * rng.standard_normal(len(audio))).astype(np.float32)
    sf.write(str(path), audio, rate, subtype="PCM_16")
    return used


class _StampingQueue:
    """Proxy of the engine's audio queue that records (block end in stream seconds, monotonic time)."""

    def __init__(self, target, stamps: list[tuple[float, float]]) -> None:
        self._target = target
        self._stamps = stamps

    def _stamp(self, item) -> None:
        samples = getattr(item, "samples", None)
        if samples is not None:
            self._stamps.append((item.start_s + len(samples) / 16_000, time.monotonic()))

    def put(self, item, block: bool = True, timeout: float | None = None) -> None:
        self._target.put(item, block, timeout)
        self._stamp(item)

    def put_nowait(self, item) -> None:
        self._target.put_nowait(item)
        self._stamp(item)

    def get_nowait(self):
        return self._target.get_nowait()


class _TimedSource(AudioSource):
    """Wraps a source so the bench knows when each block reached the engine."""

    def __init__(self, inner: AudioSource) -> None:
        super().__init__()
        self.inner = inner
        self.description = inner.description
        self.stamps: list[tuple[float, float]] = []

    @property
    def dropped_blocks(self) -> int:  # type: ignore[override]
        return self.inner.dropped_blocks

    def start(self, out_q, stop_event) -> None:
        self.inner.status_listener = self.status_listener
        self.inner.start(_StampingQueue(out_q, self.stamps), stop_event)

    def stop(self, timeout_s: float = 2.0) -> None:
        self.inner.stop(timeout_s)


class _TimedTimeline(TimelineWriter):
    """Records the monotonic time at which each prediction line was on disk."""

    def __init__(self, path: Path, header: dict) -> None:
        super().__init__(path, header)
        self.written: list[tuple[EmotionPrediction, float]] = []

    def write_prediction(self, prediction: EmotionPrediction) -> None:
        super().write_prediction(prediction)
        self.written.append((prediction, time.monotonic()))


class _TimedClassifier(Classifier):
    """Delegates to a Classifier and records the wall time of every predict call (ms)."""

    def __init__(self, inner: Classifier) -> None:
        self.inner = inner
        self.name, self.labels, self.device = inner.name, inner.labels, inner.device
        self.times_ms: list[float] = []
        self._branch: _TimedClassifier | None = None

    def predict(self, waveforms):
        started = time.perf_counter()
        out = self.inner.predict(waveforms)
        self.times_ms.append((time.perf_counter() - started) * 1000.0)
        return out

    def warmup(self, seconds: float = 1.0):
        return self.inner.warmup(seconds)

    def cheapest_branch(self) -> Classifier:
        """The inner model's branch, timed on its own (this wrapper when the model has none)."""
        if self._branch is None:
            inner = self.inner.cheapest_branch()
            self._branch = self if inner is self.inner else _TimedClassifier(inner)
        return self._branch

    @property
    def checkpoint_hash(self) -> str:
        return self.inner.checkpoint_hash


def _percentiles(values: list[float]) -> tuple[float, float, float]:
    if not values:
        return 0.0, 0.0, 0.0
    p50, p95 = np.percentile(values, [50, 95])
    return float(p50), float(p95), float(max(values))


def last_partial_agreement(predictions: list[EmotionPrediction]) -> dict:
    """predictions in the order they were written. For each utterance, the last partial written
    since the previous utterance whose window starts inside it; -> {"utterances", "with_partial",
    "agreeing"} and "agreement" = agreeing / with_partial (0.0 when none)."""
    since_last: list[EmotionPrediction] = []
    utterances = with_partial = agreeing = 0
    for p in predictions:
        if p.kind == "partial":
            since_last.append(p)
            continue
        utterances += 1
        last = next((q for q in reversed(since_last) if p.start_s - 1e-6 <= q.start_s < p.end_s), None)
        since_last = []
        if last is not None:
            with_partial += 1
            agreeing += int(last.label == p.label)
    return {"utterances": utterances, "with_partial": with_partial, "agreeing": agreeing,
            "agreement": round(agreeing / with_partial, 3) if with_partial else 0.0}


def run(duration_s: float = 60.0, classifiers: str = "fallback", model_dir: str | None = None,
        primary_dir: str | None = None, data_dir: Path = DEFAULT_DATA, threads: int = 2,
        speculate: bool = True, corpus: str = "emodb", live_traces_on_primary: bool = True) -> dict:
    """Replay `duration_s` of speech in real time through the engine; returns the figures as a dict.

    classifiers: "fallback" (the fast model only) or "primary+fallback" (primary_dir, or a second
    copy of the fast model when None, which then measures the two-model bookkeeping only).
    speculate: classify during the VAD hangover (the engine default) or not.
    live_traces_on_primary: partial windows on the primary's cheapest branch (the engine
    default) or always on the fast model.
    """
    if classifiers not in CLASSIFIER_CHOICES:
        raise ValueError(f"classifiers must be one of {CLASSIFIER_CHOICES}, got {classifiers!r}")
    import torch

    from realtime.sources import FileSource
    from realtime.wiring import load_model

    torch.set_num_threads(threads)
    fallback = _TimedClassifier(load_model(model_dir, "cpu"))
    primary = None
    if classifiers == "primary+fallback":
        primary = _TimedClassifier(load_model(primary_dir or model_dir, "cpu"))
        if primary_dir is None:
            primary.name = f"{primary.name}-as-primary"
    cfg = EngineConfig(compute_device="cpu", speculate=speculate, live_traces_on_primary=live_traces_on_primary)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "replay.wav"
        clips = write_replay_file(wav, duration_s, data_dir, corpus=corpus)
        source = _TimedSource(FileSource(wav, pace="realtime"))
        timeline = _TimedTimeline(Path(tmp) / "session.jsonl", {"bench": "pipeline"})
        process = psutil.Process()
        peak_rss = [process.memory_info().rss]
        done = threading.Event()

        def sample_rss() -> None:
            while not done.wait(0.25):
                peak_rss[0] = max(peak_rss[0], process.memory_info().rss)

        sampler = threading.Thread(target=sample_rss, daemon=True)
        load_before = os.getloadavg()[0]
        engine = Engine(source, fallback, cfg, primary=primary, timeline=timeline)
        engine.start()
        sampler.start()
        cpu_start, wall_start = process.cpu_times(), time.monotonic()
        finished = False
        with tqdm(total=round(duration_s), unit="s", desc="real-time replay", leave=False,
                  mininterval=5.0) as bar:
            while not finished and time.monotonic() - wall_start < duration_s * 3 + 60:
                finished = engine.wait(0.5)
                heard_s = int(source.stamps[-1][0]) if source.stamps else 0
                bar.update(max(0, min(heard_s, bar.total) - bar.n))
        cpu_end, wall_end = process.cpu_times(), time.monotonic()
        load_after = os.getloadavg()[0]
        live_model = engine.live_trace_model()
        summary = engine.stop()
        done.set()
        sampler.join(1.0)
    cpu_s = (cpu_end.user + cpu_end.system) - (cpu_start.user + cpu_start.system)
    ends = np.array([end for end, _ in source.stamps])
    times = np.array([t for _, t in source.stamps])
    utterances = [(p, t) for p, t in timeline.written if p.kind == "utterance"]
    to_written, primary_to_written = [], []
    for p, written_at in utterances:
        i = int(np.searchsorted(ends, p.end_s - 1e-6))
        if i < len(times):
            to_written.append((written_at - times[i]) * 1000.0)
            if primary is not None and p.model == primary.name:
                primary_to_written.append(to_written[-1])
    intervals, previous = [], None
    for p, written_at in timeline.written:
        if p.kind != "partial":
            previous = None
            continue
        if previous is not None and p.start_s <= previous[0].end_s:
            intervals.append((written_at - previous[1]) * 1000.0)
        previous = (p, written_at)
    engine_p50, engine_p95, engine_max = _percentiles([p.latency_ms for p, _ in utterances])
    primary_upto_4s = [p.latency_ms for p, _ in utterances
                       if primary is not None and p.model == primary.name and p.end_s - p.start_s <= 4.0]
    eos_p50, eos_p95, eos_max = _percentiles(to_written)
    speculated = summary.speculative_used + summary.speculative_discarded
    compute = {"fast_model": fallback.times_ms, "primary": primary.times_ms if primary else [],
               "live_trace_model": live_model.times_ms if live_model not in (None, primary) else []}
    partials = [p for p, _ in timeline.written if p.kind == "partial"]
    partial_models: dict[str, int] = {}
    for p in partials:
        partial_models[p.model] = partial_models.get(p.model, 0) + 1
    agreement = last_partial_agreement([p for p, _ in timeline.written])
    gap_p50, gap_p95, gap_max = _percentiles(intervals)
    return {
        "duration_s": duration_s, "classifiers": classifiers, "clips": clips, "finished": finished,
        "models": summary.models, "utterances": summary.utterances, "partials": summary.partials,
        "engine_latency_p50_ms": round(engine_p50, 1), "engine_latency_p95_ms": round(engine_p95, 1),
        "engine_latency_max_ms": round(engine_max, 1),
        "end_of_speech_to_written_p50_ms": round(eos_p50, 1),
        "end_of_speech_to_written_p95_ms": round(eos_p95, 1),
        "end_of_speech_to_written_max_ms": round(eos_max, 1),
        "end_of_speech_to_written_primary_p95_ms": round(_percentiles(primary_to_written)[1], 1),
        "primary_utterances": len(primary_to_written), "hangover_ms": cfg.vad.hangover_ms,
        "primary_latency_upto_4s_p95_ms": round(_percentiles(primary_upto_4s)[1], 1),
        "primary_utterances_upto_4s": len(primary_upto_4s), "corpus": corpus,
        **{f"{name}_compute_{stat}_ms": round(value, 1) for name, times in compute.items()
           for stat, value in zip(("p50", "p95"), _percentiles(times)[:2])},
        "live_traces_on_primary": live_traces_on_primary and live_model is not None,
        "partial_models": partial_models,
        "partial_fallback_share": round(sum(p.fallback for p in partials) / len(partials), 4) if partials else 0.0,
        "last_partial_agreement": agreement["agreement"],
        "utterances_with_partial": agreement["with_partial"],
        "speculate": speculate, "speculative_used": summary.speculative_used,
        "speculative_discarded": summary.speculative_discarded,
        "speculative_wasted_share": round(summary.speculative_discarded / speculated, 3) if speculated else 0.0,
        "partial_interval_p50_ms": round(gap_p50, 1), "partial_interval_p95_ms": round(gap_p95, 1),
        "partial_interval_max_ms": round(gap_max, 1),
        "dropped_utterances": summary.dropped_utterances, "dropped_partials": summary.dropped_partials,
        "skipped_stale_partials": engine.skipped_stale_partials,
        "dropped_audio_blocks": summary.dropped_audio_blocks, "fallback_share": summary.fallback_share,
        "cpu_percent_of_one_core": round(100.0 * cpu_s / max(wall_end - wall_start, 1e-9), 1),
        "cpu_count": psutil.cpu_count(), "peak_rss_mb": round(peak_rss[0] / 2**20, 1),
        "load_average_before": round(load_before, 2), "load_average_after": round(load_after, 2),
    }


def speculation_ab(duration_s: float, model_dir: str | None, primary_dir: str | None, data_dir: Path = DEFAULT_DATA,
                   threads: int = 2) -> dict:
    """The fast model alone and the primary (+ fast fallback), each with and without speculation,
    on the same replay; returns {"rows": [...]} with one row per run."""
    rows = []
    for classifiers in CLASSIFIER_CHOICES:
        for speculate in (False, True):
            result = run(duration_s, classifiers, model_dir, primary_dir, data_dir, threads, speculate=speculate)
            rows.append({"setup": "fast model" if classifiers == "fallback" else "primary + fast fallback",
                         **result})
    return {"duration_s": duration_s, "rows": rows}


SPECULATION_COLUMNS = (
    ("setup", "setup"), ("speculation", "speculate"), ("utterances", "utterances"),
    ("utterances by primary", "primary_utterances"),
    ("end of speech -> on disk p50 ms", "end_of_speech_to_written_p50_ms"),
    ("p95 ms", "end_of_speech_to_written_p95_ms"),
    ("primary-made p95 ms", "end_of_speech_to_written_primary_p95_ms"),
    ("primary compute p95 ms", "primary_compute_p95_ms"), ("fast compute p95 ms", "fast_model_compute_p95_ms"),
    ("partial interval p95 ms", "partial_interval_p95_ms"), ("speculative used", "speculative_used"),
    ("wasted share", "speculative_wasted_share"), ("dropped utterances", "dropped_utterances"),
    ("fallback share", "fallback_share"))


def speculation_table(result: dict) -> str:
    return markdown_table([title for title, _ in SPECULATION_COLUMNS],
                          [[str(row.get(key)) for _, key in SPECULATION_COLUMNS] for row in result["rows"]])


def table(result: dict) -> str:
    return measure_table(result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, default=60.0, help="seconds of speech replayed in real time")
    parser.add_argument("--classifiers", choices=CLASSIFIER_CHOICES, default="fallback")
    parser.add_argument("--model", help="fast model bundle folder (default models/default/)")
    parser.add_argument("--primary", help="primary model folder for --classifiers primary+fallback")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--no-speculation", action="store_true", help="do not classify during the VAD hangover")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    return finish_cli(lambda: run(args.duration_s, args.classifiers, args.model, args.primary, threads=args.threads,
                                  speculate=not args.no_speculation), table, args.json)


if __name__ == "__main__":
    sys.exit(main())
