"""Code frozen at submission, without a cluster: the snapshot, and what a job's python imports."""

from __future__ import annotations

import json
import shlex
import subprocess

from repro import rundir
from repro.launch import snapshot


def test_snapshot_is_the_package_and_the_tables_once_per_content(tmp_path):
    runs = tmp_path / "runs"
    code = snapshot.snapshot_code(runs)
    assert code.parent == runs / ".code" and len(code.name) == 16
    assert snapshot.snapshot_code(runs) == code  # same content, same snapshot, nothing copied again
    copied = sorted(p.relative_to(code).as_posix() for p in code.rglob("*")
                    if p.is_file() and p.name != rundir.CODE_RECORD)
    source = sorted(p.relative_to(snapshot.REPO).as_posix() for p in snapshot._snapshot_files())
    assert copied == source and not any("__pycache__" in p for p in copied)
    assert {"tables/t08_sota.yaml", "tables/profiles.yaml", "repro/grid.py"} <= set(copied)
    assert not any(p.startswith("tables/out/") for p in copied)
    assert (code / "repro" / "launch" / "job.py").read_bytes() == (snapshot.PACKAGE / "launch" / "job.py").read_bytes()
    record = json.loads((code / rundir.CODE_RECORD).read_text())
    assert record["code"] == code.name and set(record) >= {"commit", "dirty", "source"}
    assert not list((runs / ".code").glob(".*"))  # no half-written copy left behind


def test_the_jobs_python_imports_the_snapshot_not_the_live_tree(tmp_path):
    """Run from the repository root (where ``-m`` would find the live ``repro/`` first) with
    the editable install active: the snapshot wins, and reports its own git state."""
    code = snapshot.snapshot_code(tmp_path / "runs")
    probe = ("import json, repro.launch.job, repro.paths as P, repro.rundir as R; "
             "print(json.dumps([P.PACKAGE.as_posix(), R.git_state(), repro.launch.job.RunJob.__module__]))")
    cmd = f"{snapshot.frozen_python(code)} -c {shlex.quote(probe)}"
    out = subprocess.run(cmd, shell=True, cwd=snapshot.REPO, capture_output=True, text=True, timeout=120, check=True)
    package, git, job_module = json.loads(out.stdout)
    assert package == (code / "repro").as_posix()
    assert job_module == "repro.launch.job"  # where submitit finds the pickled callable
    assert git["code"] == code.name


def test_a_job_in_the_snapshot_expands_the_tables_it_was_submitted_with(tmp_path):
    """What a transfer job does when it starts: expand its pre-training table (t08), from
    the snapshot's python, not the live tree's."""
    code = snapshot.snapshot_code(tmp_path / "runs")
    probe = ("import repro.grid as G, json; runs = G.expand(G.load_table('t08'), 'smoke'); "
             "print(json.dumps([G.TABLES_DIR.as_posix(), sorted({r.config.task for r in runs})]))")
    cmd = f"{snapshot.frozen_python(code)} -c {shlex.quote(probe)}"
    out = subprocess.run(cmd, shell=True, cwd=snapshot.REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    tables_dir, tasks = json.loads(out.stdout)
    assert tables_dir == (code / "tables").as_posix() and tasks == ["pretrain"]


def test_an_edit_gives_a_new_snapshot(tmp_path, monkeypatch):
    live = tmp_path / "live" / "repro"
    live.mkdir(parents=True)
    (live / "__init__.py").write_text("")
    (live / "train.py").write_text("STEPS = 1\n")
    monkeypatch.setattr(snapshot, "PACKAGE", live)
    monkeypatch.setattr(snapshot, "REPO", live.parent)
    first = snapshot.snapshot_code(tmp_path / "runs")
    (live / "train.py").write_text("STEPS = 2\n")
    second = snapshot.snapshot_code(tmp_path / "runs")
    assert first != second
    assert (first / "repro" / "train.py").read_text() == "STEPS = 1\n"  # the queued jobs' copy is untouched
    assert (second / "repro" / "train.py").read_text() == "STEPS = 2\n"
    (live.parent / "tables").mkdir()
    (live.parent / "tables" / "t01.yaml").write_text("name: t01\n")
    third = snapshot.snapshot_code(tmp_path / "runs")
    (live.parent / "tables" / "t01.yaml").write_text("name: t01  # edited after submission\n")
    fourth = snapshot.snapshot_code(tmp_path / "runs")
    assert len({first, second, third, fourth}) == 4  # a table edit is a new snapshot too
    assert (third / "tables" / "t01.yaml").read_text() == "name: t01\n"
