"""Which Detectron2 a detection run used: the commit CI installs, and how a run tells its own.

The commit is pinned once, in .ci/detectron2/install.sh, which builds it from the shared source
archive and records it in the installed distribution; the install command in docs/transfer.md
names the same commit; `detectron2_commit()` puts it into each detection run's final.json
("unknown" when it cannot be told, never an unrelated repository's commit).
"""

from __future__ import annotations

import re
import subprocess
import types
from pathlib import Path

import needs
from repro.transfer.detectron2 import INSTALL_HINT, installed_commit

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / ".ci" / "detectron2" / "install.sh"


def ci_commit() -> str:
    """The Detectron2 commit CI installs (the one place it is pinned)."""
    m = re.search(r"^COMMIT=([0-9a-f]{40})$", INSTALL.read_text(), re.M)
    assert m, f"{INSTALL} pins no COMMIT=<40 hex digits>"
    return m[1]


def test_ci_runs_the_install_step_before_the_tests():
    run = (REPO / ".ci" / "run").read_text().splitlines()
    assert "bash .ci/detectron2/install.sh" in run
    full_pass = next(i for i, line in enumerate(run) if line.startswith("make test-all"))  # both tiers
    assert run.index("bash .ci/detectron2/install.sh") < full_pass


def test_the_transfer_docs_name_the_commit_ci_tests_against():
    readme = (REPO / "docs" / "transfer.md").read_text()
    commit = ci_commit()
    assert (f"pip install --no-build-isolation "
            f"'git+https://github.com/facebookresearch/detectron2.git@{commit}'") in readme
    assert 'pip install "setuptools<81" wheel' in readme
    assert f"detectron2.git@{commit}'" in INSTALL_HINT  # what a run without Detectron2 tells the user


def test_the_installed_commit_is_recorded():
    """Under CI=true Detectron2 must be the one the install script built, and say so."""
    d2 = needs.detectron2()
    commit = installed_commit(d2)
    if needs.in_ci():
        assert commit == ci_commit()
    else:
        assert commit == "unknown" or re.fullmatch(r"[0-9a-f]{40}", commit)


def _git(cwd, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                   capture_output=True)


def _fake_detectron2(root: Path):
    init = root / "detectron2" / "__init__.py"
    init.parent.mkdir(parents=True)
    init.write_text("")
    return types.SimpleNamespace(__file__=str(init), __version__="0.6")


def test_a_source_checkout_tells_its_commit_an_enclosing_repository_does_not(tmp_path):
    needs.programs("git", hint="a git checkout of the project has it")
    outer = tmp_path / "project"
    outer.mkdir()
    _git(outer, "init", "-q")
    _git(outer, "commit", "-q", "--allow-empty", "-m", "project")
    # site-packages inside some project's git tree: that project's HEAD is not Detectron2's commit.
    assert installed_commit(_fake_detectron2(outer / "venv" / "site-packages")) == "unknown"
    # Detectron2's own checkout (an editable install): its HEAD.
    src = tmp_path / "detectron2-src"
    d2 = _fake_detectron2(src)
    _git(src, "init", "-q")
    _git(src, "commit", "-q", "--allow-empty", "-m", "d2")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True).stdout.strip()
    assert installed_commit(d2) == head
