"""Headless console output: one line per utterance, status lines, an end-of-session summary.

`ConsolePrinter` is an engine listener (called from engine threads): it formats under a
lock and writes whole lines, flushed, so a pipe reader sees each result at once.
Predictions go to `out` (stdout); status, drop notices and the summary go to `err` (stderr)
so `main.py --headless > results.txt` keeps only the results.
"""
from __future__ import annotations

import sys
import threading
from typing import TextIO

from realtime.types import DropNotice, EmotionPrediction, EngineStatus, SessionSummary


def format_prediction(p: EmotionPrediction) -> str:
    """"  12.34-  14.10 s  anger     0.81  latency   45 ms  conformer-v1 [fallback] [uncertain]"."""
    tag = (" [fallback]" if p.fallback else "") + (" [uncertain]" if p.uncertain else "")
    kind = "" if p.kind == "utterance" else "  (partial)"
    return (f"{p.start_s:8.2f}-{p.end_s:8.2f} s  {p.label:<8} {p.confidence:5.2f}  "
            f"latency {p.latency_ms:5.0f} ms  {p.model}{tag}{kind}")


def format_summary(s: SessionSummary) -> str:
    """Multi-line human summary of a session."""
    if s.utterances == 0:
        head = "no speech found (0 utterances)"
    else:
        head = (f"{s.utterances} utterances, latency p50 {s.latency_p50_ms:.0f} ms / p95 {s.latency_p95_ms:.0f} ms, "
                f"fallback share {100 * s.fallback_share:.0f}%")
    models = ", ".join(f"{name} x{count}" for name, count in sorted(s.models.items())) or "-"
    return (f"summary: {head}\n"
            f"  partial windows classified: {s.partials}; models: {models}\n"
            f"  dropped: {s.dropped_utterances} utterances, {s.dropped_partials} partial windows, "
            f"{s.dropped_audio_blocks} audio blocks")


class ConsolePrinter:
    """Engine listener for the terminal. show_partials: also print live partial windows."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None, show_partials: bool = False,
                 quiet_status: bool = False) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.show_partials = show_partials
        self.quiet_status = quiet_status
        self.utterances = 0
        self._lock = threading.Lock()
        self._last_drops = DropNotice(0, 0, 0)

    def __call__(self, event: object) -> None:
        if isinstance(event, EmotionPrediction):
            if event.kind == "utterance":
                self.utterances += 1
                self._write(self.out, format_prediction(event))
            elif self.show_partials:
                self._write(self.out, format_prediction(event))
        elif isinstance(event, EngineStatus):
            if not self.quiet_status or event.state in ("error", "warning", "device-lost", "reconnecting"):
                self._write(self.err, f"[{event.state}] {event.message}")
        elif isinstance(event, DropNotice):
            # Partial windows are dropped by design when the model lags; only lost audio or
            # utterances deserve a console line.
            if (event.utterances, event.audio_blocks) != (self._last_drops.utterances,
                                                          self._last_drops.audio_blocks):
                self._write(self.err, f"[drops] {event.utterances} utterances, "
                                      f"{event.audio_blocks} audio blocks lost so far")
            self._last_drops = event

    def print_summary(self, summary: SessionSummary) -> None:
        self._write(self.err, format_summary(summary))

    def _write(self, stream: TextIO, line: str) -> None:
        with self._lock:
            try:
                stream.write(line + "\n")
                stream.flush()
            except (BrokenPipeError, ValueError):
                # The reader went away (`| head`) or the stream is closed: keep the session running.
                pass
