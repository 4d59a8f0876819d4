"""Partial windows during ongoing speech, and the one segmenting object the engine uses.

`PartialWindowScheduler` is a pure class fed a time-ordered stream of items: audio
arrays (the continuation of the 16 kHz stream) and the segmenter's events. While
speech is ongoing it emits `PartialWindow`s, each holding the last window_ms of audio
of the utterance in progress; nothing in silence. The first comes once min_window_ms
of speech exist, on the grid start_s + k * hop_ms. A cut at max_utterance_ms is not an
end of speech (no SpeechEnded), so windows carry on across it; SpeechEnded stops them.

Pauses: `UtteranceFixed` (the trailing silence has lasted tail_ms, the utterance's samples
are final) brings one closing window, the last window_ms of that span, ending where the
utterance will end (unless the last window is under hop_ms / 2 old), and no more windows
until `SpeechResumed` (or a max-length cut, whose continuation may hold none); then they go
on hop_ms after the last one. A window cut later in the pause would hold the sentence's end
padded with silence, which reads differently from the sentence (offline, on 71 CREMA-D
utterances, the tiny.en branch's last live window agreed with the primary's final result
0.66 of the time when windows went on through the pause, 0.78 when they stopped at it);
the final result is due at the end of the hangover anyway.

Deadlines: hop_ms is the longest time between two updates the user sees. Without
feedback the windows follow the grid, and any jitter in inference time lands on top
of hop_ms. With feedback (`PartialShown`: the result for the latest window was shown
when the stream stood at shown_s) the next window is due by shown_s + hop_ms, so it is
cut `lead` earlier: lead = the largest of the last LAG_HISTORY lags (window end ->
shown, which includes queueing, inference and block arrival). The next lag exceeds the
largest of n earlier ones with probability 1/(n + 1) when lags are alike, so n = 50
keeps ~98 % of updates within hop_ms. The next cut stays
between hop_ms / 2 and hop_ms after the last one. Feedback about an older window (the
stream already raced ahead, e.g. a file replayed as fast as possible) is ignored.

`StreamSegmenter` wraps a `Segmenter` and a scheduler: it feeds the segmenter one
frame-aligned piece at a time so both see the same clock, which makes the event
stream identical whatever block sizes the audio arrives in.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from realtime.resample import int16_to_float
from realtime.source import AudioBlock
from realtime.types import (PartialShown, PartialWindow, SegmentEvent, SpeechEnded, SpeechResumed, SpeechStarted,
                            UtteranceFixed)
from realtime.vad import Segmenter, SegmenterConfig

LAG_HISTORY = 50
# A live window longer than this is no longer live; it also bounds the window buffer.
MAX_WINDOW_MS = 60_000


@dataclass(frozen=True)
class PartialWindowConfig:
    """hop_ms: time between windows; window_ms: longest window; min_window_ms: no window
    before this much speech; enabled=False turns partial windows off."""

    hop_ms: int = 500
    window_ms: int = 2_000
    min_window_ms: int = 1_000
    sample_rate_hz: int = 16_000
    enabled: bool = True

    def __post_init__(self) -> None:
        for name in ("hop_ms", "window_ms"):
            if not 0 < getattr(self, name) <= MAX_WINDOW_MS:
                raise ValueError(f"{name} must be in (0, {MAX_WINDOW_MS}] ms, got {getattr(self, name)}")
        if not 0 <= self.min_window_ms <= self.window_ms:
            raise ValueError(f"min_window_ms must be in [0, window_ms={self.window_ms}], got {self.min_window_ms}")
        if self.sample_rate_hz <= 0:
            raise ValueError(f"sample_rate_hz must be > 0, got {self.sample_rate_hz}")


class PartialWindowScheduler:
    """Pure scheduler: push(audio [n] int16/float32 | SpeechStarted | SpeechEnded | UtteranceFixed |
    SpeechResumed | PartialShown | other event) -> list[PartialWindow]. Audio must be pushed before
    the events it caused."""

    def __init__(self, cfg: PartialWindowConfig | None = None) -> None:
        self.cfg = cfg or PartialWindowConfig()
        self._window_len = self.cfg.sample_rate_hz * self.cfg.window_ms // 1000
        self.reset()

    def reset(self, start_s: float = 0.0) -> None:
        """Forget audio and speech state; the next sample is at start_s."""
        self._origin_s = float(start_s)
        self._samples_seen = 0
        self._ring = np.zeros(self._window_len, dtype=np.float32)   # last window_len samples
        self._speech_start: int | None = None   # sample index (since origin)
        self._next_emit: int | None = None
        self._last_emit: int | None = None      # end of the latest window (sample index)
        self._lags: deque[int] = deque(maxlen=LAG_HISTORY)   # window end -> shown, samples

    @property
    def time_s(self) -> float:
        return self._origin_s + self._samples_seen / self.cfg.sample_rate_hz

    def _index(self, time_s: float) -> int:
        return int(round((time_s - self._origin_s) * self.cfg.sample_rate_hz))

    def push(self, item: np.ndarray | SegmentEvent) -> list[PartialWindow]:
        if isinstance(item, SpeechStarted):
            if self._speech_start is None and self.cfg.enabled:
                self._speech_start = self._index(item.start_s)
                self._next_emit = self._first_emit()
                self._last_emit = None
            else:   # the continuation after a max-length cut, perhaps in a pause: windows go on
                self._resume()
            return []
        if isinstance(item, SpeechEnded):
            self._speech_start = None
            self._next_emit = None
            self._last_emit = None
            return []
        if isinstance(item, PartialShown):
            self._on_shown(item)
            return []
        if isinstance(item, UtteranceFixed):
            return self._close(item)
        if isinstance(item, SpeechResumed):
            self._resume()
            return []
        if not isinstance(item, np.ndarray):
            return []
        audio = int16_to_float(item) if item.dtype == np.int16 else item.astype(np.float32, copy=False)
        windows: list[PartialWindow] = []
        offset = 0
        while self._next_emit is not None and self._samples_seen + len(audio) - offset >= self._next_emit:
            split = offset + self._next_emit - self._samples_seen
            self._append(audio[offset:split])
            offset = split
            windows.append(self._window())
            self._last_emit = self._next_emit
            self._next_emit += self._hop_samples
        self._append(audio[offset:])
        return windows

    def flush(self) -> list[PartialWindow]:
        """Nothing is pending between hops; ends the speech state."""
        self._speech_start = None
        self._next_emit = None
        return []

    def _on_shown(self, shown: PartialShown) -> None:
        """Move the next cut so that its result is due hop_ms after this one was shown."""
        if self._next_emit is None or self._last_emit is None or self._index(shown.end_s) != self._last_emit:
            return
        shown_at = max(self._index(shown.shown_s), self._last_emit)
        self._lags.append(shown_at - self._last_emit)
        due = shown_at + self._hop_samples - max(self._lags)
        earliest = max(self._samples_seen, self._last_emit + self._hop_samples // 2)
        self._next_emit = min(self._last_emit + self._hop_samples, max(due, earliest))

    @property
    def _hop_samples(self) -> int:
        return self.cfg.sample_rate_hz * self.cfg.hop_ms // 1000

    def _close(self, fixed: UtteranceFixed) -> list[PartialWindow]:
        """The pause's closing window (the last window_ms of the fixed span), then no windows."""
        if self._next_emit is None:   # no windows in this utterance, or already paused
            return []
        self._next_emit = None
        end = self._index(fixed.end_s)
        min_len = self.cfg.sample_rate_hz * self.cfg.min_window_ms // 1000
        recent = self._last_emit is not None and end - self._last_emit < self._hop_samples // 2
        if len(fixed.audio) < max(1, min_len) or recent:   # too short, or the last window is recent
            return []
        self._last_emit = end
        audio = fixed.audio[-self._window_len:].astype(np.float32, copy=True)
        return [PartialWindow(start_s=fixed.end_s - len(audio) / self.cfg.sample_rate_hz, end_s=fixed.end_s,
                              audio=audio)]

    def _resume(self) -> None:
        """After a pause: the next window hop_ms after the last one (at least hop_ms / 2 from now,
        so it holds some of the new speech), or, before any, after min_window_ms of speech."""
        if self._speech_start is None or self._next_emit is not None:
            return
        if self._last_emit is None:
            self._next_emit = self._first_emit()
        else:
            self._next_emit = max(self._last_emit + self._hop_samples, self._samples_seen + self._hop_samples // 2)

    def _first_emit(self) -> int:
        assert self._speech_start is not None
        min_len = self.cfg.sample_rate_hz * self.cfg.min_window_ms // 1000
        hops = max(1, -(-min_len // self._hop_samples))
        target = self._speech_start + hops * self._hop_samples
        if target <= self._samples_seen:   # speech confirmed late: next hop boundary from now
            behind = self._samples_seen - target
            target += (behind // self._hop_samples + 1) * self._hop_samples
        return target

    def _append(self, audio: np.ndarray) -> None:
        if len(audio) >= self._window_len:
            self._ring = audio[-self._window_len:].copy()
        elif len(audio):
            self._ring = np.concatenate([self._ring[len(audio):], audio])
        self._samples_seen += len(audio)

    def _window(self) -> PartialWindow:
        assert self._speech_start is not None
        length = min(self._window_len, self._samples_seen - self._speech_start)
        rate = self.cfg.sample_rate_hz
        return PartialWindow(start_s=self._origin_s + (self._samples_seen - length) / rate,
                             end_s=self._origin_s + self._samples_seen / rate,
                             audio=self._ring[self._window_len - length:].copy())


class StreamSegmenter:
    """Segmenter + partial-window scheduler as one pure object (what the engine uses).

    push(block: AudioBlock | int16 [n] | float32 [n]) -> list[SegmentEvent] in stream order
    (SpeechStarted, PartialWindow..., UtteranceFixed, SpeechResumed..., Utterance, SpeechEnded).
    An AudioBlock whose start_s jumps (a reconnected microphone) ends the open utterance and
    moves the clock. push(PartialShown) passes deadline feedback to the window scheduler.
    """

    def __init__(self, segmenter_cfg: SegmenterConfig | None = None,
                 window_cfg: PartialWindowConfig | None = None) -> None:
        self.segmenter = Segmenter(segmenter_cfg)
        self.scheduler = PartialWindowScheduler(window_cfg)
        if self.scheduler.cfg.sample_rate_hz != self.segmenter.cfg.sample_rate_hz:
            raise ValueError("segmenter and partial windows must use the same sample_rate_hz")
        self._frame_len = self.segmenter.cfg.frame_samples
        self._pending = 0   # samples the segmenter holds towards its next frame

    @property
    def in_speech(self) -> bool:
        return self.segmenter.in_speech

    def reset(self, start_s: float = 0.0) -> None:
        self.segmenter.reset(start_s)
        self.scheduler.reset(start_s)
        self._pending = 0

    def push(self, block: AudioBlock | np.ndarray | PartialShown) -> list[SegmentEvent]:
        if isinstance(block, PartialShown):
            return self.scheduler.push(block)   # type: ignore[return-value]  (always [])
        events: list[SegmentEvent] = []
        if isinstance(block, AudioBlock):
            if abs(block.start_s - self.scheduler.time_s) > self.segmenter.cfg.frame_ms / 1000.0:
                events.extend(self.flush())
                self.reset(block.start_s)
            block = block.samples
        samples = np.asarray(block)
        offset = 0
        while offset < len(samples):
            take = min(len(samples) - offset, self._frame_len - self._pending)
            piece = samples[offset:offset + take]
            offset += take
            self._pending = (self._pending + take) % self._frame_len
            seg_events = self.segmenter.push(piece)
            events.extend(self.scheduler.push(piece))
            for event in seg_events:
                events.append(event)
                events.extend(self.scheduler.push(event))
        return events

    def flush(self) -> list[SegmentEvent]:
        """End the open utterance (end of stream)."""
        events: list[SegmentEvent] = list(self.segmenter.flush())
        for event in events:
            self.scheduler.push(event)
        self.scheduler.flush()
        self._pending = 0
        self.scheduler.reset(self.segmenter.time_s)
        return events
