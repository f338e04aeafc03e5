"""``python -m repro status``: one line per run, with what the scheduler says, and the same
per-run figures as the live view of ``run`` (step of total, loss, seconds per step, ETA)."""

from __future__ import annotations

from pathlib import Path

from ..grid import Table, expand
from ..rundir import RunDir, Scheduler, Status, run_states
from .progress import RunProgress, fmt_duration, read_progress, run_left_s, summary_line
from .slurm import slurm_states

STATUS_HEADER = (f"{'run':<40} {'status':<9} {'SLURM':<11} {'job':<12} {'step':>11} {'loss':>9} {'s/step':>7} "
                 f"{'ETA':>6}  error")


def status_progress(table: Table, profile: str, runs_root: str | Path,
                    scheduler: Scheduler | None = slurm_states) -> list[tuple[RunProgress, str]]:
    """Each run's progress (state and last logged figures) and its SLURM state and job id; the
    scheduler is asked once for the whole table."""
    runs = expand(table, profile)
    dirs = [RunDir.of(r, runs_root) for r in runs]
    out = []
    for run, d, state in zip(runs, dirs, run_states(dirs, scheduler)):
        p = read_progress(run.run_id, d, state)
        out.append((p, f"{state.scheduler_state or '-':<11} {state.job_id or '-':<12}"))
    return out


def status_lines(progress: list[tuple[RunProgress, str]]) -> list[str]:
    """One line per run of :func:`status_progress`, under ``STATUS_HEADER``: status, SLURM state
    and job id, the last step of total steps, loss and seconds per step (from metrics.jsonl),
    the run's ETA, and why a run failed, was cancelled or is corrupt."""
    lines, every = [], [p for p, _ in progress]
    for p, scheduler in progress:
        step = "-" if p.step is None else f"{p.step}/{p.total_steps if p.total_steps is not None else '?'}"
        loss = "-" if p.loss is None else f"{p.loss:.4f}"
        spi = "-" if p.sec_per_iter is None else f"{p.sec_per_iter:.3f}"
        eta = fmt_duration(run_left_s(p, every)) if p.status == Status.RUNNING else "-"
        lines.append(f"{p.run_id:<40} {p.status:<9} {scheduler} {step:>11} {loss:>9} {spi:>7} {eta:>6}  "
                     f"{p.error or ''}".rstrip())
    return lines


def status_text(table: Table, profile: str, runs_root: str | Path, scheduler: Scheduler | None = slurm_states) -> str:
    """What ``status`` prints, from one look at the runs: the header, one line per run, and the
    live view's summary line (runs done / running / pending / failed and the ETA)."""
    progress = status_progress(table, profile, runs_root, scheduler)
    summary = summary_line(f"{table.name}/{profile}", [p for p, _ in progress])
    return "\n".join([STATUS_HEADER, "\n".join(status_lines(progress)), summary])
