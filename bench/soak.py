"""Soak test: stream a long session of looped real speech through the headless engine and watch
memory, threads, drops and the timeline; then check a 2-hour timeline reloads in under a second.

    python -m bench.soak [--minutes 30] [--pace fast|realtime] [--model FOLDER] [--json out.json]

--minutes is minutes of AUDIO streamed. --pace realtime releases it at the speed of a live
microphone (30 minutes of audio take 30 minutes); --pace fast releases it as fast as the
engine keeps up (nothing dropped), which covers the same audio in a few minutes.
The audio: shared EmoDB clips (../shared/data) and espeak-ng sentences, resampled to
16 kHz, looped and joined with 0.6-2.0 s silences. RSS growth is the median RSS over the
last 5 minutes of audio minus the median over the first 5 minutes after a warm-up
(shorter windows for short runs; the result says which). RSS in MB (10^6 bytes).
"""
from __future__ import annotations

import argparse
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import soundfile as sf
from tqdm import tqdm

from bench.report import finish_cli, measure_table
from models.audio_file import read_mono_16k, to_mono_16k
from realtime.source import END_OF_STREAM, TARGET_RATE_HZ, AudioBlock, ThreadedSource, put_dropping_oldest

DEFAULT_DATA = Path(os.environ.get("VED_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
ESPEAK_SENTENCES = ("I can't believe you did that again.", "Please put the book back on the shelf.",
                    "We are leaving for the station in ten minutes.", "Nobody told me the meeting was cancelled.")
RSS_TARGET_MB = 50.0
RELOAD_TARGET_S = 1.0


@dataclass(frozen=True)
class SoakConfig:
    """minutes: minutes of audio streamed; pace: "realtime" or "fast"; sample_every_s: wall seconds
    between RSS/thread samples (run() uses 5 s at real time, 0.25 s when fast); warmup_audio_s: audio seconds ignored before the growth windows;
    window_audio_s: length (audio seconds) of the first/last RSS windows; block_ms: audio per block."""

    minutes: float = 30.0
    pace: str = "fast"
    sample_every_s: float = 2.0
    warmup_audio_s: float = 60.0
    window_audio_s: float = 300.0
    block_ms: int = 100

    def __post_init__(self) -> None:
        if self.minutes <= 0:
            raise ValueError(f"minutes must be > 0, got {self.minutes}")
        if self.pace not in ("realtime", "fast"):
            raise ValueError(f"pace must be realtime or fast, got {self.pace!r}")
        if self.sample_every_s <= 0 or self.window_audio_s <= 0 or self.warmup_audio_s < 0:
            raise ValueError("sample_every_s and window_audio_s must be > 0, warmup_audio_s >= 0")
        if not 10 <= self.block_ms <= 1000:
            raise ValueError(f"block_ms must be in 10-1000 ms, got {self.block_ms}")


def load_speech_clips(data_dir: Path = DEFAULT_DATA, max_emodb: int = 120) -> tuple[list[np.ndarray], str]:
    """Real speech clips as float32 [samples] at 16 kHz, and a description of where they came from.

    EmoDB clips (every 3rd file, up to max_emodb) plus espeak-ng sentences when available; raises
    FileNotFoundError when neither is there (a soak on synthetic tones would prove little)."""
    clips, origin = [], []
    files = sorted((data_dir / "emodb" / "wav").glob("*.wav"))[::3][:max_emodb]
    for path in files:
        clips.append(read_mono_16k(path))
    if files:
        origin.append(f"{len(files)} EmoDB clips from {data_dir / 'emodb'}")
    if shutil.which("espeak-ng"):
        with tempfile.TemporaryDirectory() as tmp:
            for i, sentence in enumerate(ESPEAK_SENTENCES):
                wav = Path(tmp) / f"s{i}.wav"
                subprocess.run(["espeak-ng", "-w", str(wav), "-s", "150", sentence], check=True,
                               capture_output=True, timeout=60)
                audio, rate = sf.read(str(wav), dtype="float32", always_2d=True)
                clips.append(to_mono_16k(0.8 * audio, rate))
        origin.append(f"{len(ESPEAK_SENTENCES)} espeak-ng sentences")
    if not clips:
        raise FileNotFoundError(f"no EmoDB clips under {data_dir / 'emodb' / 'wav'} and no espeak-ng")
    return clips, " + ".join(origin)


class LoopingSpeechSource(ThreadedSource):
    """Loops `clips` (float32 [samples] at 16 kHz) joined with 0.6-2.0 s of silence until `total_s`
    seconds of audio are produced, as int16 AudioBlocks from its own thread.

    pace "realtime": blocks released on the audio clock, the oldest dropped when the queue is full
    (like a microphone); "fast": waits for room, nothing lost. clips_completed counts clips whose
    last sample was released (the utterances the engine should find); samples_out is the clock.
    """

    thread_name = "ved-soak-source"

    def __init__(self, clips: list[np.ndarray], total_s: float, pace: str = "fast", block_ms: int = 100,
                 seed: int = 0) -> None:
        super().__init__()
        if not clips:
            raise ValueError("LoopingSpeechSource needs at least one clip")
        self.clips = clips
        self.total_samples = int(total_s * TARGET_RATE_HZ)
        self.pace = pace
        self.block = TARGET_RATE_HZ * block_ms // 1000
        self.rng = np.random.default_rng(seed)
        self.description = f"looped speech ({total_s / 60:.1f} min of audio, {pace})"
        self.dropped_blocks = 0
        self.samples_out = 0
        self.clips_completed = 0

    def _segments(self):
        """(audio float32 [n], is_clip) forever: silence, clip, silence, clip..."""
        i = 0
        while True:
            gap = np.zeros(int(self.rng.uniform(0.6, 2.0) * TARGET_RATE_HZ), np.float32)
            gap += (1e-4 * self.rng.standard_normal(len(gap))).astype(np.float32)
            yield gap, False
            yield self.clips[i % len(self.clips)], True
            i += 1

    def _run(self, out_q: "queue.Queue", stop_event: threading.Event) -> None:
        started = time.monotonic()
        pending: list[np.ndarray] = []
        pending_len = 0
        clip_ends: list[int] = []   # sample index where each clip in flight ends
        segments = self._segments()
        produced = 0
        try:
            while self.samples_out < self.total_samples:
                while pending_len < self.block:
                    audio, is_clip = next(segments)
                    pending.append(audio)
                    pending_len += len(audio)
                    produced += len(audio)
                    if is_clip:
                        clip_ends.append(produced)
                joined = np.concatenate(pending)
                piece, rest = joined[:self.block], joined[self.block:]
                pending, pending_len = [rest], len(rest)
                block = AudioBlock(start_s=self.samples_out / TARGET_RATE_HZ,
                                   samples=np.clip(piece * 32767.0, -32768, 32767).astype(np.int16))
                self.samples_out += len(piece)
                if not self._release(block, out_q, stop_event, started):
                    return
                while clip_ends and clip_ends[0] <= min(self.samples_out, self.total_samples):
                    clip_ends.pop(0)
                    self.clips_completed += 1
        finally:
            self._finish(out_q, stop_event)

    def _finish(self, out_q: "queue.Queue", stop_event: threading.Event) -> None:
        """END_OF_STREAM always arrives; at fast pace it waits for room instead of dropping audio."""
        while self.pace == "fast" and not (self._stop.is_set() or stop_event.is_set()):
            try:
                out_q.put(END_OF_STREAM, timeout=0.1)
                return
            except queue.Full:
                continue
        self.dropped_blocks += put_dropping_oldest(out_q, END_OF_STREAM)

    def _release(self, block: AudioBlock, out_q: "queue.Queue", stop_event: threading.Event,
                 started: float) -> bool:
        """False when stopping."""
        if self.pace == "realtime":
            delay = started + self.samples_out / TARGET_RATE_HZ - time.monotonic()
            if delay > 0 and (self._stop.wait(delay) or stop_event.is_set()):
                return False
            self.dropped_blocks += put_dropping_oldest(out_q, block)
            return True
        while not (self._stop.is_set() or stop_event.is_set()):
            try:
                out_q.put(block, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False


def load_soak_model(model_dir: str | None, scratch: Path):
    """(Classifier, description): the given bundle, else models/default/, else an untrained tiny
    Conformer bundle written to `scratch` (same code path; its probabilities mean nothing)."""
    from realtime.wiring import DEFAULT_BUNDLE_DIR, load_model

    if model_dir:
        return load_model(model_dir, "cpu"), f"bundle {model_dir}"
    from models.bundle import holds_model, save_bundle

    if holds_model(DEFAULT_BUNDLE_DIR):
        return load_model(None, "cpu"), f"default bundle {DEFAULT_BUNDLE_DIR}"
    from models.registry import build_model

    model = build_model("conformer-v1", d_model=64, n_blocks=1, n_heads=2, subsampling_channels=16)
    folder = save_bundle(scratch / "untrained-conformer", model, "conformer-v1",
                         meta={"training": {"note": "untrained, soak benchmark only"}})
    return load_model(str(folder), "cpu"), "UNTRAINED tiny Conformer (models/default/ not present yet)"


def rss_growth(samples: list[dict], total_audio_s: float, cfg: SoakConfig) -> dict:
    """Median RSS of the last window minus median RSS of the first window after the warm-up.

    samples: [{"audio_s", "rss_mb", ...}]; windows shrink to a quarter of the post-warm-up span
    for short runs."""
    warmup = min(cfg.warmup_audio_s, 0.1 * total_audio_s)
    window = min(cfg.window_audio_s, max((total_audio_s - warmup) / 4, 1e-9))
    first = [s["rss_mb"] for s in samples if warmup <= s["audio_s"] <= warmup + window]
    last = [s["rss_mb"] for s in samples if s["audio_s"] >= total_audio_s - window]
    if not first or not last:
        return {"rss_growth_mb": None, "window_audio_s": round(window, 1), "warmup_audio_s": round(warmup, 1)}
    return {"rss_growth_mb": round(float(np.median(last) - np.median(first)), 1),
            "rss_first_window_mb": round(float(np.median(first)), 1),
            "rss_last_window_mb": round(float(np.median(last)), 1),
            "window_audio_s": round(window, 1), "warmup_audio_s": round(warmup, 1)}


def timeline_reload(hours: float = 2.0, partials_per_utterance: int = 3, folder: Path | None = None) -> dict:
    """Write a `hours`-long timeline with TimelineWriter (one utterance per second of session plus
    partial windows and hourly statuses), then time load_timeline() + view()."""
    from realtime.timeline import TimelineWriter, load_timeline
    from realtime.types import EmotionPrediction, EngineStatus, SessionSummary

    # fsync per line costs ms on a disk; a RAM folder keeps the writing quick (reading is measured).
    base = folder or (Path("/dev/shm") if Path("/dev/shm").is_dir() else None)
    rng = np.random.default_rng(0)
    utterances = int(hours * 3600)
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        path = Path(tmp) / "two-hours.jsonl"
        with TimelineWriter(path, {"app": "VED", "bench": "soak timeline reload"}) as writer:
            for i in tqdm(range(utterances), desc="writing timeline", unit="utt", leave=False, mininterval=2):
                start = float(i)
                for k in range(partials_per_utterance):
                    probs = rng.dirichlet(np.ones(6)).astype(np.float32)
                    writer.write_prediction(EmotionPrediction.from_probs(
                        start, start + 0.3 * (k + 1), probs, "conformer-v3.2", 12.0, kind="partial"))
                writer.write_prediction(EmotionPrediction.from_probs(
                    start, start + 0.95, rng.dirichlet(np.ones(6)).astype(np.float32), "conformer-v3.2", 30.0))
                if i % 3600 == 0:
                    writer.write_status(EngineStatus("running", "hourly status", model="conformer-v3.2"))
            writer.write_summary(SessionSummary(utterances, utterances * partials_per_utterance, 30.0, 40.0,
                                                0, 0, 0, 0.0, {"conformer-v3.2": utterances}))
        size_mb = path.stat().st_size / 1e6
        started = time.perf_counter()
        session = load_timeline(path)
        shown = len(session.view())
        seconds = time.perf_counter() - started
    return {"hours": hours, "utterances": len(session.utterances()), "partials": len(session.partials()),
            "lines": 2 + len(session.predictions) + len(session.statuses), "file_mb": round(size_mb, 1),
            "shown_in_review": shown, "reload_s": round(seconds, 3), "reload_target_s": RELOAD_TARGET_S}


def run(minutes: float = 30.0, pace: str = "fast", model_dir: str | None = None, data_dir: Path = DEFAULT_DATA,
        threads: int = 2, reload_hours: float = 2.0, sample_every_s: float | None = None) -> dict:
    """Stream `minutes` of looped speech through the engine; returns the figures (see the module doc)."""
    import torch

    from realtime.engine import Engine, EngineConfig
    from realtime.timeline import TimelineWriter, load_timeline

    cfg = SoakConfig(minutes=minutes, pace=pace,
                     sample_every_s=sample_every_s or (5.0 if pace == "realtime" else 0.25))
    torch.set_num_threads(threads)
    clips, audio_origin = load_speech_clips(data_dir)
    total_s = minutes * 60.0
    process = psutil.Process()
    with tempfile.TemporaryDirectory(prefix="ved-soak-") as tmp:
        classifier, model_note = load_soak_model(model_dir, Path(tmp))
        source = LoopingSpeechSource(clips, total_s, pace=pace, block_ms=cfg.block_ms)
        timeline = TimelineWriter(Path(tmp) / "soak.jsonl", {"bench": "soak", "input": source.description})
        engine = Engine(source, classifier, EngineConfig(compute_device="cpu"), timeline=timeline)
        samples: list[dict] = []
        wall_start, cpu_start = time.monotonic(), process.cpu_times()
        engine.start()
        finished = False
        limit_s = total_s * 1.5 + 120 if pace == "realtime" else 6 * 3600
        with tqdm(total=int(total_s), unit="audio s", desc=f"soak ({pace})", mininterval=5, leave=False) as bar:
            while not finished and time.monotonic() - wall_start < limit_s:
                finished = engine.wait(cfg.sample_every_s)
                audio_s = source.samples_out / TARGET_RATE_HZ
                samples.append({"wall_s": round(time.monotonic() - wall_start, 1), "audio_s": round(audio_s, 1),
                                "rss_mb": round(process.memory_info().rss / 1e6, 1),
                                "os_threads": process.num_threads(), "py_threads": threading.active_count()})
                bar.update(max(0, min(int(audio_s), bar.total) - bar.n))
        wall_s = time.monotonic() - wall_start
        cpu_end = process.cpu_times()
        summary = engine.stop()
        session = load_timeline(timeline.path)
    audio_s = source.samples_out / TARGET_RATE_HZ
    # Threads are compared while the stream runs: after the warm-up, before the source ends (its
    # thread and the segmenter's then exit by design).
    warmup_s = min(cfg.warmup_audio_s, 0.1 * audio_s)
    settled = [s for s in samples if warmup_s <= s["audio_s"] < audio_s - 1.0] or samples
    os_threads = [s["os_threads"] for s in settled]
    py_threads = [s["py_threads"] for s in settled]
    result = {
        "minutes_audio": round(audio_s / 60, 2), "pace": pace, "finished": finished,
        "wall_s": round(wall_s, 1), "speed_x_realtime": round(audio_s / max(wall_s, 1e-9), 2),
        "audio": audio_origin, "model": model_note,
        "clips_streamed": source.clips_completed, "utterance_predictions": len(session.utterances()),
        "partial_predictions": len(session.partials()), "summary_utterances": summary.utterances,
        "dropped_utterances": summary.dropped_utterances, "dropped_partials": summary.dropped_partials,
        "dropped_audio_blocks": summary.dropped_audio_blocks,
        # At fast pace utterances wait in the queue by design: these latencies include that wait.
        "latency_p50_ms": summary.latency_p50_ms, "latency_p95_ms": summary.latency_p95_ms,
        "cpu_percent_of_one_core": round(100 * ((cpu_end.user + cpu_end.system)
                                                - (cpu_start.user + cpu_start.system)) / max(wall_s, 1e-9), 1),
        "rss_start_mb": samples[0]["rss_mb"] if samples else None,
        "rss_peak_mb": max((s["rss_mb"] for s in samples), default=None),
        **rss_growth(samples, audio_s, cfg),
        "os_threads_min": min(os_threads, default=None), "os_threads_max": max(os_threads, default=None),
        "py_threads_min": min(py_threads, default=None), "py_threads_max": max(py_threads, default=None),
        "timeline_torn_lines": session.torn_lines, "timeline_complete": session.complete,
        "samples": samples,
    }
    result["threads_stable"] = (result["py_threads_min"] == result["py_threads_max"]
                                and (result["os_threads_max"] or 0) - (result["os_threads_min"] or 0) <= 2)
    if reload_hours > 0:
        result["timeline_reload"] = timeline_reload(reload_hours)
    return result


def table(result: dict) -> str:
    """Markdown table of run()'s figures (the RSS samples are left to the JSON)."""
    lines = [f"Soak: {result['minutes_audio']} min of audio at pace {result['pace']} in {result['wall_s']} s wall "
             f"({result['speed_x_realtime']}x real time); audio: {result['audio']}; model: {result['model']}", "",
             measure_table(result, skip=("samples", "timeline_reload", "audio", "model"))]
    reload = result.get("timeline_reload")
    if reload:
        lines += ["", f"Timeline reload: {reload['hours']} h session, {reload['utterances']} utterances + "
                      f"{reload['partials']} partials, {reload['file_mb']} MB: loaded in {reload['reload_s']} s "
                      f"(target < {reload['reload_target_s']} s)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="minutes of audio to stream (default 30)")
    parser.add_argument("--pace", choices=("fast", "realtime"), default="fast",
                        help="fast: as fast as the engine keeps up (default); realtime: live-microphone speed")
    parser.add_argument("--model", help="bundle folder (default models/default/, else an untrained tiny Conformer)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--reload-hours", type=float, default=2.0,
                        help="hours of session in the timeline reload check (0 skips it; default 2)")
    parser.add_argument("--json", type=Path, help="also write the figures (with every RSS sample) to this file")
    args = parser.parse_args(argv)
    return finish_cli(lambda: run(args.minutes, args.pace, args.model, threads=args.threads,
                                  reload_hours=args.reload_hours), table, args.json)


if __name__ == "__main__":
    sys.exit(main())
