"""The one atomic write (repro/atomic.py): complete or old, never torn, no temp file left."""

import pytest

from repro.atomic import atomic_write, atomic_write_text


def test_writes_and_replaces(tmp_path):
    path = tmp_path / "sub" / "f.json"  # the folder is created
    atomic_write_text(path, "one")
    atomic_write(path, lambda f: f.write(b"two"))
    assert path.read_text() == "two"
    assert [p.name for p in path.parent.iterdir()] == ["f.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write_text(path, "old")

    def broken(f):
        f.write(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        atomic_write(path, broken)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]
