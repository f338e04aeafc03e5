"""The fast tier's check of the Makefile's entry points: each target of tests/test_entry_points.py
(slow: it runs them all at PROFILE=smoke) resolves, in a dry run (`make -n`), to the commands
that run its tables. Nothing is executed or installed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from test_entry_points import TARGETS

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {"figure3": ["figures/fig3_bn_batch.py --results"], "report": ["-m repro report --runs"]}


@pytest.mark.parametrize("target,tables", TARGETS, ids=[t for t, _ in TARGETS])
def test_each_entry_point_runs_its_tables(target, tables, tmp_path):
    venv = tmp_path / "venv"
    cmd = ["make", "--no-print-directory", "-n", "-C", str(REPO), "-o", str(venv / ".installed-stamp"), target,
           f"VENV={venv}", "PROFILE=smoke", f"RUNS={tmp_path / 'runs'}", f"OUT={tmp_path / 'tables'}",
           f"FIG_OUT={tmp_path / 'figures'}"]
    env = {k: v for k, v in os.environ.items() if k != "MAKEFLAGS"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    expected = [f"{venv}/bin/python -m repro run {t} --profile smoke --cluster local --runs {tmp_path / 'runs'}"
                for t in tables] + COMMANDS.get(target, [])
    assert expected, target
    for line in expected:
        assert line in done.stdout, (target, line, done.stdout)
