"""The one way this suite writes a file that others read: atomically, and durably.

Standard library only (the ground floor): checkpoints, run records, exported weights,
rendered tables and Detectron2's results all go through :func:`atomic_write`; a folder that
appears whole (the jobs' code snapshot, a synthetic dataset) through :func:`atomic_write_dir`.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` through ``write(binary_file)`` so that it is old/absent or complete.

    A temp file in the same folder (so ``os.replace`` is a rename within one file system)
    is written, flushed and fsynced, then renamed over ``path``; a killed job leaves no torn
    file. The rename itself is persisted by fsyncing the folder (best effort: not every file
    system lets a directory be fsynced).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Persist a rename in ``folder`` (best effort: not every file system fsyncs a directory)."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write` of a UTF-8 string."""
    data = text.encode()
    atomic_write(path, lambda f: f.write(data))


def atomic_write_dir(path: str | os.PathLike, write: Callable[[Path], object]) -> None:
    """Write the folder ``path`` through ``write(folder)`` so that it is absent (or empty) or complete.

    ``write`` fills a sibling temp folder (same file system), whose files are then fsynced and
    which is renamed onto ``path``; a writer that raises or is killed leaves no half folder at
    ``path`` (a killed one may leave its hidden ``.<name>.<hex>.tmp`` sibling, never read). An
    empty folder at ``path`` is replaced; a non-empty one makes the rename fail with
    ``OSError`` (e.g. another process that wrote the same folder first), and the temp folder
    is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.mkdir()
    try:
        write(tmp)
        for file in (p for p in tmp.rglob("*") if p.is_file()):
            with open(file, "rb") as f:
                os.fsync(f.fileno())
        os.rename(tmp, path)  # POSIX: replaces an empty folder, fails on a non-empty one
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_folder(path.parent)
