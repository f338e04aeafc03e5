"""A requeued job's earlier attempt must not end the wait: the scheduler's word comes first,
and a task removes the result file an earlier attempt of it left.

Real submitit jobs (LocalExecutor); the SLURM side of the same story, a requeued two-node
job, is tests/launch/test_slurm_multinode.py.
"""

import pickle
import sys
from pathlib import Path

import cloudpickle
import submitit

from repro.launch.job import _remove_stale_result
from repro.launch.submit import _ended

# The jobs' functions below are pickled by value: the job need not import this test module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _attempt_after_a_failed_one() -> bool:
    """In the job: put an earlier attempt's error result where submitit reads this task's,
    as a rank killed with its peers leaves it; remove it as a task does at its start; return
    whether the file is still there."""
    stale = submitit.JobEnvironment().paths.result_pickle
    with open(stale, "wb") as f:
        pickle.dump(("error", "RuntimeError: the first attempt lost its peers"), f)
    _remove_stale_result()
    return stale.exists()


def test_a_task_removes_the_result_an_earlier_attempt_left(tmp_path):
    executor = submitit.LocalExecutor(folder=tmp_path)
    executor.update_parameters(timeout_min=2)
    job = executor.submit(_attempt_after_a_failed_one)
    assert job.result() is False  # the stale file was found at submitit's path and removed
    assert job.done()  # and this attempt wrote its own result


def _finished() -> str:
    return "ok"


def test_a_job_the_scheduler_says_may_still_run_has_not_ended(tmp_path):
    executor = submitit.LocalExecutor(folder=tmp_path)
    executor.update_parameters(timeout_min=2)
    job = executor.submit(_finished)
    job.result()
    assert Path(job.paths.result_pickle).exists() and job.done()  # submitit: ended
    runs = tmp_path / "runs"
    # SLURM saying RUNNING / PENDING (a requeue) outweighs a result file.
    assert _ended(None, job, runs, slurm_ended=set(), slurm_active={job.job_id}) is False
    assert _ended(None, job, runs, slurm_ended={job.job_id}, slurm_active=set()) is None
