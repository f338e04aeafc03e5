"""SLURM's word on jobs (sacct, squeue). What it means for a run is the run directory's
(``repro.rundir.RunDir.status``): :func:`slurm_states` is the scheduler it is handed."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable

# May still run. PREEMPTED too: where preemption requeues, the job comes back (submitit agrees).
SLURM_ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "CONFIGURING", "COMPLETING",
                "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "PREEMPTED"}


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
