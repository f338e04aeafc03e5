"""``pip install .`` (not editable), then ``python -m repro report`` from another directory.

The package is installed with ``pip install --no-deps --target`` (the dependencies are this
environment's) into a temporary folder, from a copy of the sources, and run with only that
folder on PYTHONPATH and the working directory elsewhere: what it needs (tables/*.yaml,
claims.yaml, slurm/*.yaml) must travel inside the package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from evidence import as_committed, committed_evidence

REPO = Path(__file__).resolve().parents[1]
EVIDENCE = REPO / "results" / "cpu"


def test_the_package_list_names_every_package_folder():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "repro").rglob("__init__.py")}
    assert folders <= listed, f"add to pyproject.toml's packages: {sorted(folders - listed)}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    src, target = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("site")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for name in ("repro", "tables", "slurm"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "out"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                    "--no-build-isolation", "--target", str(target), str(src)], check=True, timeout=300,
                   capture_output=True)
    shutil.rmtree(src)  # nothing may be read from the sources any more
    return target


def _repro(installed: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(installed)}
    return subprocess.run([sys.executable, "-m", "repro", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_the_installed_package_is_the_one_that_runs(installed, tmp_path):
    out = _repro(installed, tmp_path, "report", "--help")
    assert out.returncode == 0, out.stderr
    env = {**os.environ, "PYTHONPATH": str(installed)}
    where = subprocess.run([sys.executable, "-c", "import repro.paths as p; print(p.data_dir('tables'))"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where) == installed / "repro" / "_tables"
    listed = _repro(installed, tmp_path, "list")
    assert listed.returncode == 0 and "t12" in listed.stdout, listed.stderr


def _makefile_cpu_profiles() -> list[str]:
    for line in (REPO / "Makefile").read_text().splitlines():
        if line.startswith("CPU_PROFILES"):
            return line.split("=", 1)[1].split()
    raise AssertionError("the Makefile no longer sets CPU_PROFILES")


def test_an_installed_report_renders_the_committed_evidence(installed, tmp_path):
    # The profiles make cpu-report renders, read from the Makefile so that the two cannot drift apart.
    profiles = _makefile_cpu_profiles()
    assert "cpu-mnist" in profiles
    evidence = committed_evidence(tmp_path / "checkout")
    args = [a for p in profiles for a in ("--profile", p)]
    out = _repro(installed, tmp_path, "report", "--runs", str(evidence), *args, "--out", "report")
    assert out.returncode == 0, out.stderr
    fresh = (tmp_path / "report" / "report.md").read_text()
    # The one difference: outside the repository the evidence's path is shown in full.
    if evidence == EVIDENCE:  # outside the repository the evidence's path is shown in full
        fresh = fresh.replace(f"`{EVIDENCE}/", "`results/cpu/")
    assert as_committed(fresh, evidence) == (EVIDENCE / "report" / "report.md").read_text()
