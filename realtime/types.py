"""Shared vocabulary of the real-time pipeline: segment events, predictions, engine events.

Torch-free: the GUI, the engine, the timeline and the benchmarks all import it.
Times are seconds from the start of the session's audio stream (sample clock,
not wall clock), so a replayed file and a live microphone read the same way.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Union

import numpy as np

from models.labels import EMOTIONS


# ---------------------------------------------------------------- segmenter events
@dataclass(frozen=True)
class SpeechStarted:
    """VAD detected the onset of speech (start_s includes the pre-roll)."""

    start_s: float


@dataclass(frozen=True)
class Utterance:
    """A finished utterance. audio: float32 mono 16 kHz, shape [samples].

    cut_at_max is True when the segmenter split a long monologue at the
    maximum utterance length (speech continues in the next utterance).
    """

    start_s: float
    end_s: float
    audio: np.ndarray = field(repr=False, compare=False)
    cut_at_max: bool = False


@dataclass(frozen=True)
class PartialWindow:
    """The last `window_ms` of an utterance still in progress, for live traces.

    audio: float32 mono 16 kHz, shape [samples]; end_s is the window end.
    """

    start_s: float
    end_s: float
    audio: np.ndarray = field(repr=False, compare=False)


@dataclass(frozen=True)
class SpeechEnded:
    """VAD hangover elapsed; the utterance ended at end_s (also sent as an Utterance)."""

    end_s: float


@dataclass(frozen=True)
class UtteranceFixed:
    """Trailing silence has lasted `tail_ms`: the utterance in progress can no longer change.

    If the hangover now completes without speech, the `Utterance` will have exactly this
    start_s, end_s and audio (float32 mono 16 kHz, shape [samples]); sent at most once per
    pause, only for an utterance that would be kept. `SpeechResumed` or a max-length cut
    voids it.
    """

    start_s: float
    end_s: float
    audio: np.ndarray = field(repr=False, compare=False)


@dataclass(frozen=True)
class SpeechResumed:
    """A voiced frame at time_s arrived after an `UtteranceFixed`: that span is void."""

    time_s: float


SegmentEvent = Union[SpeechStarted, Utterance, PartialWindow, SpeechEnded, UtteranceFixed, SpeechResumed]


@dataclass(frozen=True)
class PartialShown:
    """Feedback to the partial-window scheduler: the result for the window ending at end_s
    was shown when the stream stood at shown_s (seconds, sample clock)."""

    end_s: float
    shown_s: float


# ---------------------------------------------------------------- results
@dataclass(frozen=True)
class EmotionPrediction:
    """One classification of a span of audio.

    probs: mapping class name -> probability, in `EMOTIONS` order.
    kind: "utterance" (final) or "partial" (live window during speech).
    latency_ms: from the end of the span being available (utterance end or
        window end, on the wall clock) to the result.
    uncertain: the model's top probability is below the "not sure" threshold its
        calibration stores (models/calibration.py); the probabilities stay as they are.
    """

    start_s: float
    end_s: float
    probs: dict[str, float]
    label: str
    model: str
    latency_ms: float
    kind: str = "utterance"
    queue_depth: int = 0
    fallback: bool = False
    uncertain: bool = False

    @classmethod
    def from_probs(cls, start_s: float, end_s: float, probs: np.ndarray, model: str,
                   latency_ms: float, labels: tuple[str, ...] = EMOTIONS,
                   uncertain_below: float | None = None, **extra: Any) -> "EmotionPrediction":
        """Build from a probability vector of shape [len(labels)]; uncertain when its top
        probability is below `uncertain_below` (the model's threshold; None: never)."""
        values = {name: float(p) for name, p in zip(labels, probs)}
        label = max(values, key=values.__getitem__)
        uncertain = uncertain_below is not None and values[label] < uncertain_below
        return cls(start_s=start_s, end_s=end_s, probs=values, label=label, model=model,
                   latency_ms=latency_ms, uncertain=uncertain, **extra)

    @property
    def confidence(self) -> float:
        return self.probs[self.label]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EmotionPrediction":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


# ---------------------------------------------------------------- engine -> listeners
@dataclass(frozen=True)
class LevelUpdate:
    """Input level of the latest audio block, for the GUI meter. rms_dbfs <= 0."""

    time_s: float
    rms_dbfs: float
    speech: bool


@dataclass(frozen=True)
class EngineStatus:
    """Engine state change: state in {"starting", "ready", "running", "stopped", "error", "warning",
    "device-lost", "reconnecting"}; message is a one-line human text. "warning": the session goes
    on but the user should know (e.g. the input file was repaired)."""

    state: str
    message: str = ""
    model: str = ""
    fallback_active: bool = False


@dataclass(frozen=True)
class DropNotice:
    """Items dropped because a bounded queue was full (counts are cumulative)."""

    partial_windows: int
    utterances: int
    audio_blocks: int


@dataclass(frozen=True)
class SessionSummary:
    """End-of-session (or running) metrics, also written to the timeline.

    speculative_used: final results classified during the VAD hangover and published;
    speculative_discarded: speculative classifications run but thrown away (speech resumed,
    the policy chose another model, or the session stopped).
    """

    utterances: int
    partials: int
    latency_p50_ms: float
    latency_p95_ms: float
    dropped_partials: int
    dropped_utterances: int
    dropped_audio_blocks: int
    fallback_share: float
    models: dict[str, int] = field(default_factory=dict)
    speculative_used: int = 0
    speculative_discarded: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


EngineEvent = Union[EmotionPrediction, LevelUpdate, EngineStatus, DropNotice, SessionSummary]
