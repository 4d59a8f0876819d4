"""`python -m train` as a hostile user drives it (issue 37): outputs never written over, hostile files never crash it.

Every case runs `train.cli.main()` in-process on one tiny real 2-fold cv run (EmoDB clips) and checks
what the reliability table promises: exit 2 with exactly one `error:` line on stderr and no
traceback (or exit 0 where the case is valid), no hang (an alarm fails a case after 300 s; refusals take well under a second), every
pre-existing file byte-identical afterwards, no output and no staging folder left behind on
failure. Hypothesis cases are derandomized; the module takes about a minute on 2 cores.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from test_train_run import TINY_ARGS, make_subset_csv
from train.cli import main as train_main
from train.outputs import REPO_MODELS

FUZZ = settings(derandomize=True, database=None, deadline=None, print_blob=False, max_examples=20,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
TIMELINE_HEADER = '{"type":"header","format_version":1,"started_utc":"2026-12-08T00:00:00Z"}\n'


@dataclass
class Outcome:
    code: int
    out: str
    err: str


class Hang(BaseException):
    """Raised by the alarm; a BaseException, so no `except Exception` (or OSError) in the code under test hides it."""


@contextmanager
def hang_alarm(seconds: int = 300):
    def fail(*_):
        raise Hang(f"no answer within {seconds} s")
    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_train(argv: list) -> Outcome:
    out, err = io.StringIO(), io.StringIO()
    with hang_alarm(), redirect_stdout(out), redirect_stderr(err):
        try:
            code = train_main([str(a) for a in argv])
        except SystemExit as exc:   # argparse
            code = exc.code
    return Outcome(code, out.getvalue(), err.getvalue())


def assert_refused(outcome: Outcome, *fragments: str) -> str:
    """Exit 2, stderr exactly one `error:` line holding every fragment, no traceback; returns the line."""
    text = outcome.out + outcome.err
    assert outcome.code == 2 and "Traceback" not in text, text[-3000:]
    lines = [line for line in outcome.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), outcome.err[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every file under the roots (FIFOs by name), keyed by path: detects changed, added
    and removed files."""
    state = {}
    for root in roots:
        for path in [root, *root.rglob("*")] if root.is_dir() else [root]:
            if path.is_file():
                state[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
            elif path.exists() and not path.is_dir():
                state[str(path)] = "special"
    return state


def no_staging_left(folder: Path) -> None:
    left = [p.name for p in folder.iterdir() if ".staging-" in p.name or ".replaced-" in p.name]
    assert not left, left


@pytest.fixture(scope="module")
def world(emodb_dir, tmp_path_factory) -> dict[str, Path]:
    """csv: labels.csv of 4 EmoDB speakers; a, b: the same finished 2-fold cv run (tiny conformer)."""
    root = tmp_path_factory.mktemp("nothing-lost")
    csv_path = make_subset_csv(emodb_dir, root / "data", ("11", "13", "14", "16"), 1)
    assert train_main(["cv", "--dataset", "csv", "--data", str(csv_path), *TINY_ARGS, "--epochs", "1",
                       "--folds", "2", "--out", str(root / "a")]) == 0
    shutil.copytree(root / "a", root / "b")
    return {"root": root, "csv": csv_path, "a": root / "a", "b": root / "b"}


def data_args(world) -> list:
    return ["--dataset", "csv", "--data", world["csv"]]


def command(name: str, world, out: Path | None, run: Path | None = None) -> list:
    """argv of subcommand `name` reading `run` (default world a) and writing `out`."""
    run = run or world["a"]
    tail = [] if out is None else ["--out", out]
    return {
        "fit": ["fit", *data_args(world), *TINY_ARGS, "--epochs", "1", *tail],
        "cv": ["cv", *data_args(world), *TINY_ARGS, "--epochs", "1", "--folds", "2", *tail],
        "loco": ["loco", "--dataset", "csv", "--data", world["csv"], "--dataset", "csv", "--data", world["csv"],
                 *TINY_ARGS, *tail],
        "evaluate": ["evaluate", "--bundle", run / "fold0", *data_args(world), *tail],
        "robustness": ["robustness", run, *data_args(world), *tail],
        "fuse": ["fuse", run, world["b"], *data_args(world), *tail],
        "report": ["report", run, *tail],
    }[name]


# ---------------------------------------------------------------- the output rule

@pytest.mark.parametrize("name", ["fit", "cv", "loco", "evaluate", "robustness", "fuse", "report"])
@pytest.mark.parametrize("existing", ["file", "folder", "dangling-link"])
def test_an_existing_output_is_refused_without_overwrite(world, tmp_path, name, existing):
    target = tmp_path / "mine"
    if existing == "file":
        target.write_text("my notes\n")
    elif existing == "folder":
        target.mkdir()
        (target / "keep.txt").write_text("keep me\n")
    else:
        target.symlink_to(tmp_path / "nowhere")
    before = snapshot(tmp_path, world["a"], world["csv"].parent)
    assert_refused(run_train(command(name, world, target)), str(target), "already exists", "--overwrite")
    assert snapshot(tmp_path, world["a"], world["csv"].parent) == before


def _never_targets(world, tmp_path) -> list[tuple[str, Path, str]]:
    timeline = tmp_path / "session.jsonl"
    timeline.write_text(TIMELINE_HEADER + '{"type":"prediction"}\n')
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    (sessions / "ved-20261208-000000.jsonl").write_text(TIMELINE_HEADER)
    cases = [(name, timeline, "timeline") for name in ("report", "robustness", "evaluate", "fit")]
    cases += [("fuse", sessions, "timeline"), ("cv", sessions, "timeline")]
    cases += [(name, REPO_MODELS / "default", "models/") for name in ("fit", "evaluate", "fuse", "report")]
    cases += [("evaluate", world["a"] / "fold0", "input"), ("fuse", world["a"] / "fold0", "input"),
              ("fuse", world["a"], "input"), ("report", world["a"] / "cv_metrics.json", "input"),
              ("robustness", world["a"] / "folds.json", "input"), ("fit", world["csv"].parent, "input"),
              ("cv", world["csv"], "input"), ("evaluate", world["b"] / "fold1", "trained model"),
              ("report", world["b"], "trained model")]
    return cases


def test_timelines_models_and_inputs_are_never_written_over_even_with_overwrite(world, tmp_path):
    for name, target, why in _never_targets(world, tmp_path):
        before = snapshot(tmp_path, world["a"], world["csv"].parent, target)
        line = assert_refused(run_train([*command(name, world, target), "--overwrite"]), "never written over")
        assert why in line, (name, line)
        assert snapshot(tmp_path, world["a"], world["csv"].parent, target) == before, (name, target)
    for argv in (["set-level", REPO_MODELS / "default", "--level-dbfs", "-20"],
                 ["calibrate", REPO_MODELS / "primary"], ["robustness", REPO_MODELS / "primary", *data_args(world)]):
        before = snapshot(Path(argv[1]))
        assert_refused(run_train(argv), "models/")
        assert snapshot(Path(argv[1])) == before


def test_cv_refuses_a_finished_run_and_a_finished_fold_without_resume(world, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(world["a"], run)
    before = snapshot(run)
    assert_refused(run_train(command("cv", world, run)), "already exists")
    assert_refused(run_train([*command("cv", world, run), "--fold", "1"]), "fold1", "already finished", "--resume")
    assert snapshot(run) == before


def test_overwrite_replaces_only_a_complete_output(world, tmp_path):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "keep.txt").write_text("old result\n")
    one_class = tmp_path / "one" / "labels.csv"
    one_class.parent.mkdir()
    rows = [line for line in world["csv"].read_text().splitlines()[1:] if ",anger," in line]
    one_class.write_text("file,label,speaker\n" + "\n".join(rows) + "\n")
    before = snapshot(out)
    failed = run_train(["evaluate", "--bundle", world["a"] / "fold0", "--dataset", "csv", "--data", one_class,
                        "--out", out, "--overwrite"])
    assert failed.code == 2 and "Traceback" not in failed.err   # fails after the staging folder was made
    assert snapshot(out) == before
    no_staging_left(tmp_path)
    assert run_train([*command("evaluate", world, out), "--overwrite"]).code == 0
    assert not (out / "keep.txt").exists() and json.loads((out / "metrics.json").read_text())["eval"]["n"] > 0
    no_staging_left(tmp_path)


# ---------------------------------------------------------------- hostile input files

# (subcommand, file under the run it reads, a key that file's reader needs)
HOSTILE_TARGETS = [
    ("fuse", "folds.json", "folds"), ("fuse", "fold0/metrics.json", "eval"), ("fuse", "fold1/metrics.json", "eval"),
    ("fuse", "cv_metrics.json", "summary"), ("robustness", "folds.json", "folds"),
    ("robustness", "fold0/bundle.json", "labels"), ("report", "fold0/metrics.json", "eval"),
    ("report", "cv_metrics.json", "summary"), ("evaluate", "fold0/bundle.json", "labels"),
    ("evaluate", "fold0/bundle.json", "model"), ("evaluate-ensemble", "ensemble.json", "members"),
    ("set-level", "fold1/bundle.json", "feature"), ("teacher", "folds.json", "speaker_fold"),
    ("teacher", "ensemble.json", "members"), ("resume", "fold1/metrics.json", "eval"),
]
MUTATIONS = ["deep", "nan", "huge-int", "long-string", "wrong-type", "missing", "list", "truncated", "not-utf8",
             "fifo"]


def mutate(path: Path, mutation: str, key: str, scalar) -> None:
    doc = json.loads(path.read_text())
    if mutation == "fifo":
        path.unlink()
        os.mkfifo(path)
        return
    text = {
        "deep": lambda: json.dumps({**doc, key: None})[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
        "nan": lambda: json.dumps({**doc, "x": float("nan")}),
        "huge-int": lambda: json.dumps(doc)[:-1] + ', "x": ' + "7" * 5000 + "}",
        "long-string": lambda: json.dumps({**doc, "x": "y" * (2 << 20)}),
        "wrong-type": lambda: json.dumps({**doc, key: scalar}),
        "missing": lambda: json.dumps({k: v for k, v in doc.items() if k != key}),
        "list": lambda: json.dumps([doc]),
        "truncated": lambda: json.dumps(doc)[: len(json.dumps(doc)) // 2],
    }.get(mutation)
    if text is None:   # not-utf8
        path.write_bytes(json.dumps(doc).encode()[:-1] + b', "\xff\xfe": 1}')
    else:
        path.write_text(text())


def hostile_argv(name: str, world, run: Path, out: Path) -> list:
    if name == "evaluate-ensemble":
        return ["evaluate", "--bundle", run, *data_args(world), "--out", out]
    if name == "set-level":
        return ["set-level", run, "--level-dbfs", "-25"]
    if name == "resume":   # cv --resume reuses the finished folds' metrics.json
        return ["cv", *data_args(world), *TINY_ARGS, "--epochs", "1", "--folds", "2", "--resume", "--out", run]
    if name == "teacher":
        return ["cv", *data_args(world), *TINY_ARGS, "--epochs", "1", "--folds", "2", "--teacher", run, "--out", out]
    return command(name, world, out, run)


@settings(FUZZ)
@given(target=st.sampled_from(HOSTILE_TARGETS), mutation=st.sampled_from(MUTATIONS),
       scalar=st.one_of(st.integers(-10**6, 10**6), st.text(max_size=8), st.booleans()))
def test_fuzz_hostile_run_files_give_one_line_and_change_nothing(world, tmp_path, target, mutation, scalar):
    name, relative, key = target
    assume(not (mutation == "missing" and relative == "cv_metrics.json"))   # optional there: a valid run
    case = Path(os.path.join(tmp_path, f"case-{os.urandom(4).hex()}"))   # a fresh folder per example
    run = case / "a"
    shutil.copytree(world["a"], run)
    mutate(run / relative, mutation, key, scalar)
    out = case / "out"
    before = snapshot(run, world["b"])
    outcome = run_train(hostile_argv(name, world, run, out))
    line = assert_refused(outcome)
    assert Path(relative).name in line or (name == "teacher" and "ensemble" in line), line
    assert snapshot(run, world["b"]) == before
    assert not out.exists()
    no_staging_left(case)


# ---------------------------------------------------------------- numbers and special files

VALID_VALUES = {"--snr-db": ("0", "-1"), "--gain-db": ("0", "-1"), "--weight-decay": ("0",), "--seed": ("0",),
                "--label-smoothing": ("0",), "--val-fraction": ("0",), "--mixup-alpha": ("0",),
                "--teacher-weight": ("0",)}
NUMBER_CASES = [("robustness", "--gain-db"), ("robustness", "--snr-db"), ("robustness", "--rt60-s"),
                ("robustness", "--batch-size"), ("evaluate", "--batch-size"), ("fuse", "--batch-size"),
                ("fit", "--epochs"), ("fit", "--lr"), ("fit", "--batch-size"), ("fit", "--weight-decay"),
                ("fit", "--label-smoothing"), ("fit", "--teacher-weight"), ("cv", "--folds"), ("cv", "--seed"),
                ("fit", "--threads"), ("fit", "--val-fraction"), ("fit", "--mixup-alpha")]


@settings(FUZZ)
@given(case=st.sampled_from(NUMBER_CASES),
       value=st.sampled_from(["nan", "inf", "-inf", "1e308", "-1e308", "0", "-1", "99999999999999999999999"]))
def test_fuzz_numbers_out_of_range_are_one_line(world, tmp_path, case, value):
    name, option = case
    if value in VALID_VALUES.get(option, ()):
        value = "-1e9"
    out = Path(os.path.join(tmp_path, f"out-{os.urandom(4).hex()}"))
    argv = [*command(name, world, None if name == "robustness" else out), option, value]
    before = snapshot(world["a"])
    assert_refused(run_train(argv), option)
    assert snapshot(world["a"]) == before and not out.exists()


def test_special_files_are_refused_without_being_opened(world, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    run = tmp_path / "run"
    shutil.copytree(world["a"], run)
    (run / "folds.json").unlink()
    os.mkfifo(run / "folds.json")
    (run / "fold0" / "bundle.json").unlink()
    os.mkfifo(run / "fold0" / "bundle.json")
    cases = [(["fit", "--dataset", "csv", "--data", fifo, *TINY_ARGS, "--out", tmp_path / "o"], "FIFO"),
             (["fit", "--dataset", "crema-d", "--data", world["csv"].parent, "--manifest", fifo, *TINY_ARGS,
               "--out", tmp_path / "o"], "FIFO"),
             (["evaluate", "--bundle", fifo, *data_args(world), "--out", tmp_path / "o"], "FIFO"),
             (["evaluate", "--bundle", "/dev/zero", *data_args(world), "--out", tmp_path / "o"], "device"),
             (["robustness", run, *data_args(world)], "FIFO"),
             (["evaluate", "--bundle", run / "fold0", *data_args(world), "--out", tmp_path / "o"], "FIFO"),
             (["report", fifo], "FIFO")]
    for argv, fragment in cases:
        assert_refused(run_train(argv), fragment)
    assert not (tmp_path / "o").exists()


def test_set_level_checks_every_bundle_before_writing_any(world, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(world["a"], run)
    meta = json.loads((run / "fold1" / "bundle.json").read_text())
    (run / "fold1" / "bundle.json").write_text(json.dumps({**meta, "feature": "logmel"}))
    before = snapshot(run)
    assert_refused(run_train(["set-level", run, "--level-dbfs", "-25"]), "fold1", "feature")
    assert snapshot(run) == before
    (run / "fold1" / "bundle.json").write_text(json.dumps(meta))
    weights = run / "fold1" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])   # valid JSON everywhere, fold 1 cannot load
    before = snapshot(run)
    assert_refused(run_train(["set-level", run, "--level-dbfs", "-25"]), "nothing written")
    assert snapshot(run) == before


def test_csv_rows_outside_the_folder_short_rows_and_bad_encoding_are_one_line(world, tmp_path):
    table = world["csv"].parent / "case.csv"   # beside the clips, so the good rows are inside its folder
    good = world["csv"].read_text()
    try:
        _csv_cases(world, tmp_path, table, good)
    finally:
        table.unlink(missing_ok=True)


def _csv_cases(world, tmp_path, table: Path, good: str) -> None:
    cases = [(good + "../../../etc/passwd,anger,x\n", "outside the CSV's folder"),
             (good + "/etc/hostname,anger,x\n", "outside the CSV's folder"),
             (good + "just-one-column\n", "three columns"),
             ("file,label,speaker\nx.wav,anger,\n", "'speaker' is empty")]
    for text, fragment in cases:
        table.write_text(text)
        assert_refused(run_train(command("fit", {**world, "csv": table}, tmp_path / "o")), str(table), fragment)
    table.write_bytes(b"file,label,speaker\nx\xe9.wav,anger,s1\n")
    assert_refused(run_train(command("fit", {**world, "csv": table}, tmp_path / "o")), str(table), "UTF-8")
    table.write_text(good.replace("file,label,speaker\n", "file,label,speaker\n../outside.wav,anger,x\n", 1))
    before = snapshot(world["a"])   # set-level refuses --data with --level-dbfs after the CSV was checked: quick
    allowed = run_train(["set-level", world["a"], "--level-dbfs", "-25", "--dataset", "csv", "--data", table,
                         "--allow-outside-paths"])
    assert_refused(allowed, "not both")
    assert "--allow-outside-paths: 1 file(s)" in allowed.out and "../outside.wav" in allowed.out
    assert snapshot(world["a"]) == before
