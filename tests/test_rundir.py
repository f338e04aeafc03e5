"""A run directory (``RunDir``): its files, its records and its status. A corrupt or partial
record is an error (status ``corrupt``, with the file and the fix), never a result; the
scheduler's word corrects an unfinished run; a torn last line of metrics.jsonl is ignored."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from repro import rundir
from repro.grid import expand, load_table
from repro.launch import status, submit
from repro.results import collect
from repro.rundir import RunDir, RunState, Status

GOOD = {"final.json": json.dumps({"top1": 50.0, "steps": 6}), "job.json": json.dumps({"job_id": "1", "executor": "local"}),
        "config.yaml": "table: t01\nconfig: {train: {seed: 0}}\n"}
CUT = {"final.json": '{"top1": ', "job.json": '{"job_id": "12', "config.yaml": "table: t01\nconfig: {train: {seed"}


def _done_run(tmp_path):
    run = expand(load_table("t01"), "smoke")[0]
    d = run.run_dir(tmp_path)
    d.mkdir(parents=True)
    for name, text in GOOD.items():
        (d / name).write_text(text)
    (d / "metrics.jsonl").write_text(json.dumps({"step": 6, "total_steps": 6, "loss": 1.5}) + "\n")
    return run, d


def _status_lines(root):
    return status.status_lines(status.status_progress(load_table("t01"), "smoke", root))


@pytest.mark.parametrize("name", list(CUT))
def test_a_cut_record_is_corrupt_with_the_file_and_the_fix(tmp_path, name):
    run, d = _done_run(tmp_path)
    assert RunDir(d).status() is Status.DONE
    (d / name).write_text(CUT[name])
    assert RunDir(d).status() is Status.CORRUPT
    for scheduler in (None, lambda ids: {i: "COMPLETED" for i in ids}):
        (state,) = rundir.run_states([d], scheduler)
        assert state.status is Status.CORRUPT
        assert str(d / name) in state.error and "is unreadable" in state.error
        assert state.error.endswith("rerun with --rerun-failed, which keeps the checkpoints")
    # The table shows it as corrupt, with no numbers, and says why under the table.
    paths = collect.render(load_table("t01"), "smoke", tmp_path, out_dir=tmp_path / "out")
    runs = pd.read_csv(paths["runs"]).set_index("run_id")
    assert runs.loc[run.run_id, "status"] == "corrupt" and pd.isna(runs.loc[run.run_id, "top1"])
    assert pd.read_csv(paths["csv"]).set_index("row").loc[run.row, "status"] == "corrupt"
    assert f"`{run.run_id}` corrupt: {d / name} is unreadable" in paths["md"].read_text()
    (line,) = [s for s in _status_lines(tmp_path) if s.startswith(run.run_id)]
    assert " corrupt " in line and "--rerun-failed" in line


def test_a_record_that_is_not_a_mapping_is_corrupt(tmp_path):
    _, d = _done_run(tmp_path)
    (d / "final.json").write_text("[1, 2]")
    assert RunDir(d).status() == "corrupt" and "not a mapping" in RunDir(d).corrupt_error()


def test_the_launcher_skips_a_corrupt_run_and_sets_it_aside_to_rerun(tmp_path):
    run, d = _done_run(tmp_path)
    (d / "final.json").write_text(CUT["final.json"])
    others = [r for r in expand(load_table("t01"), "smoke") if r.run_id != run.run_id]
    for r in others:  # the rest of the grid finished
        r.run_dir(tmp_path).mkdir(parents=True)
        (r.run_dir(tmp_path) / "final.json").write_text(GOOD["final.json"])
    messages = []
    report = submit.launch(load_table("t01"), "smoke", "debug", tmp_path, log=messages.append)
    assert report.submitted == [] and [r.run_id for r in report.skipped_failed] == [run.run_id]
    assert any("CORRUPT" in m and "final.json is unreadable" in m and "--rerun-failed" in m for m in messages)
    # With --rerun-failed the cut file is set aside (kept, never read) before the run goes again.
    moved = RunDir(d).set_corrupt_aside()
    assert moved == [d / "final.json.corrupt"] and moved[0].read_text() == CUT["final.json"]
    assert RunDir(d).status() is Status.RUNNING  # its metrics and checkpoints are kept


def test_a_torn_last_line_of_metrics_is_ignored(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 1, "loss": 2.0}) + "\n" + json.dumps({"step": 2, "loss": 1.5}) + "\n"
                    + '{"step": 3, "lo')
    assert rundir.last_metrics(path) == {"step": 2, "loss": 1.5}
    run, d = _done_run(tmp_path / "runs")
    (d / "final.json").unlink()
    (d / "metrics.jsonl").write_text(path.read_text())
    (line,) = [s for s in _status_lines(tmp_path / "runs") if s.startswith(run.run_id)]
    assert line.split()[1] == "running" and line.split()[4:6] == ["2/?", "1.5000"]


@pytest.mark.parametrize("block", [1, 7, 64, 1 << 16])
def test_the_last_metrics_line_read_from_the_end_is_the_last_whole_one(tmp_path, block):
    """Read backwards in blocks of any size: the same record as a full parse, past a torn last
    line and blank lines; None for an empty file, a file of one torn line, or none at all."""
    records = [{"step": s, "loss": 1.0 / s, "note": "x" * (s % 5)} for s in range(1, 40)]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + "\n\n" + '{"step": 40, "lo')
    assert rundir.last_metrics(path, block=block) == records[-1]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert rundir.last_metrics(path, block=block) == records[-1]
    path.write_text("")
    assert rundir.last_metrics(path, block=block) is None
    path.write_text('{"step": 1, "lo')
    assert rundir.last_metrics(path, block=block) is None
    assert rundir.last_metrics(tmp_path / "absent.jsonl", block=block) is None


def test_a_record_replaced_after_it_read_well_is_read_again(tmp_path):
    """Status is asked every second, and a record that read well is not parsed again until its
    file changes: one replaced by another (atomically, as the project writes) is read anew."""
    _, d = _done_run(tmp_path)
    assert RunDir(d).status() is Status.DONE
    (d / "next.json").write_text("[1]")
    (d / "next.json").replace(d / "final.json")  # a new file in its place (a new inode)
    assert RunDir(d).status() is Status.CORRUPT and "not a mapping" in RunDir(d).corrupt_error()


def test_the_dirty_flag_is_about_code_not_the_run_records_under_results(tmp_path):
    """A campaign re-renders its report and reruns a run by setting its directory aside: neither
    changes the code a run executes, so neither marks the next runs' records dirty."""
    import subprocess

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    (tmp_path / "repro").mkdir()
    (tmp_path / "repro" / "core.py").write_text("x = 1\n")
    record = tmp_path / "results" / "cpu" / "t01" / "run" / "final.json"
    record.parent.mkdir(parents=True)
    record.write_text("{}\n")
    (tmp_path / "results" / "cpu" / "report.md").write_text("old\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    assert rundir.git_commit(tmp_path)["dirty"] is False
    (tmp_path / "results" / "cpu" / "report.md").write_text("re-rendered\n")
    record.unlink()  # a finished run set aside to run again
    assert rundir.git_commit(tmp_path)["dirty"] is False
    (tmp_path / "repro" / "core.py").write_text("x = 2\n")
    assert rundir.git_commit(tmp_path)["dirty"] is True


# --------------------------------------------------------------------------- RunDir


def _make(d, kind: str, executor: str = "slurm"):
    """A run directory whose files say ``kind`` (new, pending, running, failed, done)."""
    d.mkdir(parents=True, exist_ok=True)
    if kind != "new":
        (d / "job.json").write_text(json.dumps({"job_id": "7_3", "executor": executor, "submitit_folder": "/s"}))
    if kind in ("running", "failed", "done"):
        (d / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 2.0}) + "\n")
    if kind == "failed":
        (d / "error.txt").write_text("RuntimeError: out of data\n\nTraceback ...\n")
    if kind == "done":
        (d / "final.json").write_text(json.dumps({"top1": 50.0}))
    return RunDir(d)


def test_a_run_dir_names_its_files_under_the_run_s_path(tmp_path):
    run = expand(load_table("t01"), "smoke")[0]
    d = RunDir.of(run, tmp_path)
    assert d.path == tmp_path / "t01" / "smoke" / run.run_id == run.run_dir(tmp_path)
    assert (d.config, d.job, d.metrics, d.final, d.error, d.checkpoints, d.tensorboard) == tuple(
        d.path / n for n in ("config.yaml", "job.json", "metrics.jsonl", "final.json", "error.txt", "checkpoints",
                             "tensorboard"))
    assert RunDir(str(d.path)) == d and str(d) == str(d.path)


@pytest.mark.parametrize("kind", ["new", "pending", "running", "failed", "done"])
def test_the_status_from_the_files_alone(tmp_path, kind):
    d = _make(tmp_path / "r", kind)
    assert d.status() is Status(kind)
    state = d.state()
    assert state == RunState(Status(kind), None if kind == "new" else "7_3", None,
                             "RuntimeError: out of data" if kind == "failed" else None)


def test_checkpoints_alone_say_running(tmp_path):
    (tmp_path / "r" / "checkpoints").mkdir(parents=True)
    assert RunDir(tmp_path / "r").status() is Status.RUNNING


@pytest.mark.parametrize(
    "kind,scheduler,expected",
    [
        ("done", "COMPLETED", "done"),
        ("failed", "FAILED", "failed"),
        ("pending", "PENDING", "pending"),
        ("pending", "RUNNING", "running"),
        ("running", "REQUEUED", "running"),  # preempted and requeued: it comes back
        ("running", "PREEMPTED", "running"),
        ("running", "CANCELLED", "cancelled"),
        ("pending", "CANCELLED", "cancelled"),  # cancelled before it started
        ("running", "TIMEOUT", "failed"),  # out of requeues
        ("running", "OUT_OF_MEMORY", "failed"),
        ("running", "NODE_FAIL", "failed"),
        ("running", "COMPLETED", "failed"),  # ended without final.json
        ("running", "UNKNOWN", "running"),  # SLURM cannot say: trust the directory
        ("running", None, "running"),  # not asked
        ("new", None, "new"),
        ("done", "CANCELLED", "done"),  # a run that wrote its end is done, whatever befell its job after
    ],
)
def test_the_scheduler_s_word_corrects_only_an_unfinished_run(tmp_path, kind, scheduler, expected):
    d = _make(tmp_path / "r", kind)
    assert d.status(scheduler) is Status(expected)
    (state,) = rundir.run_states([d], lambda ids: {i: scheduler for i in ids})
    assert (state.status, state.scheduler_state) == (Status(expected), None if kind == "new" else scheduler)


def test_what_the_scheduler_said_is_the_error_of_a_run_it_ended(tmp_path):
    asked = []

    def scheduler(ids):
        asked.append(list(ids))
        return {"7_3": "TIMEOUT"}

    failed = _make(tmp_path / "a", "running")
    (state,) = rundir.run_states([failed], scheduler)
    assert state.error == "SLURM TIMEOUT: the job ended without final.json (log: /s/7_3/)"
    cancelled = failed.state("CANCELLED")
    assert cancelled.status is Status.CANCELLED and cancelled.error.startswith("SLURM CANCELLED (scancel)")
    # A local job is never a SLURM job: the scheduler is not asked about it, nor believed.
    local = _make(tmp_path / "b", "running", executor="local")
    assert rundir.run_states([local], scheduler) == [RunState(Status.RUNNING, "7_3", None, None)]
    assert local.state("CANCELLED").status is Status.RUNNING
    assert asked == [["7_3"]]
    # Several runs: one question for all their jobs.
    rundir.run_states([failed, local, _make(tmp_path / "c", "new")], scheduler)
    assert asked[-1] == ["7_3"] and len(asked) == 2


@pytest.mark.parametrize("name", list(CUT))
def test_a_cut_record_makes_the_run_corrupt_whatever_the_scheduler_says(tmp_path, name):
    d = _make(tmp_path / "r", "done")
    (d.path / "config.yaml").write_text(GOOD["config.yaml"])
    (d.path / name).write_text(CUT[name])
    for said in (None, "COMPLETED", "CANCELLED"):
        state = d.state(said)
        assert state.status is Status.CORRUPT and state.error.startswith(f"{d.path / name} is unreadable (")
    assert (d.read_final() is None) == (name == "final.json")  # a cut result is never read as one
    assert d.set_corrupt_aside() == [d.path / f"{name}.corrupt"]
    assert d.status() is (Status.DONE if name != "final.json" else Status.RUNNING)


def test_records_are_written_whole_and_read_back(tmp_path):
    d = RunDir(tmp_path / "r")
    assert d.read_final() is None and d.read_job() is None
    d.write_job({"job_id": "12", "executor": "local"})
    assert d.read_job() == {"job_id": "12", "executor": "local"} and d.status() is Status.PENDING
    d.write_error("ValueError: no data\n\ntrace\n")
    assert d.first_error_line() == "ValueError: no data" and d.status() is Status.FAILED
    d.write_final({"top1": 61.5})
    assert d.read_final() == {"top1": 61.5} and d.status() is Status.DONE
    assert sorted(p.name for p in d.path.iterdir()) == ["error.txt", "final.json", "job.json"]  # no temp files


def test_prepare_writes_the_resolved_config_once_and_refuses_another(tmp_path):
    runs = expand(load_table("t01"), "smoke")
    d = RunDir.of(runs[0], tmp_path).prepare(runs[0])
    saved = d.config.read_text()
    assert f"run_id: {runs[0].run_id}" in saved and d.status() is Status.NEW
    assert d.prepare(runs[0]) == d and d.config.read_text() == saved  # the same run: kept as it is
    with pytest.raises(rundir.ConfigError, match="holds a different config"):
        d.prepare(runs[1])


def test_a_status_is_its_word_in_text_tables_and_lookups():
    assert f"{Status.CANCELLED:<10}|" == "cancelled |" and str(Status.DONE) == "done"
    assert Status.DONE == "done" and {"done": 1}[Status.DONE] == 1 and "done" in {Status.DONE}
    assert pd.DataFrame({"status": [Status.CORRUPT]}).to_csv(index=False) == "status\ncorrupt\n"
    assert [s for s in Status if s.ended] == [Status.DONE, Status.DIVERGED, Status.FAILED, Status.CANCELLED, Status.CORRUPT]
