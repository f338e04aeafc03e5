"""The one way this suite writes a file that others read: atomically, and durably.

Standard library only (the ground floor): checkpoints, run records, exported weights,
rendered tables and Detectron2's results all go through :func:`atomic_write`.
"""

from __future__ import annotations

import os
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
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
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
