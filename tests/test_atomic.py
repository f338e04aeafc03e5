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


def test_a_folder_appears_whole_and_replaces_an_empty_one(tmp_path):
    from repro.atomic import atomic_write_dir

    dest = tmp_path / "data"
    dest.mkdir()  # empty: replaced

    def write(folder):
        (folder / "sub").mkdir()
        (folder / "sub" / "a.txt").write_text("a")
        (folder / "b.txt").write_text("b")

    atomic_write_dir(dest, write)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == ["b.txt", "sub", "sub/a.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["data"]
    with pytest.raises(OSError):  # a complete folder is never overwritten
        atomic_write_dir(dest, write)
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


def test_a_writer_that_dies_midway_leaves_no_half_folder(tmp_path):
    from repro.atomic import atomic_write_dir

    def broken(folder):
        (folder / "a.txt").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        atomic_write_dir(tmp_path / "data", broken)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its temp sibling
