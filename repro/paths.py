"""Where the suite's data folders are: ``tables/`` (grid files, profiles, claims) and
``slurm/`` (cluster profiles), beside the ``repro`` package in a checkout."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
REPO = PACKAGE.parent


def data_dir(name: str) -> Path:
    """``tables`` -> ``<repo>/tables``."""
    return REPO / name
