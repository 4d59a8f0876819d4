"""File safety shared by the timeline, the CSV export and the CLIs: nothing a user recorded is lost.

* `replace_atomically(path, write)`: a file that replaces another is written to a temporary file
  in the same folder, fsync'd, then renamed over the target in one step: a crash or a full disk
  leaves either the old file or the new one, never half of each.
* `create_exclusively(path)`: a new file that must not exist yet (O_EXCL: two processes can never
  both create it), held under an exclusive advisory lock (flock) until closed.
* `is_locked(path)`: True while another open file holds that lock (a session still writing).
Torch-free.
"""
from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path
from typing import Callable, TextIO


def replace_atomically(path: str | os.PathLike, write: Callable[[TextIO], None], newline: str | None = None) -> None:
    """Write a text file through `write(handle)` and move it over `path` atomically.

    The temporary file (".NAME.<random>.tmp" beside the target) is removed when anything fails;
    OSError propagates for the caller to word.
    """
    target = Path(path)
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name[:200]}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    _fsync_folder(target.parent)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (best effort: some file systems refuse O_RDONLY on folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
