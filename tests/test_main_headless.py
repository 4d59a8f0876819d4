"""`main.py --headless` as a real subprocess: results per utterance, exit codes, one-line errors."""
from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest

from engine_support import REPO_ROOT, make_bundle, write_silence_file, write_speech_file
from realtime.timeline import load_timeline
from realtime.vad import SegmenterConfig


def run_main(*args, timeout_s=120):
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(REPO_ROOT / "main.py"), *map(str, args)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout_s, env=env)


def assert_user_error(result, fragment):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], result.stderr


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="module")
def speech_file(emodb_dir, tmp_path_factory):
    return write_speech_file(emodb_dir, tmp_path_factory.mktemp("audio") / "talk.wav", 5, offset=40)


def test_headless_file_writes_one_prediction_per_utterance(bundle, speech_file, tmp_path):
    out = tmp_path / "session.jsonl"
    result = run_main("--headless", "--input", speech_file, "--pace", "fast", "--model", bundle, "--out", out)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stdout.splitlines() if " s  " in line]
    session = load_timeline(out)
    assert len(session.utterances()) == 5 and len(lines) == 5
    for line, p in zip(lines, session.utterances()):
        assert f"{p.start_s:.2f}" in line and p.label in line and p.model in line
    assert session.complete and session.header["input_kind"] == "file"
    assert session.header["vad"]["hangover_ms"] == SegmenterConfig().hangover_ms
    assert session.header["model"]["checkpoint_hash"]
    assert "summary: 5 utterances" in result.stderr

    csv_path = tmp_path / "session.csv"
    exported = run_main("--export-csv", out, csv_path)
    assert exported.returncode == 0 and "wrote" in exported.stdout
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(session.predictions)


def test_options_reach_the_engine(bundle, speech_file, tmp_path):
    out = tmp_path / "s.jsonl"
    result = run_main("--headless", "--input", speech_file, "--pace", "fast", "--model", bundle, "--out", out,
                      "--no-partials", "--hangover-ms", "300", "--latency-budget-ms", "250", "--hop-ms", "250")
    assert result.returncode == 0, result.stderr
    header = load_timeline(out).header
    assert header["engine"]["partials_enabled"] is False and header["engine"]["hop_ms"] == 250
    assert header["engine"]["latency_budget_ms"] == 250 and header["vad"]["hangover_ms"] == 300
    assert load_timeline(out).partials() == []


def test_silent_file_reports_no_speech(bundle, tmp_path):
    silent = write_silence_file(tmp_path / "silence.wav")
    result = run_main("--headless", "--input", silent, "--pace", "fast", "--model", bundle,
                      "--out", tmp_path / "s.jsonl")
    assert result.returncode == 0, result.stderr
    assert "no speech found (0 utterances)" in result.stderr
    assert load_timeline(tmp_path / "s.jsonl").summary["utterances"] == 0


def test_user_errors_exit_2_with_one_line(bundle, speech_file, tmp_path):
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("this is not audio\n" * 10)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    cases = [
        (("--input", tmp_path / "missing.wav", "--model", bundle), "audio file not found"),
        (("--input", not_audio, "--model", bundle), "cannot read notes.wav as audio"),
        (("--input", speech_file, "--model", tmp_path / "no-bundle"), "model bundle not found"),
        (("--input", speech_file, "--model", bundle, "--out", blocker / "s.jsonl"), "cannot create timeline folder"),
        (("--input", speech_file, "--model", bundle, "--hop-ms", "0"), "hop_ms must be in (0, 60000] ms"),
        (("--device", "no-such-microphone-xyz", "--model", bundle), "input device"),
    ]
    for args, fragment in cases:
        assert_user_error(run_main("--headless", *args, "--out", tmp_path / "ok.jsonl")
                          if "--out" not in args else run_main("--headless", *args), fragment)


def test_export_of_a_missing_timeline_is_a_user_error(tmp_path):
    assert_user_error(run_main("--export-csv", tmp_path / "none.jsonl"), "cannot read timeline")


def test_help_explains_units_and_list_devices_runs():
    result = run_main("--help")
    assert result.returncode == 0
    for phrase in ("--latency-budget-ms", "(ms; default 300)", "--hangover-ms", "--export-csv"):
        assert phrase in result.stdout
    listed = run_main("--list-devices")
    assert listed.returncode == 0 and "Traceback" not in listed.stderr
    assert "index" in listed.stdout or "no audio input devices" in listed.stdout


def test_primary_defaults_to_the_installed_folder_and_none_switches_it_off(tmp_path, monkeypatch):
    import realtime.wiring as wiring

    monkeypatch.setattr(wiring, "DEFAULT_PRIMARY_DIR", tmp_path / "primary")
    assert wiring.resolve_primary(None) is None            # nothing installed: fast model alone
    (tmp_path / "primary").mkdir()
    assert wiring.resolve_primary(None) is None            # an empty folder is not an installed model
    (tmp_path / "primary" / "ensemble.json").write_text("{}")
    assert wiring.resolve_primary(None) == tmp_path / "primary"
    assert wiring.resolve_primary("none") is None and wiring.resolve_primary("None") is None
    assert wiring.resolve_primary(str(tmp_path / "x")) == tmp_path / "x"


def test_ved_primary_sets_the_default_and_the_option_overrides_it(monkeypatch):
    from main import build_parser

    monkeypatch.setenv("VED_PRIMARY", "/some/ensemble")
    assert build_parser().parse_args([]).primary == "/some/ensemble"
    assert build_parser().parse_args(["--primary", "none"]).primary == "none"
    monkeypatch.delenv("VED_PRIMARY")
    assert build_parser().parse_args([]).primary is None
