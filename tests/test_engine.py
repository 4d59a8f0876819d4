"""Engine on real EmoDB speech with real (bundle) classifiers: results, fallback, drops, shutdown.

The models are the trained default bundle when present, else an untrained registry Conformer
bundle: these tests check the plumbing (what is classified where, when, and recorded), never
the predicted emotions.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from engine_support import (REPO_ROOT, EventLog, FakeClock, PacedArraySource, SlowClassifier, make_bundle,
                            offline_partial_windows, offline_utterances, wait_until, write_speech_file)
from realtime.engine import Engine, EngineConfig
from realtime.metrics import latency_stats
from realtime.sources import FileSource
from realtime.timeline import TimelineWriter, load_timeline
from realtime.types import DropNotice, EngineStatus, LevelUpdate, SessionSummary
from realtime.wiring import primary_loader


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    from models.loader import load_bundle_classifier

    return load_bundle_classifier(make_bundle(tmp_path_factory.mktemp("bundle")), device="cpu")


@pytest.fixture(scope="module")
def speech(emodb_dir, tmp_path_factory):
    """Files of EmoDB clips: 'gapped' (8 clips, 1.5 s silences), 'many' (20 clips, 0.8 s),
    'joined' (5 clips back to back: one long utterance)."""
    folder = tmp_path_factory.mktemp("speech")
    return {"gapped": write_speech_file(emodb_dir, folder / "gapped.wav", 8),
            "many": write_speech_file(emodb_dir, folder / "many.wav", 20, gap_s=0.8),
            "joined": write_speech_file(emodb_dir, folder / "joined.wav", 5, joined=True)}


def run_engine(source, fallback, tmp_path, cfg=None, primary=None, listener=None, timeout_s=120.0, clock=None,
               name="session.jsonl"):
    timeline = TimelineWriter(tmp_path / name, {"test": True})
    log = listener or EventLog()
    engine = Engine(source, fallback, cfg or EngineConfig(), primary=primary, timeline=timeline, listener=log,
                    **({"clock": clock} if clock else {}))
    with engine:
        assert engine.wait(timeout_s), "engine did not finish the input in time"
    return engine, load_timeline(timeline.path), log


def assert_summary_matches(session):
    summary = session.summary
    utterances = session.utterances()
    assert summary["utterances"] == len(utterances)
    assert summary["partials"] == len(session.partials())
    stats = latency_stats(p.latency_ms for p in utterances)
    assert summary["latency_p50_ms"] == pytest.approx(stats.p50_ms, abs=0.11)
    assert summary["latency_p95_ms"] == pytest.approx(stats.p95_ms, abs=0.11)
    models = {}
    for p in utterances:
        models[p.model] = models.get(p.model, 0) + 1
    assert summary["models"] == models
    share = sum(p.fallback for p in utterances) / len(utterances) if utterances else 0.0
    assert summary["fallback_share"] == pytest.approx(share, abs=1e-4)


def test_every_utterance_classified_and_summary_matches(classifier, speech, tmp_path):
    source = FileSource(speech["gapped"], pace="fast")
    engine, session, log = run_engine(source, classifier, tmp_path)
    expected = offline_utterances(PacedArraySource.from_file(speech["gapped"]).audio)
    assert len(expected) == 8
    got = session.utterances()
    assert [(p.start_s, p.end_s) for p in got] == [(u.start_s, u.end_s) for u in expected]
    for p in got:
        assert p.model == classifier.name and not p.fallback and p.latency_ms > 0
        assert sum(p.probs.values()) == pytest.approx(1.0, abs=1e-4)
    assert session.complete and session.summary["dropped_utterances"] == 0
    assert_summary_matches(session)
    states = [s["state"] for s in session.statuses]
    assert states[:3] == ["starting", "ready", "running"] and states[-1] == "stopped"
    assert isinstance(log.of(SessionSummary)[-1], SessionSummary)
    assert engine.stop() == engine.summary()   # idempotent


def test_level_updates_and_a_broken_listener(classifier, speech, tmp_path):
    events = EventLog()
    calls = {"n": 0}

    def flaky(event):
        calls["n"] += 1
        events(event)
        if calls["n"] % 3 == 0:
            raise RuntimeError("display broke")

    source = FileSource(speech["gapped"], pace="fast")
    _, session, _ = run_engine(source, classifier, tmp_path, listener=flaky)
    levels = events.of(LevelUpdate)
    duration_s = source.samples_out / 16_000
    assert abs(len(levels) - duration_s * 10) <= 0.15 * duration_s * 10
    assert any(u.speech for u in levels) and any(not u.speech for u in levels)
    assert all(-120.0 <= u.rms_dbfs <= 0.0 for u in levels)
    assert len(session.utterances()) == 8 and session.complete


def test_partial_windows_on_schedule_during_long_utterance(classifier, speech, tmp_path):
    """Without deadline feedback the windows are exactly the offline schedule (the feedback, which
    moves them earlier, is covered in tests/test_windows.py and the next test)."""
    source = PacedArraySource.from_file(speech["joined"], speed=2.0)
    offline = offline_utterances(source.audio)
    assert len(offline) == 1 and offline[0].end_s - offline[0].start_s > 8.0
    cfg = EngineConfig(hop_ms=500, window_ms=2000, min_window_ms=1000, partial_deadlines=False)
    engine, session, _ = run_engine(source, classifier, tmp_path, cfg=cfg)
    (utterance,) = session.utterances()
    partials = session.partials()
    scheduled = offline_partial_windows(source.audio, cfg.window_config())
    assert len(scheduled) >= int((utterance.end_s - utterance.start_s - 1.0) / 0.5)
    assert len(partials) >= 0.9 * len(scheduled)
    # Every window the segmenter scheduled is accounted for: classified, dropped or skipped.
    assert len(partials) + session.summary["dropped_partials"] + engine.skipped_stale_partials == len(scheduled)
    assert {(p.start_s, p.end_s) for p in partials} <= {(w.start_s, w.end_s) for w in scheduled}
    ends = np.array([p.end_s for p in partials])
    offsets = (ends - utterance.start_s) / 0.5                     # spacing: tests/test_windows.py
    assert offsets.min() == pytest.approx(2.0, abs=1e-3)           # first after min_window_ms
    assert np.all(np.diff(ends) > 0)
    for p in partials:
        assert p.kind == "partial" and p.end_s - p.start_s <= 2.0 + 1e-6 and p.start_s >= utterance.start_s - 1e-6
    assert session.predictions[-1] == utterance                   # the final result comes last
    assert session.view() == [utterance]                          # partials replaced in the review view


def test_deadline_feedback_moves_live_windows_off_the_grid(classifier, speech, tmp_path):
    """Real-time pace: the worker's feedback reaches the scheduler, so windows are cut earlier
    than the fixed grid (never closer than hop/2), and every one lies inside the utterance."""
    audio = PacedArraySource.from_file(speech["joined"]).audio[:6 * 16_000]
    source = PacedArraySource(audio, speed=1.0)
    cfg = EngineConfig(hop_ms=500, window_ms=2000, min_window_ms=1000)
    engine, session, _ = run_engine(source, classifier, tmp_path, cfg=cfg)
    (utterance,) = session.utterances()
    grid = {(w.start_s, w.end_s) for w in offline_partial_windows(audio, cfg.window_config())}
    partials = session.partials()
    assert len(partials) >= 4
    assert any((p.start_s, p.end_s) not in grid for p in partials)
    ends = np.array([p.end_s for p in partials])
    assert np.all(np.diff(ends) >= 0.25 - 1e-3)
    assert all(utterance.start_s - 1e-6 <= p.start_s and p.end_s <= utterance.end_s + 0.7 for p in partials)


def test_switch_to_fallback_and_back(classifier, speech, tmp_path):
    """Latencies on an injected clock: the slow primary costs 0.5 s of it per call, the real
    models cost nothing, so the switch and the recovery do not depend on this machine's speed."""
    clock = FakeClock()
    primary = SlowClassifier(classifier, "slow-primary", delay_s=lambda i: 0.5 if i < 5 else 0.0, clock=clock)
    fallback = SlowClassifier(classifier, "fast-fallback")
    cfg = EngineConfig(partials_enabled=False, latency_budget_ms=300, probe_every_n=2, recover_after_n=3,
                       speculate=False)
    source = PacedArraySource.from_file(speech["many"], speed=8.0)
    _, session, _ = run_engine(source, fallback, tmp_path, cfg=cfg, primary=primary, clock=clock)
    models = [p.model for p in session.utterances()]
    assert len(models) == 20
    assert models[:5] == ["slow-primary"] * 5
    first_fallback = models.index("fast-fallback")
    assert first_fallback == 5
    assert models[-3:] == ["slow-primary"] * 3, models
    messages = [s["message"] for s in session.statuses]
    assert any(m.startswith("switched to fallback fast-fallback") for m in messages)
    assert any(m.startswith("back on primary slow-primary") for m in messages)
    for p in session.utterances():
        assert p.fallback == (p.model == "fast-fallback")
    assert_summary_matches(session)
    assert 0.0 < session.summary["fallback_share"] < 1.0


def test_missing_primary_weights_fall_back_with_a_message(classifier, speech, tmp_path):
    source = FileSource(speech["gapped"], pace="fast")
    primary = primary_loader(tmp_path / "no-such-ensemble", compute="cpu")
    _, session, log = run_engine(source, classifier, tmp_path, primary=primary)
    errors = [s for s in log.of(EngineStatus) if s.state == "error"]
    assert len(errors) == 1
    assert "primary model no-such-ensemble unavailable" in errors[0].message
    assert "not found" in errors[0].message and "\n" not in errors[0].message
    utterances = session.utterances()
    assert len(utterances) == 8 and all(p.fallback and p.model == classifier.name for p in utterances)
    assert session.summary["fallback_share"] == 1.0


def test_primary_out_of_memory_at_run_time(classifier, speech, tmp_path):
    primary = SlowClassifier(classifier, "gpu-primary", fail_at=[1],
                             message="CUDA out of memory. Tried to allocate 2.00 GiB")
    fallback = SlowClassifier(classifier, "cpu-fallback")
    # Without speculation: a speculative call would take call index 1 (its failure is silent
    # by design, the worker then re-runs the span itself).
    cfg = EngineConfig(partials_enabled=False, speculate=False)
    _, session, _ = run_engine(FileSource(speech["gapped"], pace="fast"), fallback, tmp_path, cfg=cfg,
                               primary=primary)
    models = [p.model for p in session.utterances()]
    assert models == ["gpu-primary"] + ["cpu-fallback"] * 7       # nothing lost, the failed item re-run
    errors = [s for s in session.statuses if s["state"] == "error"]
    assert len(errors) == 1 and "ran out of GPU memory" in errors[0]["message"]
    assert len(primary.calls) == 2                                  # never tried again


def test_drops_under_full_queues_are_counted_and_logged(classifier, speech, tmp_path):
    slow = SlowClassifier(classifier, "slow", delay_s=lambda i: 0.45)
    cfg = EngineConfig(partial_queue_items=1, utterance_queue_items=1, utterance_put_timeout_s=0.05)
    source = PacedArraySource.from_file(speech["many"], speed=8.0)
    engine, session, log = run_engine(source, slow, tmp_path, cfg=cfg)
    summary = session.summary
    assert summary["dropped_utterances"] > 0 and summary["dropped_partials"] > 0
    assert len(session.utterances()) + summary["dropped_utterances"] == len(offline_utterances(source.audio))
    last = session.drops[-1]
    assert (last["utterances"], last["partial_windows"]) == (summary["dropped_utterances"],
                                                             summary["dropped_partials"])
    dropped_messages = [s for s in session.statuses if "dropped" in s["message"]]
    assert len(dropped_messages) == summary["dropped_utterances"]
    assert log.of(DropNotice)[-1].utterances == summary["dropped_utterances"]
    assert_summary_matches(session)


def test_utterances_never_lost_when_the_model_lags(classifier, speech, tmp_path):
    slow = SlowClassifier(classifier, "slow", delay_s=lambda i: 0.12)
    source = FileSource(speech["many"], pace="fast")   # audio arrives far faster than the model
    _, session, _ = run_engine(source, slow, tmp_path)
    assert len(session.utterances()) == 20
    assert session.summary["dropped_utterances"] == 0
    assert max(p.queue_depth for p in session.utterances()) > 0     # it really did lag


def test_stop_mid_utterance_classifies_the_speech_so_far(classifier, speech, tmp_path):
    """The source delivers 3 s of a long sentence and then nothing (a microphone the user stops)."""
    source = PacedArraySource.from_file(speech["joined"], speed=float("inf"), hold_after_s=3.0)
    timeline = TimelineWriter(tmp_path / "s.jsonl", {})
    log = EventLog()
    engine = Engine(source, classifier, EngineConfig(), timeline=timeline, listener=log)
    engine.start()
    assert wait_until(lambda: any(u.time_s >= 2.9 for u in log.of(LevelUpdate)))
    assert not engine.wait(0)
    summary = engine.stop(timeout_s=10)
    session = load_timeline(timeline.path)
    (utterance,) = session.utterances()
    assert utterance.start_s == pytest.approx(0.57, abs=0.1)
    assert 2.0 < utterance.end_s <= 3.0 + 1e-6
    assert summary.utterances == 1 and session.complete
    assert session.statuses[-1]["state"] == "stopped"


def test_engine_module_does_not_import_torch():
    code = "import sys, realtime.engine, realtime.timeline; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("kwargs", [{"partial_queue_items": 0}, {"compute_device": "tpu"}, {"hop_ms": 0},
                                    {"latency_budget_ms": -1}])
def test_engine_config_validation(kwargs):
    with pytest.raises(ValueError):
        EngineConfig(**kwargs)


def test_gui_factory_contract(classifier, speech, tmp_path):
    from realtime.wiring import gui_engine_factory

    bundle = make_bundle(tmp_path)
    factory = gui_engine_factory(EngineConfig(), str(bundle), compute="cpu")
    with pytest.raises(ValueError, match="unknown model choice"):
        factory(str(speech["gapped"]), "svm", EventLog(), timeline_path=tmp_path / "x.jsonl")
    with pytest.raises(ValueError, match="needs its folder"):
        factory(str(speech["gapped"]), "primary", EventLog(), timeline_path=tmp_path / "y.jsonl")
    log = EventLog()
    engine = factory(str(speech["gapped"]), "default", log, timeline_path=tmp_path / "gui.jsonl")
    assert not engine.wait(0)                     # built, not started
    assert engine.source.cfg.pace == "realtime"
    engine.start()
    assert wait_until(lambda: any(u.time_s >= 1.0 for u in log.of(LevelUpdate)))   # it runs
    engine.stop()
    session = load_timeline(tmp_path / "gui.jsonl")
    assert session.header["model"]["name"] == classifier.name and session.complete
    assert session.header["input_kind"] == "file"
    assert log.of(SessionSummary)


class BranchedPrimary(SlowClassifier):
    """A primary whose cheapest branch (the Classifier contract) is another model."""

    def __init__(self, inner, name, branch) -> None:
        super().__init__(inner, name)
        self.branch = branch

    def cheapest_branch(self):
        return self.branch


def test_live_windows_go_to_the_primary_branch_and_fall_back_under_the_budget(classifier, speech, tmp_path):
    """One long real utterance. The branch costs 0.4 s of the injected clock per live window for
    its first 5 calls (over the 250 ms partial budget), then nothing: the live windows leave it
    after 5, probe it every 2nd window and return after 2 fast probes; the utterance stays on the
    primary, and every record names the model that made it."""
    clock = FakeClock()
    branch = SlowClassifier(classifier, "primary-branch", delay_s=lambda i: 0.4 if i < 5 else 0.0, clock=clock)
    primary = BranchedPrimary(classifier, "primary", branch)
    fallback = SlowClassifier(classifier, "fast-fallback")
    cfg = EngineConfig(partial_budget_ms=250, probe_every_n=2, recover_after_n=2, speculate=False,
                       partial_deadlines=False)
    source = PacedArraySource.from_file(speech["joined"], speed=2.0)
    _, session, _ = run_engine(source, fallback, tmp_path, cfg=cfg, primary=primary, clock=clock)
    (utterance,) = session.utterances()
    assert utterance.model == "primary" and not utterance.fallback
    models = [p.model for p in session.partials()]
    assert len(models) >= 12, models
    assert models[:9] == ["primary-branch"] * 5 + ["fast-fallback", "primary-branch"] * 2, models
    assert set(models[9:]) == {"primary-branch"}, models             # recovered after two fast probes
    assert all(p.fallback == (p.model == "fast-fallback") for p in session.partials())
    assert len(branch.calls) == models.count("primary-branch") and len(primary.calls) == 1
    messages = [s["message"] for s in session.statuses]
    assert any(m.startswith("live traces switched to fallback fast-fallback") and "250 ms" in m for m in messages)
    assert any(m.startswith("live traces back on primary primary-branch") for m in messages)
    assert not any(m.startswith("switched to fallback") for m in messages)


def test_live_windows_stay_on_the_fallback_when_asked(classifier, speech, tmp_path):
    """live_traces_on_primary=False: the primary makes the final result only."""
    branch = SlowClassifier(classifier, "primary-branch")
    primary = BranchedPrimary(classifier, "primary", branch)
    cfg = EngineConfig(live_traces_on_primary=False, speculate=False)
    source = PacedArraySource.from_file(speech["joined"], speed=4.0)
    _, session, _ = run_engine(source, SlowClassifier(classifier, "fast-fallback"), tmp_path, cfg=cfg,
                               primary=primary)
    assert [p.model for p in session.utterances()] == ["primary"]
    assert session.partials() and {p.model for p in session.partials()} == {"fast-fallback"}
    assert branch.calls == []
