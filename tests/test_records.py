"""Nothing recorded is lost and every user mistake is one line (issue 18), through main() and
`python -m train`: an existing --out, an export onto its own timeline, malformed prediction lines,
names over 255 characters, input cut short mid-file, missing / truncated / NaN bundles.

Failures that happen before a model loads are called in-process (fast); sessions that need a
model run main.py as a subprocess.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import main as ved_main
from conftest import sine
from engine_support import REPO_ROOT, make_bundle, write_speech_file
from realtime.timeline import TimelineWriter, load_timeline
from test_timeline import write_session

LONG_NAME = "n" * 300


def call_main(argv: list, capsys) -> tuple[int, str, str]:
    code = ved_main.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code: int, err: str, fragment: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], err


@pytest.fixture
def tone_wav(tmp_path) -> Path:
    path = tmp_path / "tone.wav"
    sf.write(str(path), sine(300.0, 1.0, 16_000), 16_000)
    return path


# ---------------------------------------------------------------- existing --out
def test_an_existing_out_is_refused_before_the_model_loads_and_left_untouched(tmp_path, tone_wav, capsys):
    existing = tmp_path / "s.jsonl"
    write_session(existing)
    before = existing.read_bytes()
    # The --model folder does not exist: the output error coming first proves the order.
    code, _, err = call_main(["--headless", "--input", tone_wav, "--model", tmp_path / "no-model",
                              "--out", existing], capsys)
    assert_user_error(code, err, f"error: timeline {existing} already exists; VED never overwrites a recorded session")
    assert existing.read_bytes() == before


# ---------------------------------------------------------------- export
def test_export_never_writes_onto_its_source(tmp_path, capsys):
    timeline = tmp_path / "t.jsonl"
    write_session(timeline)
    before = timeline.read_bytes()
    code, _, err = call_main(["--export-csv", timeline, timeline], capsys)
    assert_user_error(code, err, f"error: the CSV target {timeline} is the timeline itself")
    notes = tmp_path / "notes.txt"
    notes.write_text("not a CSV export\n")
    code, _, err = call_main(["--export-csv", timeline, notes], capsys)
    assert_user_error(code, err, f"error: {notes} exists and is not a VED CSV export; VED does not overwrite it")
    assert timeline.read_bytes() == before and notes.read_text() == "not a CSV export\n"
    # A timeline saved as s.csv and exported without a target: the CSV goes beside it.
    odd = tmp_path / "s.csv"
    odd.write_bytes(before)
    code, out, err = call_main(["--export-csv", odd], capsys)
    assert code == 0, err
    assert odd.read_bytes() == before and f"to {tmp_path / 's-export.csv'}" in out
    assert len((tmp_path / "s-export.csv").read_text().splitlines()) == 1 + len(load_timeline(odd).predictions)


def test_export_skips_and_counts_malformed_prediction_lines(tmp_path, capsys):
    timeline = tmp_path / "t.jsonl"
    preds = write_session(timeline)
    lines = timeline.read_text().splitlines()
    wrong_types = json.loads(lines[2])
    wrong_types.update(start_s="0.5", probs={"anger": "high"})
    lines[2] = json.dumps(wrong_types)
    lines[4] = '{"type": "prediction", "start_s": 1.0}'
    timeline.write_text("\n".join(lines) + "\n")
    code, out, err = call_main(["--export-csv", timeline, tmp_path / "t.csv"], capsys)
    assert code == 0 and "Traceback" not in err, err
    assert f"wrote {len(preds) - 2} predictions" in out and "skipped 2 unreadable or malformed lines" in out
    assert len((tmp_path / "t.csv").read_text().splitlines()) == 1 + len(preds) - 2


def test_export_of_a_session_still_recording_says_so(tmp_path, capsys):
    timeline = tmp_path / "live.jsonl"
    with TimelineWriter(timeline, {"input": "test"}):
        code, out, err = call_main(["--export-csv", timeline, tmp_path / "live.csv"], capsys)
    assert code == 0, err
    assert "wrote 0 predictions" in out and "still recording" in out


# ---------------------------------------------------------------- names over 255 characters
def test_names_over_255_characters_are_one_line_errors(tmp_path, tone_wav, capsys):
    timeline = tmp_path / "t.jsonl"
    write_session(timeline)
    long_path = tmp_path / LONG_NAME
    cases = [
        (["--headless", "--input", tone_wav, "--out", tmp_path / f"{LONG_NAME}.jsonl"], "File name too long"),
        (["--headless", "--input", tmp_path / f"{LONG_NAME}.wav", "--out", tmp_path / "a.jsonl"],
         "File name too long"),
        (["--headless", "--input", tone_wav, "--out", tmp_path / "b.jsonl", "--model", long_path],
         "File name too long"),
        (["--export-csv", tmp_path / f"{LONG_NAME}.jsonl"], "File name too long"),
        (["--export-csv", timeline, tmp_path / f"{LONG_NAME}.csv"], "File name too long"),
        (["--headless", "--input", tone_wav, "--out", long_path / "s.jsonl"], "File name too long"),
    ]
    for argv, fragment in cases:
        code, _, err = call_main(argv, capsys)
        assert_user_error(code, err, fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.jsonl", "tone.wav"]


def test_an_internal_bug_is_exit_1_not_a_user_error(monkeypatch, tmp_path, capsys):
    """A plain ValueError from a bug is not dressed up as a user mistake."""
    import realtime.timeline as timeline

    def broken(path):
        raise ValueError("bug")

    monkeypatch.setattr(timeline, "load_timeline", broken)
    with pytest.raises(ValueError, match="bug"):
        ved_main.main(["--export-csv", str(tmp_path / "x.jsonl")])
    assert not ved_main.is_user_error(ValueError("bug"))
    assert ved_main.is_user_error(ved_main.UsageError("bad option"))


# ---------------------------------------------------------------- sessions (subprocess)
def run_main(*args, timeout_s: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(REPO_ROOT / "main.py"), *map(str, args)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout_s, env=env)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle"))


def test_decode_error_mid_file_warns_keeps_the_timeline_and_exits_2(bundle, emodb_dir, tmp_path):
    speech = write_speech_file(emodb_dir, tmp_path / "talk.wav", 6, gap_s=1.0)
    audio, rate = sf.read(str(speech), dtype="float32")
    flac = tmp_path / "talk.flac"
    sf.write(str(flac), audio, rate, subtype="PCM_16")
    raw = bytearray(flac.read_bytes())
    middle = len(raw) * 6 // 10
    raw[middle:middle + 8_000] = bytes(8_000)          # the decoder loses sync here
    flac.write_bytes(bytes(raw))
    out = tmp_path / "s.jsonl"
    result = run_main("--headless", "--input", flac, "--pace", "fast", "--model", bundle, "--out", out)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "input cut short: talk.flac could only be read up to" in errors[0], result.stderr
    assert "decoding failed" in errors[0] and str(out) in errors[0]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("[warning]")]
    assert len(warnings) == 1 and "the session ends here" in warnings[0], result.stderr
    session = load_timeline(out)
    assert session.complete and session.torn_lines == 0
    assert [s["state"] for s in session.statuses].count("warning") == 1
    read_up_to = float(errors[0].split("read up to ")[1].split(" s")[0])
    assert 0 < read_up_to < len(audio) / rate * 0.7
    assert 1 <= len(session.utterances()) and session.utterances()[-1].end_s <= read_up_to + 0.1


def _nan_weights(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    weights = folder / "model.safetensors"
    state = load_file(str(weights))
    save_file({k: v.fill_(float("nan")) if v.is_floating_point() else v for k, v in state.items()}, str(weights))


def _truncate_weights(folder: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


@pytest.fixture(scope="module")
def broken_bundles(bundle, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """name -> (bundle folder, fragment of the one error line)."""
    if not (bundle / "model.safetensors").is_file():
        pytest.skip(f"{bundle} is not a single torch bundle; the damage recipes here assume one")
    folder = tmp_path_factory.mktemp("broken")
    cases = {"missing": (folder / "missing", "not found")}
    for name, damage, fragment in (("nan", _nan_weights, "NaN or infinite"),
                                   ("truncated", _truncate_weights, "corrupt or truncated")):
        shutil.copytree(bundle, folder / name)
        damage(folder / name)
        cases[name] = (folder / name, fragment)
    return cases


def test_broken_bundles_stop_main_with_one_line(broken_bundles, emodb_dir, tmp_path):
    speech = write_speech_file(emodb_dir, tmp_path / "talk.wav", 2, gap_s=1.0)
    for name, (folder, fragment) in broken_bundles.items():
        out = tmp_path / f"{name}.jsonl"
        result = run_main("--headless", "--input", speech, "--pace", "fast", "--model", folder, "--out", out)
        assert result.returncode == 2 and "Traceback" not in result.stderr, (name, result.stderr)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and fragment in errors[0], (name, result.stderr)
        assert not out.exists(), name


def test_train_evaluate_on_a_broken_bundle_is_one_line(broken_bundles, emodb_dir, tmp_path, capsys):
    from train.cli import main as train_main

    for name, (folder, fragment) in broken_bundles.items():
        code = train_main(["evaluate", "--bundle", str(folder), "--dataset", "emodb", "--data", str(emodb_dir),
                           "--out", str(tmp_path / name), "--device", "cpu"])
        _, err = capsys.readouterr()
        # train checks its inputs before any work: a missing folder is "does not exist" there
        assert_user_error(code, err, "does not exist" if name == "missing" else fragment)
        assert not (tmp_path / name / "metrics.json").exists(), name
