"""``python -m repro status``: one line per run, with what the scheduler says, and the same
per-run figures as the live view of ``run`` (step of total, loss, seconds per step, ETA)."""

from __future__ import annotations

from pathlib import Path

from ..grid import expand, load_table
from .progress import RunProgress, fmt_duration, read_progress, summary_line
from .slurm import run_states

STATUS_HEADER = (f"{'run':<40} {'status':<9} {'SLURM':<11} {'job':<12} {'step':>11} {'loss':>9} {'s/step':>7} "
                 f"{'ETA':>6}  error")


def status_progress(table_name: str, profile: str, runs_root: str | Path) -> list[tuple[RunProgress, str]]:
    """Each run's progress (state and last logged figures) and its SLURM state and job id."""
    runs = expand(load_table(table_name), profile)
    out = []
    for run, state in zip(runs, run_states([r.run_dir(runs_root) for r in runs])):
        p = read_progress(run.run_id, run.run_dir(runs_root), state)
        out.append((p, f"{state.scheduler_state or '-':<11} {state.job_id or '-':<12}"))
    return out


def status_lines(table_name: str, profile: str, runs_root: str | Path) -> list[str]:
    """One line per run, under ``STATUS_HEADER``: status, SLURM state and job id, the last
    step of total steps, loss and seconds per step (from metrics.jsonl), the run's ETA, and
    why a run failed, was cancelled or is corrupt."""
    lines = []
    for p, scheduler in status_progress(table_name, profile, runs_root):
        step = "-" if p.step is None else f"{p.step}/{p.total_steps if p.total_steps is not None else '?'}"
        loss = "-" if p.loss is None else f"{p.loss:.4f}"
        spi = "-" if p.sec_per_iter is None else f"{p.sec_per_iter:.3f}"
        eta = fmt_duration(p.eta_s) if p.status == "running" else "-"
        lines.append(f"{p.run_id:<40} {p.status:<9} {scheduler} {step:>11} {loss:>9} {spi:>7} {eta:>6}  "
                     f"{p.error or ''}".rstrip())
    return lines


def status_summary(table_name: str, profile: str, runs_root: str | Path) -> str:
    """The live view's summary line: runs done / running / pending / failed and the ETA."""
    return summary_line(f"{load_table(table_name).name}/{profile}",
                        [p for p, _ in status_progress(table_name, profile, runs_root)])
