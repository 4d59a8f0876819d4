"""Partial windows during long real speech, none in silence; StreamSegmenter invariants."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import soundfile as sf

from realtime.resample import resample_to_16k
from realtime.source import AudioBlock
from realtime.types import PartialShown, PartialWindow, SpeechEnded, SpeechResumed, SpeechStarted, Utterance, UtteranceFixed
from realtime.windows import PartialWindowConfig, PartialWindowScheduler, StreamSegmenter

RATE = 16_000


@pytest.fixture(scope="module")
def long_speech(emodb_dir) -> np.ndarray:
    """~10 s of continuous speech (five EmoDB clips without gaps) between 1 s of silence."""
    files = sorted((emodb_dir / "wav").glob("*.wav"))[:5]
    if len(files) < 5:
        pytest.skip("need five EmoDB clips")
    clips = [resample_to_16k(*sf.read(str(f), dtype="float32")) for f in files]
    silence = np.zeros(RATE, np.float32)
    return np.concatenate([silence, *clips, silence])


def run(audio: np.ndarray, block: int, speculation_events: bool = False, **window_args):
    """Events of one pass, without UtteranceFixed / SpeechResumed unless speculation_events."""
    seg = StreamSegmenter(window_cfg=PartialWindowConfig(**window_args))
    events = []
    for i in range(0, len(audio), block):
        events.extend(seg.push(AudioBlock(i / RATE, audio[i:i + block])))
    events += seg.flush()
    return events if speculation_events else [e for e in events if not isinstance(e, (UtteranceFixed, SpeechResumed))]


def check_pauses(events, hop_s: float, window_s: float) -> int:
    """Windows every hop_s of speech; a pause (UtteranceFixed ... SpeechResumed) brings a closing
    window, the end of the fixed span (unless the last window is under hop_s / 2 old), and none
    inside it; a gap over hop_s spans a pause. Returns the number of pauses."""
    windows = [e for e in events if isinstance(e, PartialWindow)]
    pauses, fixed = [], None
    for i, event in enumerate(events):
        if isinstance(event, UtteranceFixed):
            fixed = event
            before = [w for w in windows if w.end_s <= event.end_s + 1e-9 and events.index(w) < i]
            after = events[i + 1] if i + 1 < len(events) else None
            if before and event.end_s - before[-1].end_s < hop_s / 2:
                assert not isinstance(after, PartialWindow)                 # the last one is recent
            elif before:
                assert isinstance(after, PartialWindow) and after.end_s == event.end_s
                np.testing.assert_array_equal(after.audio, event.audio[-round(window_s * RATE):])
        elif isinstance(event, (SpeechResumed, SpeechEnded)) and fixed is not None:
            pauses.append((fixed.end_s, event.time_s if isinstance(event, SpeechResumed) else event.end_s))
            fixed = None
    ends = np.array([w.end_s for w in windows])
    assert np.all(np.diff(ends) >= hop_s / 2 - 1e-6)
    for a, b in zip(ends[:-1], ends[1:]):
        assert b - a <= hop_s + 1e-6 or any(a <= start + 1e-6 and stop <= b + 1e-6 for start, stop in pauses)
    for start, stop in pauses:
        assert not [e for e in ends if start + 1e-6 < e < stop - 1e-6]      # none inside a pause
    return len(pauses)


def test_partials_every_hop_during_long_utterance(long_speech):
    events = run(long_speech, block=480, speculation_events=True)
    assert check_pauses(events, 0.5, 2.0) >= 3                      # the sentences hold pauses
    events = [e for e in events if not isinstance(e, (UtteranceFixed, SpeechResumed))]
    windows = [e for e in events if isinstance(e, PartialWindow)]
    (utt,) = [e for e in events if isinstance(e, Utterance)]
    started = next(e for e in events if isinstance(e, SpeechStarted))
    ended = next(e for e in events if isinstance(e, SpeechEnded))
    assert utt.end_s - utt.start_s > 8.0
    assert len(windows) >= 15
    ends = np.array([w.end_s for w in windows])
    assert ends[0] == pytest.approx(started.start_s + 1.0)       # min_window_ms of speech first
    assert ends[-1] <= ended.end_s + 0.6 + 1e-6                  # stop within the hangover
    int16 = np.round(long_speech * 32767) / 32768                 # what the segmenter sees
    for w in windows:
        assert w.start_s >= started.start_s - 1e-9
        assert w.end_s - w.start_s <= 2.0 + 1e-9
        assert len(w.audio) == round((w.end_s - w.start_s) * RATE)
        start = round(w.start_s * RATE)
        np.testing.assert_allclose(w.audio, int16[start:start + len(w.audio)], atol=1e-4)
    # order: every window sits between SpeechStarted and SpeechEnded in the event list
    kinds = [type(e) for e in events]
    first_w, last_w = kinds.index(PartialWindow), len(kinds) - 1 - kinds[::-1].index(PartialWindow)
    assert kinds.index(SpeechStarted) < first_w and last_w < kinds.index(SpeechEnded)


def test_no_partials_in_silence_or_noise():
    rng = np.random.default_rng(3)
    for audio in (np.zeros(10 * RATE, np.float32), (0.01 * rng.standard_normal(10 * RATE)).astype(np.float32)):
        assert run(audio, block=512) == []


def test_block_size_does_not_change_events(long_speech):
    def key(events):
        return [(type(e).__name__, getattr(e, "start_s", None), getattr(e, "end_s", None),
                 len(getattr(e, "audio", ()))) for e in events]
    reference = key(run(long_speech, block=len(long_speech), speculation_events=True))
    for block in (97, 480, 3_333):
        assert key(run(long_speech, block=block, speculation_events=True)) == reference


def test_hop_and_window_settings(long_speech):
    events = run(long_speech, block=800, speculation_events=True, hop_ms=250, window_ms=1_000, min_window_ms=500)
    check_pauses(events, 0.25, 1.0)
    windows = [e for e in events if isinstance(e, PartialWindow)]
    assert max(w.end_s - w.start_s for w in windows) == pytest.approx(1.0)
    without = [(type(e), getattr(e, "end_s", None)) for e in run(long_speech, block=800, enabled=False)]
    assert without == [(type(e), getattr(e, "end_s", None)) for e in run(long_speech, block=800)
                       if not isinstance(e, PartialWindow)]
    assert len(without) == 3


def test_clock_jump_ends_speech_and_windows(long_speech):
    seg = StreamSegmenter()
    head = long_speech[:4 * RATE]
    events = []
    for i in range(0, len(head), 1_600):
        events.extend(seg.push(AudioBlock(i / RATE, head[i:i + 1_600])))
    assert seg.in_speech and any(isinstance(e, PartialWindow) for e in events)
    after = seg.push(AudioBlock(100.0, np.zeros(1_600, np.int16)))
    assert [type(e) for e in after] == [Utterance, SpeechEnded]
    assert not seg.in_speech and seg.scheduler.time_s == pytest.approx(100.1)


def test_scheduler_alone_ignores_audio_without_speech_events():
    sched = PartialWindowScheduler()
    assert sched.push(np.ones(5 * RATE, np.float32) * 0.1) == []
    sched.push(SpeechStarted(start_s=5.0))
    windows = sched.push(np.ones(2 * RATE, np.float32) * 0.1)
    assert [w.end_s for w in windows] == [6.0, 6.5, 7.0]
    sched.push(SpeechEnded(end_s=7.0))
    assert sched.push(np.ones(RATE, np.float32)) == []


def shown_times(lags_s: list[float], feedback: bool, block: int = 80, seconds: float = 20.0):
    """Simulate a model whose k-th live result is shown lags_s[k % len] after the block that
    made its window (stream seconds); with feedback the scheduler hears when each was shown.
    Returns (window ends, shown times)."""
    sched = PartialWindowScheduler(PartialWindowConfig(hop_ms=500, window_ms=2_000, min_window_ms=1_000))
    sched.push(SpeechStarted(start_s=0.0))
    ends, shown, pending = [], [], []
    for i in range(0, int(seconds * RATE), block):
        now_s = i / RATE
        for item in [p for p in pending if p.shown_s <= now_s]:
            pending.remove(item)
            if feedback:
                sched.push(item)
        for window in sched.push(np.full(block, 0.1, np.float32)):
            block_end_s = (i + block) / RATE
            ends.append(window.end_s)
            shown.append(block_end_s + lags_s[len(shown) % len(lags_s)])
            pending.append(PartialShown(end_s=window.end_s, shown_s=shown[-1]))
    return np.array(ends), np.array(shown)


def test_deadline_feedback_keeps_updates_within_the_hop():
    """Inference jitter (lags 100-300 ms) lands on top of the hop on a fixed grid; with deadline
    feedback each window is cut early enough that updates are at most hop_ms apart."""
    lags = [0.12, 0.30, 0.18, 0.25, 0.10, 0.28, 0.15]
    grid_ends, grid_shown = shown_times(lags, feedback=False)
    np.testing.assert_allclose(np.diff(grid_ends), 0.5, atol=1e-6)
    assert np.diff(grid_shown).max() > 0.6                       # jitter on top of the hop
    ends, shown = shown_times(lags, feedback=True)
    gaps = np.diff(shown)[2:]                                    # once the largest lag has been seen
    assert gaps.max() <= 0.5 + 80 / RATE                         # within one block of the deadline
    assert np.all(np.diff(ends) >= 0.25 - 1e-9) and np.all(np.diff(ends) <= 0.5 + 1e-9)
    assert len(ends) <= 1.4 * len(grid_ends)                     # a few more windows, not twice as many


def test_feedback_about_an_older_window_is_ignored():
    sched = PartialWindowScheduler(PartialWindowConfig(hop_ms=500, window_ms=2_000, min_window_ms=1_000))
    sched.push(SpeechStarted(start_s=0.0))
    first = sched.push(np.zeros(int(1.6 * RATE), np.float32))
    assert [w.end_s for w in first] == [1.0, 1.5]
    sched.push(PartialShown(end_s=1.0, shown_s=1.05))            # stale: 1.5 s already went out
    assert [w.end_s for w in sched.push(np.zeros(RATE, np.float32))] == [2.0, 2.5]


@pytest.mark.parametrize("bad", [dict(hop_ms=0), dict(window_ms=0), dict(min_window_ms=3_000),
                                 dict(window_ms=10**30), dict(hop_ms=10**9)])
def test_config_validation(bad):
    with pytest.raises(ValueError):
        dataclasses.replace(PartialWindowConfig(), **bad)
