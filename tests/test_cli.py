"""The command line loads a table once per command and hands the Table down: the launcher,
the status lines and the rendering never load it again by name."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from repro import cli
from repro.grid import expand, load_table, table_path

T01 = table_path("t01")  # tables/t01_stl10_bn.yaml


def _finished_grid(root: Path) -> list:
    """Every run of t01 at the smoke profile, finished (so ``run`` submits nothing)."""
    runs = expand(load_table("t01"), "smoke")
    for run in runs:
        d = run.run_dir(root)
        d.mkdir(parents=True)
        (d / "final.json").write_text(json.dumps({"top1": 40.0, "knn_top1": 30.0, "steps": 6}))
    return runs


@pytest.fixture
def table_reads(monkeypatch):
    """How many times the t01 table file is read (every load goes through Path.read_text)."""
    reads = []
    read_text = Path.read_text

    def counted(self, *args, **kwargs):
        if self.name == T01.name:
            reads.append(self)
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counted)
    return reads


@pytest.mark.parametrize("command", [["run", "--cluster", "local"], ["status"], ["render"], ["compare", "--against", "cpu-mnist"]])
def test_one_command_reads_the_table_file_once(tmp_path, table_reads, capsys, command):
    runs = _finished_grid(tmp_path / "runs")
    args = [command[0], "t01", "--profile", "smoke", *command[1:], "--runs", str(tmp_path / "runs")]
    if command[0] in ("run", "render"):
        args += ["--out", str(tmp_path / "out")]
    table_reads.clear()  # the fixture's own expansion above read it too
    assert cli.main(args) == 0
    assert [p.name for p in table_reads] == [T01.name]
    if command[0] == "run":  # and the command did its whole job: nothing to submit, the table rendered
        out = capsys.readouterr().out
        assert f"t01/smoke: {len(runs)} runs, {len(runs)} done" in out
        assert (pd.read_csv(tmp_path / "out" / "table1_runs.csv")["status"] == "done").all()
