"""Atomic file writes for bundles and feature caches that several jobs may share.

    write_atomically(path, write)   write(tmp_path) fills a temporary file, then it is renamed over path
    save_npy_atomically(path, a)    the same for one numpy array (.npy format, `path` kept as given)

The temporary file is unique to the writer (".NAME.<random>.tmp" beside `path`): a job killed
mid-write leaves no truncated `path` that a later run would take as complete, and two jobs writing
the same cache entry at once never rename each other's temporary file away.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

FILE_MODE = 0o644  # mkstemp creates 0600; bundles and caches are meant to be read by other users


def write_atomically(path: str | os.PathLike, write: Callable[[Path], object]) -> None:
    """Call write(tmp) for a fresh temporary file in path's folder, then rename it over `path`.
    The temporary file is removed when write or the rename fails; the error propagates."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name[:200]}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_npy_atomically(path: str | os.PathLike, array: np.ndarray) -> None:
    """np.save through write_atomically; a file handle, because np.save appends ".npy" to a bare name."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.save(handle, array)
    write_atomically(path, write)
