"""Nothing lost on the monitor side of issue 37: hostile timeline lines, FIFOs, hostile bundle JSON in
`main.py --model`, and dated session names claimed atomically by monitors started in the same second."""
from __future__ import annotations

import json
import os
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import soundfile as sf

import main as ved_main
from realtime.timeline import TimelineWriter, check_writable, default_timeline_path, load_timeline
from test_fuzz import run_main, snapshot
from test_fuzz_train import hang_alarm
from test_timeline import write_session

DEFAULT_BUNDLE = Path(ved_main.__file__).parent / "models" / "default"


def _one_error_line(outcome, *fragments: str) -> str:
    assert outcome.code == 2 and "Traceback" not in outcome.out + outcome.err, outcome.err[-2000:]
    lines = [line for line in outcome.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), outcome.err[-2000:]
    assert all(f in lines[0] for f in fragments), lines[0]
    return lines[0]


def test_a_100000_deep_line_is_skipped_and_every_good_line_exported(tmp_path):
    path = tmp_path / "s.jsonl"
    predictions = write_session(path)
    lines = path.read_text().splitlines(keepends=True)
    hostile = ['{"type":"prediction","x":' + "[" * 100_000 + "]" * 100_000 + "}\n",
               '{"type":"prediction","start_s":NaN}\n', '{"type":"prediction","n":' + "9" * 10_000 + "}\n",
               '{"type":"status","message":"' + "m" * (2 << 20) + '"}\n']
    path.write_text("".join(lines[:3] + hostile + lines[3:]))
    before = snapshot(path)
    outcome = run_main(["--export-csv", path, tmp_path / "s.csv"])
    assert outcome.code == 0 and "Traceback" not in outcome.err, outcome.err
    assert f"wrote {len(predictions)} predictions" in outcome.out and "skipped 4" in outcome.out
    assert len((tmp_path / "s.csv").read_text().splitlines()) == len(predictions) + 1
    assert snapshot(path) == before
    session = load_timeline(path)
    assert session.torn_lines == 4 and session.complete and len(session.predictions) == len(predictions)


def test_a_fifo_is_never_opened_as_a_timeline_or_a_csv_target(tmp_path):
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    with hang_alarm(30):
        _one_error_line(run_main(["--export-csv", fifo]), "FIFO")
        write_session(tmp_path / "s.jsonl")
        target = tmp_path / "t.csv"
        os.mkfifo(target)
        _one_error_line(run_main(["--export-csv", tmp_path / "s.jsonl", target]), "not a regular file")


def test_hostile_bundle_json_in_the_monitor_is_one_line(tmp_path):
    cases = {"labels-int": lambda doc: {**doc, "labels": 5}, "list": lambda doc: [doc],
             "feature-string": lambda doc: {**doc, "feature": "logmel"}}
    source = json.loads((DEFAULT_BUNDLE / "bundle.json").read_text())
    sf.write(tmp_path / "x.wav", np.zeros(16000, dtype=np.float32), 16000)
    for name, change in cases.items():
        bundle = tmp_path / name
        shutil.copytree(DEFAULT_BUNDLE, bundle, ignore=shutil.ignore_patterns("*.png", "emodb"))
        (bundle / "bundle.json").write_text(json.dumps(change(source)))
        _one_error_line(run_main(["--headless", "--model", bundle, "--primary", "none", "--input", tmp_path / "x.wav",
                                  "--out", tmp_path / f"{name}.jsonl"]), "bundle.json")
    deep = tmp_path / "deep"
    shutil.copytree(DEFAULT_BUNDLE, deep, ignore=shutil.ignore_patterns("*.png", "emodb"))
    (deep / "bundle.json").write_text('{"a":' + "[" * 10_000 + "]" * 10_000 + "}")
    _one_error_line(run_main(["--headless", "--model", deep, "--primary", "none", "--input", tmp_path / "x.wav",
                              "--out", tmp_path / "deep.jsonl"]), "nested more than 64 levels")


def test_three_monitors_in_the_same_second_each_get_a_dated_timeline(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    noon = datetime(2026, 12, 8, 12, 0, 0)
    names = [default_timeline_path(noon) for _ in range(3)]   # all asked before any file exists: one name
    assert len(set(names)) == 1
    writers = []
    for path in names:
        check_writable(path)   # what main.py does before the models load
        writers.append(TimelineWriter(path, {"monitor": len(writers)}))
    for writer in writers:
        writer.close()
    assert [w.path.name for w in writers] == ["ved-20261208-120000.jsonl", "ved-20261208-120000-2.jsonl",
                                              "ved-20261208-120000-3.jsonl"]
    assert [load_timeline(w.path).header["monitor"] for w in writers] == [0, 1, 2]
    later = default_timeline_path(noon)
    assert later.name == "ved-20261208-120000-4.jsonl"
