"""An engine thread that dies, while it starts or while it runs, ends the session: one error,
no hang, the timeline complete with everything classified before; through main.py one
`error:` line and exit 1 (internal) or exit 2 (absurd settings, rejected before any thread)."""
from __future__ import annotations

import subprocess
import sys

import pytest

import realtime.engine
import realtime.speculation
from engine_support import REPO_ROOT, EventLog, PacedArraySource, make_bundle, write_speech_file
from realtime.engine import Engine, EngineConfig, EngineFailure
from realtime.timeline import TimelineWriter, load_timeline
from realtime.windows import StreamSegmenter
from realtime.worker import InferenceWorker


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="module")
def classifier(bundle):
    from models.loader import load_bundle_classifier

    return load_bundle_classifier(bundle, device="cpu")


@pytest.fixture(scope="module")
def gapped(emodb_dir, tmp_path_factory):
    return write_speech_file(emodb_dir, tmp_path_factory.mktemp("speech") / "gapped.wav", 6)


def fail_on_call(cls_or_module, name: str, call: int, exc: BaseException, monkeypatch) -> None:
    """Make cls_or_module.name raise exc on its call-th call (1-based), behave normally before."""
    original = getattr(cls_or_module, name)
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= call:
            raise exc
        return original(*args, **kwargs)

    monkeypatch.setattr(cls_or_module, name, wrapper)


# (thread, phase, where it fails, on which call, what it raises)
CASES = [
    ("segmenter", "start", (realtime.engine, "StreamSegmenter"), 1, MemoryError()),
    ("segmenter", "running", (StreamSegmenter, "push"), 150, ValueError("Maximum allowed dimension exceeded")),
    ("inference", "start", (InferenceWorker, "_next_item"), 1, MemoryError()),
    ("inference", "running", (InferenceWorker, "_process"), 3, RuntimeError("worker bug")),
    ("speculation", "start", (realtime.speculation, "lower_thread_priority"), 1, MemoryError()),
    ("speculation", "running", (InferenceWorker, "speculative_model"), 2, RuntimeError("speculation bug")),
]


@pytest.mark.parametrize("thread, phase, target, call, exc", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_a_dying_thread_ends_the_session_and_keeps_the_timeline(thread, phase, target, call, exc, classifier,
                                                                 gapped, tmp_path, monkeypatch):
    fail_on_call(*target, call, exc, monkeypatch)
    source = PacedArraySource.from_file(gapped, speed=4.0)
    timeline = TimelineWriter(tmp_path / "s.jsonl", {"test": thread})
    engine = Engine(source, classifier, EngineConfig(partials_enabled=False, speculation_nice=0),
                    timeline=timeline, listener=EventLog())
    engine.start()
    assert engine.wait(60), "the session hung after a thread died"
    summary = engine.stop(timeout_s=10)
    assert isinstance(engine.failure, EngineFailure) and engine.failure.thread == thread
    assert engine.failure.cause is exc and "\n" not in str(engine.failure)
    assert not any(t.is_alive() for t in engine._threads)
    session = load_timeline(timeline.path)
    assert session.complete and session.summary["utterances"] == summary.utterances
    errors = [s["message"] for s in session.statuses if s["state"] == "error"]
    assert errors == [str(engine.failure)] and f"internal error in the {thread} thread" in errors[0]
    if phase == "running":
        assert len(session.utterances()) >= 1        # what was classified before stays recorded
    assert len(session.utterances()) < 6             # the session really ended early


def run_main(args: list[str], prelude: str = "") -> subprocess.CompletedProcess:
    code = f"import sys\n{prelude}\nimport main\nsys.exit(main.main({args!r}))"
    return subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def assert_one_error_line(result: subprocess.CompletedProcess, code: int) -> str:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.mark.parametrize("option", ["--window-ms", "--hop-ms", "--hangover-ms", "--max-utterance-ms"])
def test_absurd_durations_are_refused_before_any_thread_starts(option, gapped, tmp_path):
    out = tmp_path / "s.jsonl"
    result = run_main(["--headless", "--input", str(gapped), option, str(10 ** 30), "--out", str(out)])
    line = assert_one_error_line(result, 2)
    assert option.lstrip("-").replace("-", "_") in line
    assert not out.exists()


def test_a_thread_dying_under_main_is_exit_1_with_one_error_line(bundle, gapped, tmp_path):
    prelude = ("import realtime.windows as w\n_push = w.StreamSegmenter.push\n_n = [0]\n"
               "def push(self, block):\n    _n[0] += 1\n    if _n[0] > 120:\n        raise RuntimeError('boom')\n"
               "    return _push(self, block)\nw.StreamSegmenter.push = push")
    out = tmp_path / "s.jsonl"
    result = run_main(["--headless", "--input", str(gapped), "--pace", "fast", "--model", str(bundle),
                       "--out", str(out)], prelude)
    line = assert_one_error_line(result, 1)
    assert "internal error in the segmenter thread" in line and "boom" in line
    session = load_timeline(out)
    assert session.complete and len(session.utterances()) >= 1
