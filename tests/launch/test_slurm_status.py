"""SLURM's word on jobs without a cluster: sacct's output is parsed from text, and the
cluster's answers are stubbed where a directory needs them. What the word means for a run
(``RunDir.status``) is tested in tests/test_rundir.py."""

from __future__ import annotations

import json

import pandas as pd

from repro import cli
from repro.launch import slurm, status
from repro.results import collect as results
from repro.grid import expand, load_table


def test_sacct_and_squeue_lines_are_parsed_including_pending_arrays():
    text = "12_0|COMPLETED\n12_1|CANCELLED by 0\n12_[2-4,7%2]|PENDING\n13|RUNNING\n14|\n"
    assert slurm._parse_states(text) == {"12_0": "COMPLETED", "12_1": "CANCELLED", "12_2": "PENDING", "12_3": "PENDING",
                                     "12_4": "PENDING", "12_7": "PENDING", "13": "RUNNING"}


def test_without_slurm_every_state_is_unknown(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert slurm.slurm_states(["1", "2_3"]) == {"1": "UNKNOWN", "2_3": "UNKNOWN"}
    assert slurm.slurm_states([]) == {}


def _fake_runs(tmp_path):
    """Table 1's smoke runs as directories: done, raised, cancelled, running, queued, new."""
    runs = expand(load_table("t01"), "smoke")
    root = tmp_path / "runs"
    states = {}
    for i, (run, kind) in enumerate(zip(runs, ["done", "raised", "cancelled", "running", "queued", "new"])):
        d = run.run_dir(root)
        d.mkdir(parents=True)
        if kind == "new":
            continue
        job_id = f"7_{i}"
        (d / "job.json").write_text(json.dumps({"job_id": job_id, "executor": "slurm", "cluster": "ci",
                                                "submitit_folder": str(root / ".submitit")}))
        if kind in ("done", "raised", "cancelled", "running"):
            (d / "metrics.jsonl").write_text(json.dumps({"step": 3, "loss": 1.25}) + "\n")
        if kind == "done":
            (d / "final.json").write_text(json.dumps({"top1": 50.0, "steps": 6}))
        if kind == "raised":
            (d / "error.txt").write_text("ValueError: dataset of 1442 images has no full batch of 2048\n\nTraceback")
        states[job_id] = {"done": "COMPLETED", "raised": "FAILED", "cancelled": "CANCELLED", "running": "RUNNING",
                          "queued": "PENDING"}[kind]
    return root, states


def test_status_lines_show_state_slurm_step_loss_and_error(tmp_path, monkeypatch, capsys):
    root, states = _fake_runs(tmp_path)
    asked = []
    monkeypatch.setattr(slurm, "slurm_states", lambda ids: asked.append(sorted(ids)) or {i: states[i] for i in ids})
    assert cli.main(["status", "t01", "--profile", "smoke", "--runs", str(root)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(asked) == 1 and len(asked[0]) == 5  # one sacct call for the whole command
    assert printed[0] == status.STATUS_HEADER
    assert printed[-1].startswith("t01/smoke: 1/6 done, 1 running, 2 pending, 2 failed; ETA ")
    lines = printed[1:-1]
    cols = [line.split() for line in lines]
    assert [c[1:3] for c in cols] == [["done", "COMPLETED"], ["failed", "FAILED"], ["cancelled", "CANCELLED"],
                                      ["running", "RUNNING"], ["pending", "PENDING"], ["new", "-"]]
    assert cols[0][3:6] == ["7_0", "3/?", "1.2500"] and cols[5][3:6] == ["-", "-", "-"]
    assert lines[1].endswith("ValueError: dataset of 1442 images has no full batch of 2048")
    assert "SLURM CANCELLED (scancel)" in lines[2]
    assert status.STATUS_HEADER.split()[:8] == ["run", "status", "SLURM", "job", "step", "loss", "s/step", "ETA"]


def test_the_rendered_table_shows_failed_and_cancelled_runs_and_why(tmp_path, monkeypatch):
    root, states = _fake_runs(tmp_path)
    monkeypatch.setattr(slurm, "slurm_states", lambda ids: {i: states[i] for i in ids})
    paths = results.render(load_table("t01"), "smoke", root, out_dir=tmp_path / "out", scheduler=slurm.slurm_states)
    runs = pd.read_csv(paths["runs"]).set_index("row")
    assert runs.loc["bn-syncbn", "status"] == "failed" and "no full batch" in runs.loc["bn-syncbn", "error"]
    assert runs.loc["syncbn-bn", "status"] == "cancelled"
    md = paths["md"].read_text()
    assert "Runs that did not finish:" in md
    assert "bn-syncbn-s0-" in md and "failed: ValueError: dataset of 1442 images" in md
    assert "cancelled: SLURM CANCELLED" in md
    summary = pd.read_csv(paths["csv"]).set_index("row")
    assert summary.loc["syncbn-bn", "status"] == "cancelled" and summary.loc["syncbn-syncbn", "status"] == "done"
