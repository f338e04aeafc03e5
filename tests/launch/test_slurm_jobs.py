"""Real jobs on the local SLURM cluster (.ci/slurm): arrays, requeue, failures, cancellation,
and code frozen at submission. Each test submits through ``slurm/ci.yaml`` (or a copy of it).

Durations on a 2-core machine: the smoke table about 1-2 min, the requeue test about 1.5 min,
the others 15-30 s each (the rank that dies: about 18 s).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
import torch

from repro.train import checkpoint as ckpt
from repro.launch import slurm
from repro.launch.submit import launch, wait
from repro.cli import main
from repro.grid import expand, load_table
from repro.launch import status
from repro.results.collect import render
from repro.rundir import run_states
from slurm_helpers import REPO, last_step, slurm_cluster, wait_until, write_cluster, write_table  # noqa: F401 (fixture)

def status_lines(table, runs):
    """The lines of ``repro status`` for the smoke profile of ``table``, SLURM asked."""
    return status.status_lines(status.status_progress(table, "smoke", runs, slurm.slurm_states))


pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.usefixtures("slurm_cluster")]
QUIET = {"log": lambda *a: None}




def logged_steps(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.timeout(600)
def test_smoke_table_goes_in_as_one_array_and_is_collected(tmp_path, capsys):
    runs, out = tmp_path / "runs", tmp_path / "out"
    t0 = time.monotonic()
    assert main(["run", "t01", "--profile", "smoke", "--cluster", "ci", "--runs", str(runs),
                 "--out", str(out), "--wait"]) == 0
    print(f"smoke table on SLURM: {time.monotonic() - t0:.0f} s", file=sys.stderr)
    capsys.readouterr()
    table = load_table("t01")
    jobs = [json.loads((r.run_dir(runs) / "job.json").read_text()) for r in expand(table, "smoke")]
    (array,) = {j["job_id"].split("_")[0] for j in jobs}  # one sbatch, six array tasks
    assert sorted(j["job_id"] for j in jobs) == [f"{array}_{i}" for i in range(6)]
    assert all(j["executor"] == "slurm" and j["cluster"] == "ci" for j in jobs)
    assert set(slurm.slurm_states(j["job_id"] for j in jobs).values()) == {"COMPLETED"}
    df = pd.read_csv(out / "table1.csv")
    assert (df["status"] == "done").all() and df["top1"].between(0, 100).all() and (df["sec_per_iter"] > 0).all()
    assert "6/6 runs done" in (out / "table1.md").read_text()
    lines = status_lines(load_table("t01"), runs)
    assert len(lines) == 6 and all(" done " in s and " COMPLETED " in s for s in lines)
    # The sbatch file asked for one node, 2 tasks of 1 CPU, on the CI partition.
    script = (runs / ".submitit" / array / f"{array}_submission.sh").read_text()
    for flag in ("--array=0-5%6", "--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1", "--partition=ci"):
        assert f"#SBATCH {flag}\n" in script


@pytest.mark.timeout(600)
def test_requeued_runs_resume_and_end_bitwise_equal_to_an_uninterrupted_run(tmp_path):
    """Three runs of one config: the first is preempted the way SLURM preempts (SIGTERM, then
    USR2: submitit calls checkpoint() and requeues the job), the second is requeued hard
    (``scontrol requeue``: killed, no checkpoint() call), the third runs through. Both resume
    from their last checkpoint, found when the job restarts, and end bitwise equal.

    Three one-run submissions rather than one array: with two or more array tasks pending,
    slurmctld 22.05 answers ``scancel --signal`` on a running task with "Job can not be altered
    now" (the signal is delivered, scancel retries and fails), which breaks submitit's
    ``job._interrupt()``; SLURM's own preemption signals do not go through scancel.
    """
    runs = tmp_path / "runs"
    launched = {}
    for how in ("preempted", "requeued", "whole"):
        table = write_table(tmp_path, name=f"t9{len(launched)}", copies=[how], max_steps=40, checkpoint_every=5)
        ((run, job),) = launch(load_table(table), "smoke", "ci", runs, **QUIET).jobs
        launched[how] = (run.run_dir(runs), job)
    code_dirs = {json.loads((d / "job.json").read_text())["code_dir"] for d, _ in launched.values()}
    assert len(code_dirs) == 1, "the code changed between the three submissions: rerun the test"

    interrupted_at = {}
    for how in ("preempted", "requeued"):  # submitted first, so they run first (one job fits the node)
        run_dir, job = launched[how]
        wait_until(lambda: last_step(run_dir) >= 7, 300, f"the run to be {how} to reach step 7")
        interrupted_at[how] = time.time()
        assert last_step(run_dir) < 40  # mid-training
        if how == "preempted":
            job._interrupt()  # scancel --signal TERM, then USR2: what SLURM sends before preempting
        else:
            subprocess.run(["scontrol", "requeue", job.job_id], check=True)
    for run_dir, job in launched.values():
        job.results()  # raises if a job failed

    whole = launched["whole"][0]
    reference = json.loads((whole / "final.json").read_text())
    ref_state = ckpt.load(ckpt.checkpoints(whole)[-1])
    assert [m["step"] for m in logged_steps(whole)] == list(range(1, 41))
    for how, t_interrupt in interrupted_at.items():
        run_dir = launched[how][0]
        # The job started twice (submitit logs each start of task 0) ...
        job_id = launched[how][1].job_id
        log = (runs / ".submitit" / job_id / f"{job_id}_0_log.out").read_text()
        starts = re.findall(r"submitit INFO \((.+?)\) - Starting with JobEnvironment", log)
        assert len(starts) == 2, starts
        restarted = datetime.strptime(starts[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        print(f"{how}: restarted {restarted - t_interrupt:.1f} s after the interrupt", file=sys.stderr)
        # ... and resumed from a checkpoint (every 5 steps), not from step 0. Steps after that
        # checkpoint ran twice; none did when the kill came right after a checkpoint (a hard
        # requeue lets the job run KillWait = 2 s more).
        steps = [m["step"] for m in logged_steps(run_dir)]
        replays = [i for i in range(1, len(steps)) if steps[i] <= steps[i - 1]]
        assert len(replays) <= 1 and steps[-1] == 40 and sorted(set(steps)) == list(range(1, 41)), steps
        if replays:
            resumed_from = steps[replays[0]] - 1
            assert resumed_from % 5 == 0 and resumed_from >= 5, steps
        final = json.loads((run_dir / "final.json").read_text())
        for key in ("steps", "final_loss", "top1", "top5", "best_top1", "knn_top1"):
            assert final[key] == reference[key], (how, key)
        state = ckpt.load(ckpt.checkpoints(run_dir)[-1])
        assert state["step"] == ref_state["step"] == 40
        for name, tensor in ref_state["model"].items():
            assert torch.equal(state["model"][name], tensor), (how, name)
        for rank, buffers in enumerate(ref_state["rank_buffers"]):
            for name, tensor in buffers.items():
                assert torch.equal(state["rank_buffers"][rank][name], tensor), (how, rank, name)
        assert not (run_dir / "error.txt").exists()


@pytest.mark.timeout(300)
def test_a_job_that_raises_shows_as_failed_with_its_error(tmp_path, capsys):
    # 1024 images per process x 2 processes: more than the digits' images, so the job itself
    # fails when it counts its steps (the launcher checks only that the data exists).
    table = write_table(tmp_path, name="t91", bn_batch_size=1024)
    runs, out = tmp_path / "runs", tmp_path / "out"
    assert main(["run", str(table), "--profile", "smoke", "--cluster", "ci", "--runs", str(runs),
                 "--out", str(out), "--wait"]) == 1
    printed = capsys.readouterr()
    assert "FAILED: ValueError: dataset of" in printed.out and "runs failed" in printed.err
    (line,) = status_lines(load_table(table), runs)
    assert " failed " in line and " FAILED " in line and "ValueError: dataset of" in line and "no full batch of 2048" in line
    df = pd.read_csv(out / "table91.csv")
    assert list(df["status"]) == ["failed"]
    md = (out / "table91.md").read_text()
    assert "| failed" in md and "failed: ValueError: dataset of" in md


@pytest.mark.timeout(300)
def test_a_cancelled_job_is_reported_as_cancelled_without_hanging(tmp_path):
    table = write_table(tmp_path, name="t92", max_steps=1000)
    runs = tmp_path / "runs"
    report = launch(load_table(table), "smoke", "ci", runs, **QUIET)
    ((run, job),) = report.jobs
    wait_until(lambda: last_step(run.run_dir(runs)) >= 2, 240, "the job to train")
    subprocess.run(["scancel", job.job_id], check=True)
    t0 = time.monotonic()
    ((_, reason),) = wait(report, runs, **QUIET)  # must return: sacct says CANCELLED
    print(f"scancel -> wait() returned in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    assert "CANCELLED" in reason
    (line,) = status_lines(load_table(table), runs)
    assert " cancelled " in line and " CANCELLED " in line
    paths = render(load_table(table), "smoke", runs, out_dir=tmp_path / "out", scheduler=slurm.slurm_states)
    assert list(pd.read_csv(paths["csv"])["status"]) == ["cancelled"]
    # Relaunching resubmits it (it resumes from its last checkpoint); scancel that one too.
    again = launch(load_table(table), "smoke", "ci", runs, **QUIET)
    assert [r.run_id for r in again.submitted] == [run.run_id]
    subprocess.run(["scancel", again.jobs[0][1].job_id], check=True)


@pytest.mark.timeout(300)
def test_an_edit_after_submission_does_not_reach_the_job(tmp_path):
    """Submit from a copy of the tree with the job held, break the copy's training code, then
    release the job: it runs the code as it was at submission."""
    live = tmp_path / "live"
    shutil.copytree(REPO / "repro", live / "repro", ignore=shutil.ignore_patterns("__pycache__"))
    table = write_table(tmp_path, name="t93")
    held = write_cluster(tmp_path, "ci-held", sbatch={"hold": True})
    runs = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(live)}
    submit = subprocess.run([sys.executable, "-m", "repro", "run", str(table), "--profile", "smoke",
                             "--cluster", str(held), "--runs", str(runs), "--no-wait", "--out", str(tmp_path / "out")],
                            cwd=live, env=env, capture_output=True, text=True, timeout=120)
    assert submit.returncode == 0, submit.stderr
    (run,) = expand(load_table(table), "smoke")
    job = json.loads((run.run_dir(runs) / "job.json").read_text())
    code_dir = Path(job["code_dir"])
    assert code_dir.parent == runs / ".code" and (code_dir / "repro" / "train" / "pretrain.py").is_file()
    assert slurm.slurm_state(job["job_id"]) == "PENDING"

    with open(live / "repro" / "train" / "pretrain.py", "a") as f:
        f.write('\nraise RuntimeError("edited after submission")\n')
    broken = subprocess.run([sys.executable, "-c", "import repro.train.pretrain"], cwd=live, env=env,
                            capture_output=True, text=True)
    assert "edited after submission" in broken.stderr  # the live tree is broken indeed

    subprocess.run(["scontrol", "release", job["job_id"]], check=True)
    state = wait_until(lambda: next((s for s in run_states([run.run_dir(runs)], slurm.slurm_states)
                                     if s.status not in ("pending", "running")), None), 240, "the job to end")
    assert state.status == "done", state
    final = json.loads((run.run_dir(runs) / "final.json").read_text())
    assert final["git"]["code"] == code_dir.name
    log = (runs / ".submitit" / job["job_id"] / f"{job['job_id']}_0_log.out").read_text()
    assert f"(code: {code_dir / 'repro'})" in log


@pytest.mark.timeout(300)
def test_a_rank_that_dies_ends_its_job_and_frees_the_node(tmp_path):
    """Rank 0 cannot open the rendezvous (its port is taken) while rank 1 waits to join: the
    job ends at once with rank 0's error in the run directory, instead of holding the node
    until its time limit while the queue behind it waits (srun --kill-on-bad-exit).

    The job is submitted held, so that its port (a function of the job id) can be taken first.
    """
    import socket

    from repro.launch.job import rendezvous_port

    table = write_table(tmp_path, name="t94")
    held = write_cluster(tmp_path, "ci-held", sbatch={"hold": True})
    runs = tmp_path / "runs"
    report = launch(load_table(table), "smoke", str(held), runs, **QUIET)
    ((_, job),) = report.jobs
    port = rendezvous_port(job.job_id)
    with socket.socket() as taken:
        taken.bind(("", port))
        taken.listen()
        subprocess.run(["scontrol", "release", job.job_id], check=True)
        t0 = time.monotonic()
        ((_, reason),) = wait(report, runs, **QUIET)
        took = time.monotonic() - t0
    print(f"rank 0 failed -> wait() returned in {took:.1f} s: {reason}", file=sys.stderr)
    assert f"port: {port}" in reason and "address already in use" in reason
    assert took < 120, f"the job outlived its failed rank 0 by {took:.0f} s"
    (state,) = slurm.slurm_states([job.job_id]).values()
    assert state == "FAILED", f"SLURM job {job.job_id} is {state}: its other rank was not stopped"
    (line,) = status_lines(load_table(table), runs)
    assert " failed " in line and "address already in use" in line
