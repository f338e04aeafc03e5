"""Helpers of the SLURM tests: the cluster fixture, small table and cluster files.

The tests that need the cluster are skipped where none answers (start one:
bash .ci/slurm/start.sh), and FAIL instead when CI=true, so CI cannot pass without
exercising SLURM (tests/needs.py). (A module, not a conftest.py: a second conftest module would shadow
tests/conftest.py, whose functions the distributed tests pickle by module name.)
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from needs import missing_programs, unmet

REPO = Path(__file__).resolve().parents[2]
START = "bash .ci/slurm/install.sh && bash .ci/slurm/start.sh"  # NODES=3 for test_slurm_multinode.py
PARTITION = "ci"  # slurm/ci.yaml, .ci/slurm/slurm.conf.in


def cluster_problem() -> str | None:
    """Why the tests cannot use a SLURM cluster here, or None when they can."""
    missing = missing_programs("sbatch", "sinfo", "sacct", "srun")
    if missing:
        return f"{', '.join(missing)} not installed"
    checks = [
        (["sinfo", "-h", "-p", PARTITION, "-o", "%a"], "the scheduler"),
        (["sacct", "-n", "-X", "-S", "now"], "accounting (without it submitit never sees a cancelled job end)"),
    ]
    for cmd, what in checks:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        except subprocess.TimeoutExpired:
            return f"`{' '.join(cmd)}` timed out ({what})"
        if r.returncode != 0:
            first = (r.stderr.strip().splitlines() or ["no output"])[-1]
            return f"`{' '.join(cmd)}` failed: {first} ({what})"
        if cmd[0] == "sinfo" and "up" not in r.stdout.split():
            return f"no partition {PARTITION!r} up (the cluster of .ci/slurm)"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    problem = cluster_problem()
    if problem is None:
        return
    unmet(f"needs the local SLURM cluster: {problem}; start it with `{START}`")


def write_table(folder: Path, name: str = "t90", *, row: str = "syncbn-mbn", rows: list[str] | None = None,
                copies: list[str] | None = None, **train) -> Path:
    """A small table file: Table 1's smoke profile with ``train`` overrides, one row of it
    (``rows``: several, in the table's order).

    ``copies``: row ids for copies of that one row instead (the same config; the row id names
    the run directory, so runs to compare do not share one).
    """
    rows = rows or [row]
    t01 = yaml.safe_load((REPO / "tables" / "t01_stl10_bn.yaml").read_text())
    t01["name"], t01["title"] = name, f"SLURM test table {name}"
    chosen = [r for r in t01["rows"] if r["id"] in rows]
    assert [r["id"] for r in chosen] == rows
    if copies:
        (source,) = chosen
        chosen = [{**source, "id": i, "label": f"{source['label']} ({i})"} for i in copies]
    t01["rows"] = chosen
    smoke = t01["profiles"]["smoke"]
    smoke["base"]["train"].update(train)
    t01["profiles"] = {"smoke": smoke}
    t01["reference_row"] = None
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(t01, sort_keys=False))
    return path


def write_cluster(folder: Path, name: str, base: str = "ci", **changes) -> Path:
    """slurm/<base>.yaml with ``changes`` (e.g. sbatch={"hold": True}), as a profile file."""
    profile = yaml.safe_load((REPO / "slurm" / f"{base}.yaml").read_text())
    profile.update(changes)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return path


def wait_until(predicate, timeout_s: float, what: str, poll_s: float = 0.1):
    """Poll ``predicate`` until it returns something truthy; fail naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def last_step(run_dir: Path) -> int:
    """The last step a run logged (0 before its first log line)."""
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return 0
    return json.loads(lines[-1])["step"] if lines else 0
