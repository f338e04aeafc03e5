"""Skip a test whose requirement is missing on this machine, but FAIL under CI=true.

CI installs every requirement a test may need (SLURM, Chromium, the transfer extra, and
Detectron2, built from the shared source archive by .ci/detectron2/install.sh), so a skip
there would hide a broken install step.
"""

from __future__ import annotations

import importlib
import os
import shutil

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def unmet(message: str) -> None:
    """Skip with ``message``; under CI=true fail with it instead."""
    if in_ci():
        pytest.fail(f"CI=true, so this test must run, but it {message}", pytrace=False)
    pytest.skip(message)


def module(name: str, hint: str):
    """Import ``name``, or unmet("needs <name> (<hint>)")."""
    try:
        return importlib.import_module(name)
    except ImportError:
        unmet(f"needs {name} ({hint})")


def missing_programs(*names: str) -> list[str]:
    """Which of these programs are not on PATH (as executables) here."""
    return [name for name in names if shutil.which(name) is None]


def programs(*names: str, hint: str) -> list[str]:
    """The paths of these programs, or unmet("needs <the missing ones> (<hint>)")."""
    missing = missing_programs(*names)
    if missing:
        unmet(f"needs {' and '.join(missing)} ({hint})")
    return [shutil.which(name) for name in names]


DETECTRON2_HINT = ("built from source, not on PyPI: `bash .ci/detectron2/install.sh` from the shared archive, "
                   "or docs/transfer.md, from its repository")


def detectron2():
    """Import Detectron2, or unmet(...) (a skip here, a failure under CI=true)."""
    return module("detectron2", DETECTRON2_HINT)
