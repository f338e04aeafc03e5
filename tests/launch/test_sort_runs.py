"""Which runs a launch submits: the scheduler is asked once for every unfinished run's job."""

from repro.grid import expand, load_table
from repro.launch import submit
from repro.launch.submit import LaunchReport
from repro.rundir import RunDir


def test_slurm_is_asked_once_for_all_unfinished_runs(tmp_path, monkeypatch):
    table = load_table("t01")
    runs = expand(table, "smoke")
    assert len(runs) >= 4
    runs_root = tmp_path / "runs"
    states = {}
    for i, run in enumerate(runs[:4]):  # four runs with a SLURM job on record, two of them alive
        d = RunDir.of(run, runs_root).prepare(run)
        d.write_job({"job_id": str(100 + i), "executor": "slurm", "cluster": "c"})
        states[str(100 + i)] = "RUNNING" if i % 2 == 0 else "FAILED"
    done = RunDir.of(runs[4], runs_root).prepare(runs[4])
    done.write_final({"top1": 1.0})
    calls = []

    def slurm_states(ids):
        ids = sorted(ids)
        calls.append(ids)
        return {i: states[i] for i in ids}

    monkeypatch.setattr(submit, "slurm_states", slurm_states)
    report = submit._sort_runs(LaunchReport(table, "smoke", runs), runs_root, False, lambda *a: None)
    assert calls == [["100", "101", "102", "103"]]
    assert [r.run_id for r in report.skipped_active] == [runs[0].run_id, runs[2].run_id]
    assert [r.run_id for r in report.skipped_done] == [runs[4].run_id]
    assert {r.run_id for r in report.submitted} == {r.run_id for r in runs} - {runs[0].run_id, runs[2].run_id,
                                                                                 runs[4].run_id}
