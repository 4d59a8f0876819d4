"""main.py as a subprocess, for the reliability tests: command, environment, runs, and the
checks every user error and clean run must pass."""
from __future__ import annotations

import os
import subprocess
import sys

from engine_support import REPO_ROOT


def main_cmd(*args) -> list[str]:
    return [sys.executable, str(REPO_ROOT / "main.py"), *map(str, args)]


def child_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}


def run_main(*args, timeout_s: float = 180):
    return subprocess.run(main_cmd(*args), cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout_s, env=child_env())


def run_many(arg_lists: list[tuple], max_parallel: int = 4, timeout_s: float = 300) -> list:
    """Run several main.py invocations, up to max_parallel at a time; CompletedProcess per call."""
    results: list = []
    for first in range(0, len(arg_lists), max_parallel):
        batch = [subprocess.Popen(main_cmd(*args), cwd=REPO_ROOT, env=child_env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for args in arg_lists[first:first + max_parallel]]
        for process in batch:
            stdout, stderr = process.communicate(timeout=timeout_s)
            results.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    return results


def assert_user_error(result, fragment: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], result.stderr


def assert_clean_run(result) -> None:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
