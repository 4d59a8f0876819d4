"""Session files that must never be written twice at once: nothing a user recorded is lost.

* `create_exclusively(path)`: a new file that must not exist yet (O_EXCL: two processes can never
  both create it), held under an exclusive advisory lock (flock) until closed.
* `is_locked(path)`: True while another open file holds that lock (a session still writing).
Files that replace others (CSV exports, reports, bundles) go through models/atomic.py. Torch-free.
"""
from __future__ import annotations

import fcntl
import os
from typing import TextIO


def create_exclusively(path: str | os.PathLike) -> TextIO:
    """Create `path` (which must not exist: FileExistsError) for appending text, with an exclusive
    flock held until the handle is closed. OSError propagates."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return os.fdopen(fd, "w", encoding="utf-8")
    except BaseException:
        os.close(fd)
        raise


def is_locked(path: str | os.PathLike) -> bool:
    """True when another open file description holds an exclusive flock on `path` (a live session)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False
