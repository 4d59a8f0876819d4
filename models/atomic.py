"""The one way VED replaces a file: bundles, feature caches, timeline CSV exports, reports.

    write_atomically(path, write)                    write(tmp_path) fills a temporary file, renamed over path
    write_text_atomically(path, write, newline=None) the same with write(handle) on a UTF-8 text handle
    save_npy_atomically(path, a)                     one numpy array (.npy format, `path` kept as given)

The temporary file is unique to the writer (".NAME.<random>.tmp" beside `path`), fsync'd before
it is renamed over `path`, and the folder is fsync'd after the rename. So a job killed mid-write,
a crash or a full disk leaves either the old file or the new one, never a truncated `path` that a
later run would take as complete; and two jobs writing the same cache entry at once never rename
each other's temporary file away. Torch-free; imports nothing else of VED.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, TextIO

import numpy as np

FILE_MODE = 0o644  # mkstemp creates 0600; bundles and caches are meant to be read by other users


def write_atomically(path: str | os.PathLike, write: Callable[[Path], object]) -> None:
    """Call write(tmp) for a fresh temporary file in path's folder, fsync it, rename it over `path`,
    fsync the folder. The temporary file is removed when anything before the rename fails; the error
    (OSError for a full disk) propagates for the caller to word."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name[:200]}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        _fsync_file(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(target.parent)


def write_text_atomically(path: str | os.PathLike, write: Callable[[TextIO], object],
                          newline: str | None = None) -> None:
    """write_atomically for text: write(handle) gets the temporary file open for UTF-8 writing
    (`newline` as for open(); "" for csv writers)."""
    def fill(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline=newline) as handle:
            write(handle)
    write_atomically(path, fill)


def save_npy_atomically(path: str | os.PathLike, array: np.ndarray) -> None:
    """np.save through write_atomically; a file handle, because np.save appends ".npy" to a bare name."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.save(handle, array)
    write_atomically(path, write)


def _fsync_file(path: str) -> None:
    """The file's data on disk before the rename makes it visible (errors propagate: a full disk)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
