"""Speculative classification during the VAD hangover, on real EmoDB speech and the real model:
the segmenter's UtteranceFixed span is the later Utterance sample for sample, results are
identical with and without speculation, speech resuming discards the job (counted, not
logged), a span grown by a max-length cut in the pause is classified afresh, and stopping
during a speculative job is clean.
"""
from __future__ import annotations

import logging
import queue
import threading

import numpy as np
import pytest

from engine_support import EventLog, PacedArraySource, SlowClassifier, make_bundle, wait_until, write_speech_file
from realtime.engine import Engine, EngineConfig
from realtime.metrics import SessionMetrics
from realtime.speculation import Speculator
from realtime.resample import float_to_int16
from realtime.source import END_OF_STREAM, AudioBlock
from realtime.timeline import TimelineWriter, load_timeline
from realtime.types import SpeechResumed, Utterance, UtteranceFixed
from realtime.vad import Segmenter, SegmenterConfig
from realtime.worker import InferenceWorker, WorkItem

RATE = 16_000


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    from models.loader import load_bundle_classifier

    return load_bundle_classifier(make_bundle(tmp_path_factory.mktemp("bundle")), device="cpu")


@pytest.fixture(scope="module")
def speech(emodb_dir, tmp_path_factory):
    """16 kHz arrays: 'gapped' (6 clips, 1.5 s silences), 'joined' (3 clips back to back)."""
    folder = tmp_path_factory.mktemp("speech")
    return {"gapped": PacedArraySource.from_file(write_speech_file(emodb_dir, folder / "g.wav", 6)).audio,
            "joined": PacedArraySource.from_file(write_speech_file(emodb_dir, folder / "j.wav", 4,
                                                                   joined=True)).audio}


def segment(audio: np.ndarray, block: int = 480) -> list:
    seg = Segmenter()
    samples = float_to_int16(audio)
    events = []
    for i in range(0, len(samples), block):
        events.extend(seg.push(samples[i:i + block]))
    return events + seg.flush()


def fixed_then_resumed(events) -> list[tuple[UtteranceFixed, SpeechResumed]]:
    pairs, pending = [], None
    for event in events:
        if isinstance(event, UtteranceFixed):
            pending = event
        elif isinstance(event, SpeechResumed):
            assert pending is not None, "SpeechResumed without an UtteranceFixed before it"
            pairs.append((pending, event))
            pending = None
    return pairs


def test_fixed_span_is_the_utterance_sample_for_sample(speech):
    for name in ("gapped", "joined"):
        events = segment(speech[name])
        pending, matched = None, 0
        for event in events:
            if isinstance(event, UtteranceFixed):
                assert pending is None          # at most one per pause
                pending = event
            elif isinstance(event, SpeechResumed):
                pending = None
            elif isinstance(event, Utterance) and not event.cut_at_max:
                assert pending is not None, f"{name}: utterance {event.start_s:.2f} s without UtteranceFixed"
                assert (pending.start_s, pending.end_s) == (event.start_s, event.end_s)
                np.testing.assert_array_equal(pending.audio, event.audio)
                pending, matched = None, matched + 1
        assert matched == sum(isinstance(e, Utterance) and not e.cut_at_max for e in events) >= 1
        assert name != "gapped" or matched == 6
    # Inside a sentence, pauses longer than the tail and shorter than the hangover void the span.
    assert fixed_then_resumed(segment(speech["joined"]))
    assert not fixed_then_resumed(segment(speech["gapped"][: 3 * RATE]))   # one clean clip


def run(audio, model, tmp_path, name, speed=4.0, hold_after_s=None, **cfg):
    source = PacedArraySource(audio, speed=speed, hold_after_s=hold_after_s)
    timeline = TimelineWriter(tmp_path / f"{name}.jsonl", {"test": name})
    config = EngineConfig(partials_enabled=False, speculation_nice=0, **cfg)
    return Engine(source, model, config, timeline=timeline, listener=EventLog()), timeline.path


def test_speculative_and_plain_results_are_identical(classifier, speech, tmp_path):
    results = {}
    for speculate in (True, False):
        engine, path = run(speech["gapped"], classifier, tmp_path, f"spec-{speculate}", speculate=speculate)
        with engine:
            assert engine.wait(120)
        results[speculate] = (engine.summary(), load_timeline(path).utterances())
    (spec_summary, spec), (plain_summary, plain) = results[True], results[False]
    assert len(spec) == len(plain) == 6
    assert spec_summary.speculative_used >= 1 and plain_summary.speculative_used == 0
    for a, b in zip(spec, plain):
        assert (a.start_s, a.end_s, a.model) == (b.start_s, b.end_s, b.model)
        assert a.probs == b.probs          # bit for bit, after the JSON round trip


def test_speech_resuming_discards_the_speculative_result(classifier, speech, tmp_path, caplog):
    pairs = fixed_then_resumed(segment(speech["joined"]))
    assert any(resumed.time_s - fixed.end_s >= 0.1 for fixed, resumed in pairs)   # a pause to speculate in
    slow = SlowClassifier(classifier, "slow", delay_s=lambda i: 0.3)   # still running when speech resumes
    engine, path = run(speech["joined"], slow, tmp_path, "resume", speed=1.0)
    with caplog.at_level(logging.DEBUG, logger="ved"):
        with engine:
            assert engine.wait(120)
    summary = engine.summary()
    session = load_timeline(path)
    offline = [e for e in segment(speech["joined"]) if isinstance(e, Utterance)]
    assert [(p.start_s, p.end_s) for p in session.utterances()] == [(u.start_s, u.end_s) for u in offline]
    assert summary.speculative_discarded >= 1
    assert len(slow.calls) == summary.speculative_discarded + len(offline)   # every model call accounted for
    assert session.summary["speculative_discarded"] == summary.speculative_discarded
    assert not [s for s in session.statuses if s["state"] in ("error", "warning")]
    assert not [r for r in caplog.records if "specul" in r.getMessage().lower()]   # counted, not logged


def test_stop_during_a_speculative_job_is_clean(classifier, speech, tmp_path):
    """The source stops 0.2 s into the hangover while the (slow) speculative job runs: stop()
    waits for it, publishes it as the final result once, and joins every thread."""
    audio = speech["gapped"][: 5 * RATE]
    events = segment(audio)
    first = next(e for e in events if isinstance(e, Utterance))
    fixed = next(e for e in events if isinstance(e, UtteranceFixed) and e.end_s == first.end_s)
    slow = SlowClassifier(classifier, "slow", delay_s=lambda i: 1.0 if i == 0 else 0.0)
    engine, path = run(audio, slow, tmp_path, "stop", speed=float("inf"), hold_after_s=fixed.end_s + 0.2)
    engine.start()
    assert wait_until(lambda: len(slow.calls) == 1)          # the speculative job is running
    summary = engine.stop(timeout_s=10)
    assert not any(thread.is_alive() for thread in engine._threads)
    session = load_timeline(path)
    assert session.complete and session.statuses[-1]["state"] == "stopped"
    (utterance,) = session.utterances()
    assert (utterance.start_s, utterance.end_s) == (fixed.start_s, fixed.end_s)
    assert slow.calls == [len(fixed.audio)]                  # classified once, by the speculative job
    assert (summary.speculative_used, summary.speculative_discarded) == (1, 0)
    expected = classifier.predict([fixed.audio])[0]
    order = [list(classifier.labels).index(k) for k in utterance.probs]
    np.testing.assert_allclose(list(utterance.probs.values()), expected[order], rtol=0, atol=1e-6)


def test_a_result_from_another_model_or_a_resumed_span_is_discarded(classifier, speech):
    """The policy may pick another model by the time the utterance arrives (a probe, a switch):
    the speculative result is then not used. Speech resuming mid-job voids the job too."""
    other = SlowClassifier(classifier, "other")
    chosen = {"model": classifier}
    metrics, finished = SessionMetrics(), {"flag": False}
    speculator = Speculator(InferenceWorker.compute, lambda: chosen["model"], lambda: True, metrics,
                            done=lambda: finished["flag"], nice=0)
    thread = threading.Thread(target=speculator.run, daemon=True)
    thread.start()
    audio = speech["gapped"][RATE:3 * RATE]
    item = WorkItem("utterance", 1.0, 3.0, audio, 0.0)
    speculator.offer(item)
    assert wait_until(lambda: speculator.started == 1)
    assert speculator.claim(item, other) is None                       # the worker now wants `other`
    assert wait_until(lambda: metrics.speculative_discarded == 1)
    chosen["model"] = other
    slow = WorkItem("utterance", 5.0, 7.0, audio, 0.0)
    other.delay_s = lambda i: 0.3
    speculator.offer(slow)
    assert wait_until(lambda: speculator.started == 2)
    speculator.cancel()                                                # speech resumed
    assert wait_until(lambda: metrics.speculative_discarded == 2)
    assert speculator.claim(slow, other) is None and metrics.speculative_used == 0
    finished["flag"] = True
    thread.join(5)
    assert not thread.is_alive()


class GatedSource(PacedArraySource):
    """Releases audio as fast as the queue takes it up to gate_s, waits until `gate` is set (at
    most 60 s, a bound against hangs), then releases the rest: what the engine does in between
    no longer depends on this machine's speed."""

    def __init__(self, audio, gate_s: float, gate: threading.Event) -> None:
        super().__init__(audio, speed=float("inf"))
        self.gate_s, self.gate = gate_s, gate

    def _run(self, out_q, stop_event) -> None:
        cut = int(self.gate_s * RATE) // self.block * self.block
        whole = self.audio
        self.audio, self.hold_after_s = whole[:cut], None
        try:
            for offset in range(0, len(whole), self.block):
                if offset == cut:
                    self.gate.wait(60)
                piece = float_to_int16(whole[offset:offset + self.block])
                while not (self._stop.is_set() or stop_event.is_set()):
                    try:
                        out_q.put(AudioBlock(start_s=offset / RATE, samples=piece), timeout=0.05)
                        break
                    except queue.Full:
                        continue
            out_q.put(END_OF_STREAM)
        finally:
            self.audio = whole


class SignallingClassifier(SlowClassifier):
    """Sets `done` after its first prediction has returned."""

    def __init__(self, inner, name: str) -> None:
        super().__init__(inner, name)
        self.done = threading.Event()

    def predict(self, waveforms):
        out = super().predict(waveforms)
        self.done.set()
        return out


def test_a_span_grown_by_a_max_length_cut_in_the_pause_is_classified_afresh(classifier, speech, tmp_path):
    """The pause after a sentence: UtteranceFixed offers the sentence, the speculative job runs on
    it, then max_utterance_ms cuts the utterance 240 ms into the pause. The cut Utterance has the
    same start and a later end: the speculative result belongs to a shorter span and must not
    be used; the worker classifies the cut utterance itself."""
    audio = speech["gapped"][: 5 * RATE]
    plain = next(e for e in segment(audio) if isinstance(e, Utterance))
    vad = SegmenterConfig(max_utterance_ms=int(round((plain.end_s - plain.start_s) * 1000 / 30)) * 30 + 240)
    events = Segmenter(vad).push(float_to_int16(audio))
    fixed = next(e for e in events if isinstance(e, UtteranceFixed))
    cut = next(e for e in events if isinstance(e, Utterance))
    assert (fixed.start_s, fixed.end_s) == (plain.start_s, plain.end_s)
    assert cut.cut_at_max and cut.start_s == fixed.start_s and cut.end_s > fixed.end_s + 0.2
    assert not [e for e in events if isinstance(e, SpeechResumed)]
    stale, fresh = classifier.predict([fixed.audio])[0], classifier.predict([cut.audio])[0]
    assert np.abs(stale - fresh).max() > 1e-4          # the two spans score differently

    model = SignallingClassifier(classifier, "model")
    source = GatedSource(audio, gate_s=fixed.end_s + 0.1, gate=model.done)   # cut comes after the job
    timeline = TimelineWriter(tmp_path / "cut.jsonl", {"test": "cut"})
    cfg = EngineConfig(partials_enabled=False, speculation_nice=0, vad=vad)
    with Engine(source, model, cfg, timeline=timeline) as engine:
        assert engine.wait(60)
    summary = engine.summary()
    (result,) = [p for p in load_timeline(timeline.path).utterances() if p.start_s == cut.start_s]
    assert result.end_s == cut.end_s
    assert model.calls[:2] == [len(fixed.audio), len(cut.audio)]   # speculated, then classified afresh
    order = [list(classifier.labels).index(k) for k in result.probs]
    np.testing.assert_allclose(list(result.probs.values()), fresh[order], rtol=0, atol=1e-6)
    assert summary.speculative_used == 0 and summary.speculative_discarded >= 1
