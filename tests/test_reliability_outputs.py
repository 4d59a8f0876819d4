"""Outputs `main.py --headless` cannot write: impossible paths, a read-only folder (run as an
unprivileged user), a full disk at start and a disk that fills up mid-session (subprocesses)."""
from __future__ import annotations

import errno
import grp
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from engine_support import REPO_ROOT, make_bundle, write_speech_file
from realtime.timeline import load_timeline
from reliability_support import assert_user_error, child_env, main_cmd, run_main


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="module")
def speech_file(emodb_dir, tmp_path_factory) -> Path:
    """3 EmoDB clips with 1.5 s gaps (WAV)."""
    return write_speech_file(emodb_dir, tmp_path_factory.mktemp("speech") / "talk.wav", 3, gap_s=1.5, lead_s=0.5)


def _tiny_tmpfs(path: Path, size: str) -> str:
    """Mount a tmpfs of `size` at path; returns "" or why it cannot (not root, no mount)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return "mounting a tiny tmpfs needs root"
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                            capture_output=True, text=True, check=False)
    return "" if result.returncode == 0 else f"mount failed: {result.stderr.strip()}"


def _unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def test_unwritable_outputs_fail_at_start(speech_file, tmp_path):
    cases = [(Path("/proc/ved-test/s.jsonl"), "cannot create timeline folder"),
             (Path("/proc/ved-session.jsonl"), "free in /proc"),
             (tmp_path, "is a folder")]
    for out, fragment in cases:
        # The --model folder does not exist: getting the output error proves the output is
        # checked before the model loads (no minutes wasted loading a model for nothing).
        assert_user_error(run_main("--headless", "--input", speech_file, "--model", tmp_path / "unused",
                                   "--out", out), fragment)


def _unprivileged_prefix() -> list[str]:
    """Command prefix that runs a child as `nobody` when the tests run as root (root may write
    into a read-only folder, so the check would pass for the wrong reason); [] otherwise."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root and setpriv (util-linux) is missing: cannot drop to an unprivileged user")
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("running as root and there is no 'nobody' user to drop to")
    return ["setpriv", "--reuid=nobody", "--regid=nogroup" if _has_group("nogroup") else "--regid=nobody",
            "--clear-groups", "--"]


def _has_group(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def test_read_only_folder_for_out_is_refused_for_an_unprivileged_user(speech_file):
    """Really exercised in CI (which runs as root): the program runs as `nobody`."""
    prefix = _unprivileged_prefix()
    # tmp_path (/tmp/pytest-of-root, mode 700) is closed to nobody: use a folder anyone can enter.
    folder = Path(tempfile.mkdtemp(prefix="ved-readonly-", dir="/tmp"))
    try:
        folder.chmod(0o755)
        audio = folder / "talk.wav"
        shutil.copyfile(speech_file, audio)
        audio.chmod(0o644)
        locked = folder / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        probe = subprocess.run([*prefix, sys.executable, "-c", "import os, numpy, soundfile; print(os.geteuid())"],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
        if probe.returncode != 0:
            pytest.skip(f"the unprivileged user cannot run this Python: {probe.stderr.strip()[-300:]}")
        assert prefix == [] or probe.stdout.strip() != "0"
        env = {**child_env(), "PYTHONDONTWRITEBYTECODE": "1", "HOME": str(folder)}
        result = subprocess.run([*prefix, *main_cmd("--headless", "--input", audio, "--out", locked / "s.jsonl")],
                                cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, env=env)
        assert_user_error(result, f"timeline folder {locked} is not writable")
        assert list(locked.iterdir()) == []
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_full_disk_is_reported_at_start(speech_file, tmp_path):
    mount_point = tmp_path / "tiny"
    reason = _tiny_tmpfs(mount_point, "1m")
    if reason:
        pytest.skip(reason)
    try:
        result = run_main("--headless", "--input", speech_file, "--out", mount_point / "s.jsonl")
        assert_user_error(result, "MB free in")
        assert not (mount_point / "s.jsonl").exists()
    finally:
        _unmount(mount_point)


def test_disk_filling_up_mid_session_is_reported_once_and_the_run_ends_cleanly(bundle, emodb_dir, tmp_path):
    """The timeline sits on a 6 MB tmpfs that fills up mid-session: one error line, no traceback,
    the lines written before the disk filled reload."""
    mount_point = tmp_path / "small"
    reason = _tiny_tmpfs(mount_point, "6m")
    if reason:
        pytest.skip(reason)
    try:
        audio = write_speech_file(emodb_dir, tmp_path / "long.wav", 12, gap_s=1.0)
        out = mount_point / "s.jsonl"
        process = subprocess.Popen(main_cmd("--headless", "--input", audio, "--pace", "realtime", "--model",
                                            bundle, "--out", out), cwd=REPO_ROOT, env=child_env(),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and (not out.exists() or '"kind":"utterance"' not in out.read_text()):
            time.sleep(0.2)
        _fill_disk(mount_point / "filler")
        _, stderr = process.communicate(timeout=120)
        assert "Traceback" not in stderr, stderr
        assert process.returncode in (0, 2), stderr
        disk_errors = [line for line in stderr.splitlines() if "No space left" in line]
        assert len(disk_errors) == 1, stderr
        session = load_timeline(out)
        assert session.torn_lines <= 1 and len(session.utterances()) >= 1
    finally:
        _unmount(mount_point)


def _fill_disk(path: Path) -> None:
    """Write zeros to `path` until the file system is full (unbuffered, so close cannot fail)."""
    with open(path, "wb", buffering=0) as filler:
        try:
            while True:
                filler.write(b"\0" * 65536)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
