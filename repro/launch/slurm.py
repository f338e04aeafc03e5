"""SLURM's word on jobs (sacct, squeue), and run states corrected by it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path

from ..rundir import RunState, corrupt_error, first_error_line, read_json, run_status

# May still run. PREEMPTED too: where preemption requeues, the job comes back (submitit agrees).
SLURM_ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "CONFIGURING", "COMPLETING",
                "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "PREEMPTED"}
# Ended without the run's final.json: the job is over and the run did not finish.
SLURM_ENDED_BADLY = {"FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
                     "COMPLETED", "REVOKED", "SPECIAL_EXIT"}


def _expand_job_ids(field_: str) -> list[str]:
    """``123_[0-2,5%2]`` (a pending array, as sacct/squeue print it) -> 123_0, 123_1, 123_2, 123_5."""
    if "_[" not in field_:
        return [field_]
    base, _, spec = field_.partition("_[")
    spec = spec.rstrip("]").split("%")[0]
    out = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit() and (not hi or hi.isdigit()):
            out += [f"{base}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


def _parse_states(text: str) -> dict[str, str]:
    """``JobID|State`` lines -> {job id: first word of the state} ("CANCELLED by 0" -> CANCELLED)."""
    states = {}
    for line in text.splitlines():
        job, sep, state = line.strip().partition("|")
        if sep and state.split():
            for jid in _expand_job_ids(job):
                states[jid] = state.split()[0].rstrip("+")
    return states


def slurm_states(job_ids: Iterable[str]) -> dict[str, str]:
    """SLURM state of each job, in one sacct call (squeue for jobs sacct does not know yet).

    UNKNOWN where SLURM cannot say (no SLURM here, accounting down, job purged).
    """
    ids = sorted({str(j) for j in job_ids})
    if not ids:
        return {}
    states: dict[str, str] = {}
    for cmd in (["sacct", "-j", ",".join(ids), "-n", "-X", "-P", "-o", "JobID,State"],
                ["squeue", "-h", "-j", ",".join(ids), "-o", "%i|%T"]):
        missing = [i for i in ids if i not in states]
        if not missing:
            break
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        states.update({k: v for k, v in _parse_states(out).items() if k not in states})
    return {i: states.get(i, "UNKNOWN") for i in ids}


def slurm_state(job_id: str) -> str:
    """The job's SLURM state from sacct (UNKNOWN when SLURM cannot say)."""
    return slurm_states([job_id])[str(job_id)]


def merged_status(dir_status: str, scheduler_state: str | None) -> str:
    """The run's status: the run directory's, corrected by what the scheduler says.

    A directory that says pending/running only means that the job has not written its
    end: the job may have been cancelled (-> ``cancelled``), or have died without a word,
    killed for time or memory, its node lost (-> ``failed``).
    """
    if dir_status not in ("pending", "running") or scheduler_state in (None, "UNKNOWN"):
        return dir_status
    if scheduler_state == "CANCELLED":
        return "cancelled"
    if scheduler_state in SLURM_ENDED_BADLY:
        return "failed"
    if scheduler_state == "RUNNING":
        return "running"
    return dir_status


def run_states(run_dirs: list[Path], *, ask_scheduler: bool = True) -> list[RunState]:
    """The state of each run directory; one sacct call for all its SLURM jobs."""
    dir_status = [run_status(d) for d in run_dirs]
    jobs = [read_json(d / "job.json") or {} for d in run_dirs]
    slurm_ids = [str(j["job_id"]) for j in jobs if j.get("executor") == "slurm" and "job_id" in j]
    scheduler = slurm_states(slurm_ids) if ask_scheduler else {}
    out = []
    for d, s, job in zip(run_dirs, dir_status, jobs):
        job_id = str(job["job_id"]) if "job_id" in job else None
        sched = scheduler.get(job_id) if job.get("executor") == "slurm" else None
        status = merged_status(s, sched)
        error = None
        if s == "failed":
            error = first_error_line(d)
        elif s == "corrupt":
            error = corrupt_error(d)
        elif status == "failed":
            error = (f"SLURM {sched}: the job ended without final.json "
                     f"(log: {job.get('submitit_folder', '.submitit')}/{job_id}/)")
        elif status == "cancelled":
            error = "SLURM CANCELLED (scancel): relaunch to resume from the last checkpoint"
        out.append(RunState(status, job_id, sched if job.get("executor") == "slurm" else None, error))
    return out
