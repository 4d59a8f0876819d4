"""write_atomically: per-writer temporary files, so jobs sharing a cache or bundle folder never collide."""
from __future__ import annotations

import numpy as np
import pytest

from models.atomic import save_npy_atomically, write_atomically


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_a_second_writer_finishing_inside_the_first_does_not_break_it(tmp_path):
    # the interleaving two fold jobs produced on a shared cache: job A has written its temporary
    # file, job B writes and renames the same entry, then A renames
    entry = tmp_path / "clip.npy"

    def write_a(tmp):
        with open(tmp, "wb") as handle:
            np.save(handle, np.arange(3.0))
        save_npy_atomically(entry, np.arange(3.0) + 10)
        assert np.load(entry)[0] == 10

    write_atomically(entry, write_a)
    np.testing.assert_array_equal(np.load(entry), np.arange(3.0))
    assert _leftovers(tmp_path) == []


def test_a_failing_writer_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "bundle.json"
    target.write_text("old")

    def write(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, write)
    assert target.read_text() == "old" and _leftovers(tmp_path) == []


def test_saved_array_keeps_the_given_name_and_is_readable_by_others(tmp_path):
    entry = tmp_path / "key"  # np.save alone would write "key.npy"
    save_npy_atomically(entry, np.ones((2, 4), np.float16))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key"]
    assert np.load(entry).dtype == np.float16 and entry.stat().st_mode & 0o044 == 0o044


def test_the_file_and_its_folder_are_fsynced_before_and_after_the_rename(tmp_path, monkeypatch):
    import os

    import models.atomic as atomic

    target = tmp_path / "bundle.json"
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append((os.path.basename(os.readlink(f"/proc/self/fd/{fd}")), target.exists()))
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    atomic.write_text_atomically(target, lambda handle: handle.write("new"))
    assert target.read_text() == "new"
    (file_name, renamed_yet), (folder_name, renamed_after) = synced
    assert file_name.startswith(".bundle.json.") and file_name.endswith(".tmp") and not renamed_yet
    assert folder_name == tmp_path.name and renamed_after


def test_a_failing_fsync_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    import models.atomic as atomic

    target = tmp_path / "report.md"
    target.write_text("old")

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", no_space)
    with pytest.raises(OSError, match="No space left"):
        atomic.write_text_atomically(target, lambda handle: handle.write("new"))
    assert target.read_text() == "old" and _leftovers(tmp_path) == []
