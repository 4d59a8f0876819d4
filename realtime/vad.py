"""Voice-activity segmenter: a stream of 16 kHz samples in, utterance events out.

Pure streaming class (no threads, no I/O): `push(block) -> list[event]`, `flush()`, `reset()`.
A `frame_ms` frame can start speech when WebRTC VAD says speech, its level is above
`min_speech_dbfs` and at least `start_above_floor_db` above the noise floor (quietest
frame of the last `noise_floor_window_ms`): WebRTC VAD alone fires on loud steady noise
and hum. Speech starts when `speech_start_frames` of the last `start_window_frames`
frames qualify; the utterance then reaches back `preroll_ms` before the first of them
so onsets are not clipped. Inside speech a frame also counts as voiced when it is
`continue_above_floor_db` above the floor (WebRTC VAD adapts to the talker and drops
quiet sentence endings). Speech ends once `hangover_ms` pass without a voiced frame;
the utterance keeps `tail_ms` after its last voiced frame.

Events, in stream order:
* `SpeechStarted(start_s)` when speech is confirmed (start_s includes the pre-roll).
* `Utterance(start_s, end_s, audio, cut_at_max)`: kept utterances only; utterances
  shorter than `min_utterance_ms` are dropped. A monologue reaching `max_utterance_ms`
  is cut: `Utterance(cut_at_max=True)` followed at once by `SpeechStarted` at the cut
  point, no `SpeechEnded`, no sample lost; continuation pieces are kept whatever
  their length.
* `SpeechEnded(end_s)` after every started utterance, kept or dropped (GUI indicator).
* `UtteranceFixed(start_s, end_s, audio)` once trailing silence has lasted `tail_ms` (at
  least one unvoiced frame): the samples of the utterance in progress can no longer change,
  and if the hangover completes the `Utterance` will be exactly this span. Lets the engine
  classify during the hangover. Only for an utterance that would be kept; at most once per pause.
* `SpeechResumed(time_s)`: a voiced frame after an `UtteranceFixed` voids it (the pause
  was inside the utterance). A max-length cut during the pause voids it too (its
  `Utterance` has a different span).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import webrtcvad

from realtime.resample import float_to_int16, int16_to_float
from realtime.source import AudioBlock
from realtime.types import SegmentEvent, SpeechEnded, SpeechResumed, SpeechStarted, Utterance, UtteranceFixed

# Longest duration any segmenter setting may ask for: beyond it a value is a typo, not a choice.
MAX_SETTING_MS = 3_600_000


@dataclass(frozen=True)
class SegmenterConfig:
    """Segmenter settings. Defaults were tuned on EmoDB (joined with 1 s gaps of silence
    and low noise) and on espeak-ng speech; see tests/test_vad.py."""

    sample_rate_hz: int = 16_000
    aggressiveness: int = 1
    frame_ms: int = 30
    start_window_frames: int = 5
    speech_start_frames: int = 3
    preroll_ms: int = 30
    hangover_ms: int = 600
    tail_ms: int = 60
    min_utterance_ms: int = 300
    max_utterance_ms: int = 10_000
    min_speech_dbfs: float = -50.0
    start_above_floor_db: float = 12.0
    continue_above_floor_db: float = 20.0
    noise_floor_window_ms: int = 3_000

    def __post_init__(self) -> None:
        if self.sample_rate_hz not in (8_000, 16_000, 32_000, 48_000):
            raise ValueError(f"sample_rate_hz must be 8000, 16000, 32000 or 48000 (WebRTC VAD), "
                             f"got {self.sample_rate_hz}")
        if self.aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"aggressiveness must be 0-3, got {self.aggressiveness}")
        if self.frame_ms not in (10, 20, 30):
            raise ValueError(f"frame_ms must be 10, 20 or 30, got {self.frame_ms}")
        if not 1 <= self.speech_start_frames <= self.start_window_frames:
            raise ValueError("need 1 <= speech_start_frames <= start_window_frames, got "
                             f"{self.speech_start_frames} and {self.start_window_frames}")
        for name in ("preroll_ms", "hangover_ms", "tail_ms", "min_utterance_ms", "max_utterance_ms",
                     "noise_floor_window_ms"):
            if not 0 <= getattr(self, name) <= MAX_SETTING_MS:
                raise ValueError(f"{name} must be in [0, {MAX_SETTING_MS}] ms, got {getattr(self, name)}")
        if self.tail_ms > self.hangover_ms:
            raise ValueError(f"tail_ms ({self.tail_ms}) must not exceed hangover_ms ({self.hangover_ms})")
        if self.max_utterance_ms < max(self.min_utterance_ms, 4 * self.frame_ms):
            raise ValueError(f"max_utterance_ms ({self.max_utterance_ms}) must be >= min_utterance_ms "
                             f"and >= 4 frames")
        if self.start_above_floor_db < 0 or self.continue_above_floor_db < 0:
            raise ValueError("start_above_floor_db and continue_above_floor_db must be >= 0")
        if self.noise_floor_window_ms < self.frame_ms:
            raise ValueError(f"noise_floor_window_ms must be >= frame_ms, got {self.noise_floor_window_ms}")
        if self.min_speech_dbfs > 0:
            raise ValueError(f"min_speech_dbfs must be <= 0, got {self.min_speech_dbfs}")

    @property
    def frame_samples(self) -> int:
        return self.sample_rate_hz * self.frame_ms // 1000

    def frames(self, ms: int) -> int:
        """Milliseconds -> whole frames (rounded to nearest)."""
        return int(round(ms / self.frame_ms))


def frame_dbfs(frame: np.ndarray) -> float:
    """RMS level of an int16 frame [n] in dBFS (-120 for digital silence)."""
    rms = float(np.sqrt(np.mean(np.square(frame, dtype=np.float64)))) / 32768.0
    return 20.0 * np.log10(max(rms, 1e-6))


class Segmenter:
    """WebRTC-VAD segmenter over a 16 kHz stream; see the module docstring for events.

    push(block): int16 [n] or float32 [n] in [-1, 1], any n, or an `AudioBlock`
    (a jump in its start_s, e.g. after a microphone reconnect, flushes the open
    utterance and moves the clock). Times are seconds on the sample clock.
    """

    def __init__(self, cfg: SegmenterConfig | None = None) -> None:
        self.cfg = cfg or SegmenterConfig()
        self._vad = webrtcvad.Vad(self.cfg.aggressiveness)
        self._frame_len = self.cfg.frame_samples
        self._preroll = self.cfg.frames(self.cfg.preroll_ms)
        self._hangover = max(1, self.cfg.frames(self.cfg.hangover_ms))
        self._tail = self.cfg.frames(self.cfg.tail_ms)
        self._min_frames = self.cfg.frames(self.cfg.min_utterance_ms)
        self._max_frames = max(1, self.cfg.max_utterance_ms // self.cfg.frame_ms)
        self.reset()

    # ---------------------------------------------------------------- public state
    @property
    def in_speech(self) -> bool:
        """True between SpeechStarted and SpeechEnded (drives the GUI speech light)."""
        return self._utt_start is not None

    @property
    def time_s(self) -> float:
        """Stream time of the next sample to be pushed."""
        return self._frame_time(self._frame_index) + len(self._partial) / self.cfg.sample_rate_hz

    @property
    def ongoing_start_s(self) -> float | None:
        """Start of the utterance in progress (None in silence)."""
        return None if self._utt_start is None else self._frame_time(self._utt_start)

    def reset(self, start_s: float = 0.0) -> None:
        """Forget all audio and state; the next sample is at start_s."""
        self._origin_s = float(start_s)
        self._frame_index = 0          # frames completed since origin
        self._partial = np.zeros(0, dtype=np.int16)
        self._history: deque[tuple[np.ndarray, bool]] = deque(
            maxlen=self._preroll + self.cfg.start_window_frames)
        self._utt_frames: list[np.ndarray] = []
        self._utt_start: int | None = None   # absolute frame index of utterance start
        self._last_voiced = -1
        self._continuation = False
        self._fixed_sent = False   # an UtteranceFixed for the current pause went out
        self._recent_levels: deque[float] = deque(maxlen=max(1, self.cfg.frames(self.cfg.noise_floor_window_ms)))

    def push(self, block: np.ndarray | AudioBlock) -> list[SegmentEvent]:
        """Feed audio; returns the events completed by it."""
        events: list[SegmentEvent] = []
        if isinstance(block, AudioBlock):
            if abs(block.start_s - self.time_s) > self.cfg.frame_ms / 1000.0:
                events.extend(self.flush())
                self.reset(block.start_s)
            block = block.samples
        samples = np.asarray(block)
        if samples.ndim != 1:
            raise ValueError(f"segmenter expects mono audio of shape [samples], got {samples.shape}")
        if samples.dtype != np.int16:
            samples = float_to_int16(np.nan_to_num(samples.astype(np.float32)))
        if len(self._partial):
            samples = np.concatenate([self._partial, samples])
        n_frames = len(samples) // self._frame_len
        for i in range(n_frames):
            events.extend(self._push_frame(samples[i * self._frame_len:(i + 1) * self._frame_len]))
        self._partial = samples[n_frames * self._frame_len:].copy()
        return events

    def flush(self) -> list[SegmentEvent]:
        """End the open utterance now (end of stream, clock jump), then reset.

        The leftover partial frame (< frame_ms) is discarded but still counted, so the
        clock stays on the sample count: the next pushed sample is at its true time.
        """
        next_sample_s = self._frame_time(self._frame_index) + len(self._partial) / self.cfg.sample_rate_hz
        events: list[SegmentEvent] = []
        if self._utt_start is not None:
            events = self._finish(min(self._frame_index, self._last_voiced + 1 + self._tail))
        self.reset(next_sample_s)
        return events

    # ---------------------------------------------------------------- internals
    def _frame_time(self, frame_index: int) -> float:
        return self._origin_s + frame_index * self._frame_len / self.cfg.sample_rate_hz

    def _classify(self, frame: np.ndarray) -> tuple[bool, bool]:
        """-> (starts, continues) for one frame.

        starts: WebRTC VAD says speech, the level is above min_speech_dbfs and at least
            start_above_floor_db above the noise floor (the quietest frame of the last
            noise_floor_window_ms), so steady noise and hum never open an utterance.
        continues: starts, or the level is continue_above_floor_db above the floor:
            WebRTC VAD adapts to the talker and misses quiet sentence endings (sad speech).
        """
        level = frame_dbfs(frame)
        self._recent_levels.append(level)
        floor = min(self._recent_levels)
        loud = level >= max(self.cfg.min_speech_dbfs, floor + self.cfg.continue_above_floor_db)
        if level < max(self.cfg.min_speech_dbfs, floor + self.cfg.start_above_floor_db):
            return False, loud
        speech = self._vad.is_speech(frame.tobytes(), self.cfg.sample_rate_hz)
        return speech, speech or loud

    def _push_frame(self, frame: np.ndarray) -> list[SegmentEvent]:
        starts, continues = self._classify(frame)
        index = self._frame_index
        self._frame_index += 1
        if self._utt_start is None:
            self._history.append((frame, starts))
            return self._maybe_start()
        self._utt_frames.append(frame)
        events: list[SegmentEvent] = []
        if continues:
            if self._fixed_sent:
                self._fixed_sent = False
                events.append(SpeechResumed(time_s=self._frame_time(index)))
            self._last_voiced = index
        if index - self._last_voiced >= self._hangover:
            events.extend(self._finish(self._last_voiced + 1 + self._tail))
        elif len(self._utt_frames) >= self._max_frames:
            events.extend(self._cut())
        elif not self._fixed_sent and index > self._last_voiced:
            events.extend(self._maybe_fixed())
        return events

    def _maybe_fixed(self) -> list[SegmentEvent]:
        """UtteranceFixed once the kept tail is complete: the same span `_finish` would cut."""
        assert self._utt_start is not None
        end_frame = self._last_voiced + 1 + self._tail
        length = end_frame - self._utt_start
        if self._frame_index < end_frame or length <= 0 or not (self._continuation or length >= self._min_frames):
            return []
        self._fixed_sent = True
        utterance = self._utterance(end_frame, cut=False)
        return [UtteranceFixed(start_s=utterance.start_s, end_s=utterance.end_s, audio=utterance.audio)]

    def _maybe_start(self) -> list[SegmentEvent]:
        window = list(self._history)[-self.cfg.start_window_frames:]
        flags = [voiced for _, voiced in window]
        if sum(flags) < self.cfg.speech_start_frames:
            return []
        first_voiced = len(self._history) - len(window) + flags.index(True)
        keep_from = max(0, first_voiced - self._preroll)
        frames = list(self._history)[keep_from:]
        self._history.clear()
        self._utt_frames = [frame for frame, _ in frames]
        self._utt_start = self._frame_index - len(frames)
        self._last_voiced = self._frame_index - 1
        self._continuation = False
        return [SpeechStarted(start_s=self._frame_time(self._utt_start))]

    def _utterance(self, end_frame: int, cut: bool) -> Utterance:
        assert self._utt_start is not None
        frames = self._utt_frames[:end_frame - self._utt_start]
        audio = int16_to_float(np.concatenate(frames)) if frames else np.zeros(0, np.float32)
        return Utterance(start_s=self._frame_time(self._utt_start), end_s=self._frame_time(end_frame),
                         audio=audio, cut_at_max=cut)

    def _finish(self, end_frame: int) -> list[SegmentEvent]:
        assert self._utt_start is not None
        end_frame = max(end_frame, self._utt_start)   # a continuation may hold only hangover
        events: list[SegmentEvent] = []
        length = end_frame - self._utt_start
        if length > 0 and (self._continuation or length >= self._min_frames):
            events.append(self._utterance(end_frame, cut=False))
        events.append(SpeechEnded(end_s=self._frame_time(end_frame)))
        # Frames after the kept tail may hold the pre-roll of the next utterance.
        for frame in self._utt_frames[end_frame - self._utt_start:][-self._history.maxlen:]:
            self._history.append((frame, False))
        self._utt_frames = []
        self._utt_start = None
        self._continuation = False
        self._fixed_sent = False
        return events

    def _cut(self) -> list[SegmentEvent]:
        cut_frame = self._frame_index
        events: list[SegmentEvent] = [self._utterance(cut_frame, cut=True)]
        self._utt_frames = []
        self._utt_start = cut_frame
        self._continuation = True
        self._fixed_sent = False
        events.append(SpeechStarted(start_s=self._frame_time(cut_frame)))
        return events
