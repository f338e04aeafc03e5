"""The committed CPU-scale evidence as a clean checkout has it.

A campaign running in this checkout adds run directories that the committed report has not
seen (queued, running, finished but not yet committed); the checks of the committed report
render from a copy of the files git tracks under results/cpu instead.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EVIDENCE = REPO / "results" / "cpu"


def committed_evidence(dest: Path) -> Path:
    """A copy of the committed files of results/cpu under ``dest`` (the folder itself outside git)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        return EVIDENCE
    listed = subprocess.run(["git", "ls-files", "-z", "results/cpu"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, dest / name)
    return dest / "results" / "cpu"


def as_committed(text: str, evidence: Path) -> str:
    """A report rendered from ``evidence`` with its paths written as the committed one writes them."""
    if evidence == EVIDENCE:
        return text
    for quote in ("`", "<code>"):  # markdown and HTML
        text = text.replace(f"{quote}{evidence}/", f"{quote}results/cpu/")
    return text
