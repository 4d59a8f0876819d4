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
