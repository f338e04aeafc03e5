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


def test_a_run_that_finished_in_another_table_is_reused_not_trained_again(tmp_path, monkeypatch):
    """Table 4's byol-4 at cpu-8x4 is Table 1's bn-bn (same config, seed by seed): a run is
    deterministic given its config, so the launcher copies the finished twin's records."""
    import json

    from repro.config import config_hash

    monkeypatch.setattr(submit, "slurm_states", lambda ids: {})
    root = tmp_path / "runs"
    t1 = {r.seed: r for r in expand(load_table("t01"), "cpu-8x4") if r.row == "bn-bn"}
    t4 = load_table("t04")
    runs = expand(t4, "cpu-8x4")
    twins = {r.seed: r for r in runs if r.row == "byol-4"}
    assert config_hash(t1[0].config) == config_hash(twins[0].config)
    # Table 1's seed 0 finished (with its final checkpoint); its seed 1 only started.
    done = RunDir.of(t1[0], root).prepare(t1[0])
    (done.checkpoints).mkdir()
    (done.checkpoints / "step_00004680.pt").write_bytes(b"weights")
    (done.metrics).write_text(json.dumps({"step": 20, "loss": 3.0}) + "\n")
    done.write_job({"job_id": "7", "executor": "local", "host": "h", "submitted": 1.0})
    done.write_final({"table": "t01", "row": "bn-bn", "run_id": t1[0].run_id, "top1": 91.04, "steps": 4680,
                      "final_checkpoint": "checkpoints/step_00004680.pt"})
    RunDir.of(t1[1], root).prepare(t1[1]).metrics.write_text("")
    # Table 4's seed 0 was submitted by a launcher that stopped before it started (its job.json).
    RunDir.of(twins[0], root).prepare(twins[0]).write_job({"job_id": "9", "executor": "local", "host": "gone"})
    said = []
    report = submit._sort_runs(LaunchReport(t4, "cpu-8x4", runs), root, False, said.append)
    submit.reuse_twins(report, root, said.append)

    assert report.reused == [twins[0]] and twins[0] in report.skipped_done and twins[0] not in report.submitted
    assert twins[1] in report.submitted  # its twin has not finished: trained
    reused = RunDir.of(twins[0], root)
    final = reused.read_final()
    source = f"t01/cpu-8x4/{t1[0].run_id}"
    assert final["top1"] == 91.04 and final["reused_from"] == source
    assert (final["table"], final["row"], final["run_id"]) == ("t04", "byol-4", twins[0].run_id)
    assert reused.read_job()["reused_from"] == source and reused.read_job()["submitted"] == 1.0
    assert (reused.path / "checkpoints" / "step_00004680.pt").read_bytes() == b"weights"
    assert reused.metrics.read_text() == done.metrics.read_text()
    assert reused.status() == "done" and reused.saved_config() == twins[0].config
    assert said == [f"  {twins[0].run_id}: the same config as {source}, finished: its records are reused, "
                    "not trained again"]
    # A twin whose saved config differs (the same hash, another config: never trusted) is not used.
    other = RunDir.of(t1[0], tmp_path / "other").prepare(t1[1])  # seed 1's config in seed 0's folder
    other.write_final({"top1": 1.0})
    assert submit.twin_of(twins[0], tmp_path / "other") is None
