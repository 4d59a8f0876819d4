"""Crash safety of the timeline: SIGKILL mid-session, SIGINT for a clean stop (real subprocesses)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine_support import REPO_ROOT, make_bundle, write_speech_file
from realtime.timeline import load_timeline


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="module")
def speech_file(emodb_dir, tmp_path_factory):
    # 12 clips with 1 s gaps: ~37 s of audio, far longer than the test lets it run.
    return write_speech_file(emodb_dir, tmp_path_factory.mktemp("audio") / "talk.wav", 12, gap_s=1.0)


def start_session(bundle: Path, audio: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(REPO_ROOT / "main.py"), "--headless", "--input", str(audio),
                             "--pace", "realtime", "--model", str(bundle), "--out", str(out)],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_predictions(process: subprocess.Popen, out: Path, count: int, timeout_s: float = 90.0) -> None:
    """Poll the timeline file (as another program would) until `count` utterance lines are in it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        if out.exists():
            lines = out.read_text().splitlines()
            if sum('"kind":"utterance"' in line for line in lines) >= count:
                return
        time.sleep(0.05)
    process.kill()
    pytest.fail("no predictions appeared in the timeline in time")


def kill_at_first_printed_result(process: subprocess.Popen, timeout_s: float = 90.0) -> str:
    """Read stdout line by line and SIGKILL the process the moment a result line appears;
    returns that line. A watchdog kills the process if nothing is printed in time."""
    watchdog = threading.Timer(timeout_s, process.kill)
    watchdog.start()
    try:
        for line in process.stdout:
            if " s  " in line and "latency" in line:
                process.send_signal(signal.SIGKILL)
                return line
    finally:
        watchdog.cancel()
    pytest.fail(f"no result was printed; stderr: {process.stderr.read()[-2000:]}")


def test_sigkill_the_moment_a_result_is_printed_finds_it_on_disk(bundle, speech_file, tmp_path):
    out = tmp_path / "killed.jsonl"
    process = start_session(bundle, speech_file, out)
    printed = kill_at_first_printed_result(process)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    # The result the user saw was written (and flushed) before it was printed.
    session = load_timeline(out)
    assert session.torn_lines <= 1 and not session.complete
    shown = [p for p in session.utterances() if f"{p.start_s:8.2f}-{p.end_s:8.2f} s  {p.label:<8}" in printed]
    assert len(shown) == 1, (printed, [(p.start_s, p.end_s, p.label) for p in session.utterances()])
    raw = out.read_text().splitlines()
    whole_lines = [line for line in raw if line.endswith("}")]
    predictions = [json.loads(line) for line in whole_lines if '"type":"prediction"' in line]
    assert len(session.predictions) == len(predictions)
    ends = [p.end_s for p in session.utterances()]
    assert ends == sorted(ends) and ends[-1] < 38.0


def test_sigint_stops_cleanly_with_a_summary_line(bundle, speech_file, tmp_path):
    out = tmp_path / "interrupted.jsonl"
    process = start_session(bundle, speech_file, out)
    wait_for_predictions(process, out, 1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr and "stopped by signal" in stderr
    last = json.loads(out.read_text().splitlines()[-1])
    assert last["type"] == "summary"
    session = load_timeline(out)
    assert session.complete and session.torn_lines == 0
    assert session.summary["utterances"] == len(session.utterances()) >= 1
    assert session.statuses[-1]["state"] == "stopped"
    # Stopped long before the end of the 37 s file.
    assert session.utterances()[-1].end_s < 30.0
