"""Where the suite's data folders are: ``tables/`` (grid files, profiles, claims) and
``slurm/`` (cluster profiles).

In a checkout (or a code snapshot that carries them) they sit beside the ``repro`` package.
An installed package (``pip install .``, not editable) carries copies inside itself, as
``repro/_tables`` and ``repro/_slurm`` (``pyproject.toml``, package data).
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
REPO = PACKAGE.parent
_INSTALLED = {"tables": "_tables", "slurm": "_slurm"}  # folder -> its copy inside an installed package


def data_dir(name: str) -> Path:
    """``tables`` -> ``<repo>/tables``, or the installed package's copy when there is no checkout."""
    beside = REPO / name
    if beside.is_dir() or name not in _INSTALLED:
        return beside
    inside = PACKAGE / _INSTALLED[name]
    return inside if inside.is_dir() else beside


def output_dir() -> Path:
    """Where rendered tables go by default: ``<repo>/tables/out`` in a checkout, else ``tables/out``
    under the working directory (never inside an installed package)."""
    return REPO / "tables" / "out" if (REPO / "tables").is_dir() else Path("tables") / "out"
