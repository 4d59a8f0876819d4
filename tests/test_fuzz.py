"""Fuzz suite: mutated timelines, command-line values, audio files and model bundles (hypothesis).

Every generated case goes through `main.main()` in-process (a handful also through the real
program as a subprocess), and each must hold the promises of the README's reliability table:
* exit code 0 or 2 (1 would be an internal bug; any other exception escaping main() fails too);
* on failure exactly one line starting with `error:`, on success none;
* no traceback anywhere in the output;
* finished within a bound (seconds per case, far above the normal time: a hang fails);
* no pre-existing file changed (the input, the bundle, earlier timelines and CSVs stay byte-identical).
Examples are derandomized so CI runs the same cases every time; the whole module takes about a
minute on the 2-core CI machine.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest
import soundfile as sf
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

import main as ved_main
from engine_support import REPO_ROOT, write_speech_file
from realtime.timeline import CSV_COLUMNS, load_timeline
from test_timeline import write_session

FUZZ = settings(derandomize=True, database=None, deadline=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])

# ---------------------------------------------------------------- running and checking one case


@dataclass
class Outcome:
    code: int
    out: str
    err: str
    elapsed_s: float


def run_main(argv: list) -> Outcome:
    """main.main() in-process with stdout/stderr captured; exceptions other than SystemExit
    propagate (they are the tracebacks this suite hunts)."""
    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = ved_main.main([str(a) for a in argv])
        except SystemExit as exc:   # argparse
            code = exc.code
    return Outcome(code, out.getvalue(), err.getvalue(), time.monotonic() - started)


def check(outcome: Outcome, bound_s: float) -> None:
    text = outcome.out + outcome.err
    assert outcome.code in (0, 2), f"exit {outcome.code}:\n{text[-3000:]}"
    assert "Traceback" not in text, text[-3000:]
    errors = [line for line in outcome.err.splitlines() if line.startswith("error:")]
    assert len(errors) == (1 if outcome.code == 2 else 0), outcome.err[-3000:]
    assert outcome.elapsed_s < bound_s, f"took {outcome.elapsed_s:.1f} s (bound {bound_s} s)"
    reason = outcome.err.split("error: ")[1] if outcome.code == 2 else ""
    if currently_in_test_context():   # outcome statistics: pytest --hypothesis-show-statistics
        event(f"exit {outcome.code} {' '.join(w for w in reason.split()[:6] if '/' not in w)[:50]}")


def snapshot(*roots: Path) -> dict[Path, str]:
    """sha256 of every file under the given folders/files."""
    files = [p for root in roots for p in ([root] if root.is_file() else root.rglob("*")) if p.is_file()]
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def assert_unchanged(before: dict[Path, str]) -> None:
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "gone" for p in before}
    changed = [str(p) for p in before if after[p] != before[p]]
    assert not changed, f"pre-existing files changed: {changed}"


def fresh_folder(parent: Path) -> Path:
    return Path(tempfile.mkdtemp(dir=parent))


# ---------------------------------------------------------------- strategies
JSON_LEAVES = (st.none() | st.booleans() | st.sampled_from([-1, 0, 1, 2, 3, 5, 8, 63, 64, 10 ** 12, -(10 ** 12)])
               | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12))
JSON_VALUES = st.recursive(JSON_LEAVES, lambda kids: st.lists(kids, max_size=3)
                           | st.dictionaries(st.text(max_size=6), kids, max_size=3), max_leaves=6)
# What a shell can pass: no NUL, no lone surrogates other than surrogateescape's.
ARG_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)


def byte_edits(max_edits: int = 4):
    """[(kind, position fraction, payload)]: flip/overwrite bytes, truncate, insert junk."""
    return st.lists(st.tuples(st.sampled_from(["overwrite", "overwrite", "zero", "insert", "truncate"]),
                              st.floats(0.0, 1.0), st.binary(min_size=1, max_size=64)), min_size=1, max_size=max_edits)


def apply_byte_edits(data: bytes, edits, header_bytes: int | None = None) -> bytes:
    """Edits at fractions of the file (or of its first header_bytes when given)."""
    out = bytearray(data)
    for kind, where, payload in edits:
        span = min(len(out), header_bytes) if header_bytes else len(out)
        at = int(where * max(span - 1, 0))
        if kind == "overwrite":
            out[at:at + len(payload)] = payload
        elif kind == "zero":
            out[at:at + 4096] = bytes(len(out[at:at + 4096]))
        elif kind == "insert":
            out[at:at] = payload
        else:
            del out[at:]
    return bytes(out)


# ---------------------------------------------------------------- timelines -> --export-csv
TIMELINE_EDITS = st.lists(st.one_of(
    st.tuples(st.just("retype"), st.integers(0, 20), st.sampled_from(
        ["type", "start_s", "end_s", "probs", "label", "model", "latency_ms", "kind", "queue_depth", "fallback",
         "format_version", "vad"]), JSON_VALUES),
    st.tuples(st.just("drop"), st.integers(0, 20), st.none(), st.none()),
    st.tuples(st.just("duplicate"), st.integers(0, 20), st.none(), st.none()),
    st.tuples(st.just("bytes"), st.integers(0, 0), st.none(), byte_edits(2)),
), min_size=1, max_size=4)


def mutate_timeline(path: Path, edits) -> None:
    lines = path.read_bytes().split(b"\n")
    for kind, index, key, value in edits:
        i = index % max(len(lines), 1)
        if kind == "retype" and lines:
            try:
                record = json.loads(lines[i])
            except ValueError:
                continue
            if isinstance(record, dict):
                record[key] = value
                lines[i] = json.dumps(record).encode()
        elif kind == "drop" and lines:
            del lines[i]
        elif kind == "duplicate" and lines:
            lines.insert(i, lines[i])
        elif kind == "bytes":
            lines = apply_byte_edits(b"\n".join(lines), value).split(b"\n")
    path.write_bytes(b"\n".join(lines))


@settings(FUZZ, max_examples=80)
@given(edits=TIMELINE_EDITS, target=st.sampled_from(["default", "csv", "itself", "foreign", "earlier-export"]))
def test_fuzz_timeline_export(tmp_path, edits, target):
    folder = fresh_folder(tmp_path)
    timeline = folder / "session.jsonl"
    write_session(timeline)
    mutate_timeline(timeline, edits)
    (folder / "notes.csv").write_text("my notes, not an export\n")
    (folder / "old.csv").write_text(",".join(CSV_COLUMNS) + "\n")
    before = snapshot(folder)
    argv = {"default": [timeline], "csv": [timeline, folder / "out.csv"], "itself": [timeline, timeline],
            "foreign": [timeline, folder / "notes.csv"], "earlier-export": [timeline, folder / "old.csv"]}[target]
    outcome = run_main(["--export-csv", *argv])
    check(outcome, bound_s=10)
    if target == "earlier-export" and outcome.code == 0:
        before.pop(folder / "old.csv")          # replacing an earlier export is what was asked
    assert_unchanged(before)
    if target in ("itself", "foreign"):
        assert outcome.code == 2
    if outcome.code == 0:
        written = int(outcome.out.split("wrote ")[1].split(" ")[0])
        csv_path = Path(outcome.out.split(" to ")[1].split(" (")[0].strip())
        assert len(csv_path.read_text().splitlines()) == 1 + written


# ---------------------------------------------------------------- command-line values (no model loads)
NUMBER_TEXT = st.one_of(st.integers(-10 ** 40, 10 ** 40).map(str), st.floats(allow_nan=True).map(str),
                        st.sampled_from(["0", "-1", "1e309", "nan", "inf", "", " ", "10" * 30]), ARG_TEXT)
OPTIONS = {"--hop-ms": NUMBER_TEXT, "--window-ms": NUMBER_TEXT, "--hangover-ms": NUMBER_TEXT,
           "--min-utterance-ms": NUMBER_TEXT, "--max-utterance-ms": NUMBER_TEXT,
           "--vad-aggressiveness": NUMBER_TEXT, "--latency-budget-ms": NUMBER_TEXT, "--plot-window-s": NUMBER_TEXT,
           "--pace": st.sampled_from(["fast", "realtime"]) | ARG_TEXT,
           "--compute": st.sampled_from(["cpu", "auto"]) | ARG_TEXT}


@settings(FUZZ, max_examples=80)
@given(options=st.dictionaries(st.sampled_from(sorted(OPTIONS)), st.none(), max_size=5).flatmap(
           lambda keys: st.fixed_dictionaries({k: OPTIONS[k] for k in keys})),
       flags=st.lists(st.sampled_from(["--no-partials", "--show-partials"]), max_size=2, unique=True),
       out_kind=st.sampled_from(["new", "existing", "folder", "too-long", "proc", "text"]),
       out_text=ARG_TEXT)
def test_fuzz_command_line_values(tmp_path, options, flags, out_kind, out_text):
    """Odd option values and output paths; the input is not audio, so no model is ever loaded."""
    folder = fresh_folder(tmp_path)
    not_audio = folder / "talk.wav"
    not_audio.write_text("not audio\n")
    existing = folder / "earlier.jsonl"
    write_session(existing)
    out = {"new": folder / "s.jsonl", "existing": existing, "folder": folder, "too-long": folder / ("x" * 300),
           "proc": Path("/proc/ved-fuzz/s.jsonl"), "text": folder / (out_text or "t")}[out_kind]
    before = snapshot(folder)
    argv = ["--headless", "--input", not_audio, "--out", out, *flags]
    for name, value in options.items():
        argv += [f"{name}={value}"]
    outcome = run_main(argv)
    check(outcome, bound_s=10)
    assert outcome.code == 2           # the input is never audio
    assert_unchanged(before)
    assert sorted(p.name for p in folder.iterdir()) == ["earlier.jsonl", "talk.wav"]


# ---------------------------------------------------------------- audio files (one model, loaded once)
LOADED: dict[str, object] = {}   # the tiny bundle's classifier, loaded once for the audio cases


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    """A small untrained Conformer bundle: loads in a fraction of a second."""
    from models.bundle import save_bundle
    from models.registry import build_model

    target = tmp_path_factory.mktemp("tiny") / "tiny-conformer"
    model = build_model("conformer-v1", d_model=64, n_blocks=1, n_heads=2, subsampling_channels=16)
    save_bundle(target, model, "conformer-v1", meta={"training": {"note": "untrained, fuzz tests only"}})
    return target


@pytest.fixture(scope="module")
def speech_files(emodb_dir, tmp_path_factory) -> dict[str, bytes]:
    """About 5 s of real speech as WAV and as FLAC bytes."""
    folder = tmp_path_factory.mktemp("speech")
    wav = write_speech_file(emodb_dir, folder / "talk.wav", 2, gap_s=0.5)
    audio, rate = sf.read(str(wav), dtype="float32")
    sf.write(str(folder / "talk.flac"), audio, rate, subtype="PCM_16")
    return {".wav": wav.read_bytes(), ".flac": (folder / "talk.flac").read_bytes()}


@settings(FUZZ, max_examples=20)
@given(suffix=st.sampled_from([".wav", ".flac"]), edits=byte_edits(3), in_header=st.sampled_from([False, False, True]))
def test_fuzz_audio_files(tmp_path, monkeypatch, tiny_bundle, speech_files, suffix, edits, in_header):
    import realtime.wiring as wiring

    if "classifier" not in LOADED:
        LOADED["classifier"] = wiring.load_model(str(tiny_bundle), "cpu")
    monkeypatch.setattr(wiring, "load_model", lambda *args, **kwargs: LOADED["classifier"])
    folder = fresh_folder(tmp_path)
    audio = folder / f"talk{suffix}"
    audio.write_bytes(apply_byte_edits(speech_files[suffix], edits, header_bytes=64 if in_header else None))
    before = snapshot(folder, tiny_bundle)
    out = folder / "s.jsonl"
    outcome = run_main(["--headless", "--input", audio, "--pace", "fast", "--no-partials", "--model", tiny_bundle,
                        "--out", out])
    check(outcome, bound_s=60)
    assert_unchanged(before)
    if outcome.code == 0:
        assert load_timeline(out).complete
    elif out.exists():      # cut short mid-file: the timeline is kept and complete
        assert "input cut short" in outcome.err and load_timeline(out).complete


# ---------------------------------------------------------------- model bundles
BUNDLE_KEYS = [("model", "name"), ("model", "args", "d_model"), ("model", "args", "n_heads"),
               ("model", "args", "n_blocks"), ("model", "args", "dropout"), ("model", "args", "conv_kernel_size"),
               ("model", "args"), ("model",), ("labels",), ("format_version",), ("kind",), ("sample_rate_hz",),
               ("feature",)]


def edit_bundle_json(path: Path, key_path: tuple[str, ...], value, delete: bool) -> None:
    meta = json.loads(path.read_text())
    node = meta
    for key in key_path[:-1]:
        if not isinstance(node.get(key), dict):
            return
        node = node[key]
    if delete:
        node.pop(key_path[-1], None)
    else:
        node[key_path[-1]] = value
    path.write_text(json.dumps(meta))


@settings(FUZZ, max_examples=30)
@given(key=st.sampled_from(BUNDLE_KEYS), value=JSON_VALUES, delete=st.booleans(),
       weight_edits=st.none() | byte_edits(2))
def test_fuzz_model_bundles(tmp_path, tiny_bundle, speech_files, key, value, delete, weight_edits):
    import shutil

    folder = fresh_folder(tmp_path)
    bundle = folder / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    edit_bundle_json(bundle / "bundle.json", key, value, delete)
    weights = bundle / "model.safetensors"
    if weight_edits is not None and weights.is_file():
        weights.write_bytes(apply_byte_edits(weights.read_bytes(), weight_edits))
    audio = folder / "talk.wav"
    audio.write_bytes(speech_files[".wav"])
    before = snapshot(folder)
    out = folder / "s.jsonl"
    outcome = run_main(["--headless", "--input", audio, "--pace", "fast", "--no-partials", "--model", bundle,
                        "--out", out])
    check(outcome, bound_s=60)
    assert_unchanged(before)
    assert outcome.code == 2 or load_timeline(out).complete


# ---------------------------------------------------------------- the real program, a few cases
@pytest.mark.parametrize("argv", [
    ["--headless", "--hop-ms", "1e999"],
    ["--headless", "--input", "x" * 300 + ".wav"],
    ["--export-csv", "/proc/self/status"],
    ["--export-csv", "a", "b", "c"],
    ["--headless", "--input", "/dev/null", "--window-ms", "100000000000000000000000000000"],
])
def test_fuzz_cases_through_the_real_program(argv, tmp_path):
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(REPO_ROOT / "main.py"), *argv], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60, env={**os.environ, "OMP_NUM_THREADS": "1"})
    check(Outcome(result.returncode, result.stdout, result.stderr, time.monotonic() - started), bound_s=60)
    assert result.returncode == 2 and list(tmp_path.iterdir()) == []
