"""``python -m repro status``: one line per run, with what the scheduler says."""

from __future__ import annotations

from pathlib import Path

from ..grid import expand, load_table
from ..rundir import last_metrics
from .slurm import run_states

STATUS_HEADER = f"{'run':<40} {'status':<9} {'SLURM':<11} {'job':<12} {'step':>7} {'loss':>9}  error"


def status_lines(table_name: str, profile: str, runs_root: str | Path) -> list[str]:
    """One line per run, under ``STATUS_HEADER``: status, SLURM state and job id, last step and
    loss (from metrics.jsonl), and why a run failed or was cancelled."""
    table = load_table(table_name)
    runs = expand(table, profile)
    lines = []
    for run, state in zip(runs, run_states([r.run_dir(runs_root) for r in runs])):
        last = last_metrics(run.run_dir(runs_root) / "metrics.jsonl")
        step = str(last["step"]) if last else "-"
        loss = f"{last['loss']:.4f}" if last else "-"
        lines.append(f"{run.run_id:<40} {state.status:<9} {state.scheduler_state or '-':<11} "
                     f"{state.job_id or '-':<12} {step:>7} {loss:>9}  {state.error or ''}".rstrip())
    return lines
