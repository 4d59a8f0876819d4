"""Crash safety of the timeline: SIGKILL mid-session, SIGINT for a clean stop (real subprocesses)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
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


def test_sigkill_leaves_a_timeline_complete_up_to_the_last_prediction(bundle, speech_file, tmp_path):
    out = tmp_path / "killed.jsonl"
    process = start_session(bundle, speech_file, out)
    wait_for_predictions(process, out, 2)
    process.send_signal(signal.SIGKILL)
    stdout, _ = process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    raw = out.read_text().splitlines()
    session = load_timeline(out)
    assert session.torn_lines <= 1 and not session.complete
    whole_lines = [line for line in raw if line.endswith("}")]
    predictions = [json.loads(line) for line in whole_lines if '"type":"prediction"' in line]
    assert len(session.predictions) == len(predictions) and len(session.utterances()) >= 2
    # Every result the user saw on the console was already safe on disk.
    printed = [line for line in stdout.splitlines() if " s  " in line]
    assert len(session.utterances()) >= len(printed) >= 1
    for line, p in zip(printed, session.utterances()):
        assert f"{p.start_s:.2f}" in line
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
