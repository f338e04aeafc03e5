"""The live view of a table's runs while ``run`` waits, and the per-run figures of ``status``.

Everything shown comes from the run directories: the state (``repro.rundir`` / SLURM) and
the last complete line of ``metrics.jsonl`` (step, total steps, loss, seconds per step). In
a terminal the view is one block redrawn in place (tqdm style); elsewhere (CI, nohup, SLURM
logs) it is one summary line every ``interval_s`` seconds.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import TextIO

from ..rundir import FINISHED, RunDir, RunState, Status


@dataclass(frozen=True)
class RunProgress:
    """One run's state and its last logged figures (None where nothing is logged yet)."""

    run_id: str
    status: Status
    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    sec_per_iter: float | None = None
    error: str | None = None
    # Done runs, from final.json: seconds of an uninterrupted attempt (its steps at its pace, and
    # its probes), not first step to last, which counts the pauses of a resumed run.
    length_s: float | None = None
    probe_s: float | None = None

    @property
    def eta_s(self) -> float | None:
        """Seconds of training left at the last logged pace (the probes after it not counted)."""
        if self.step is None or self.total_steps is None or not self.sec_per_iter:
            return None
        return max(0, self.total_steps - self.step) * self.sec_per_iter


def read_progress(run_id: str, run_dir: RunDir, state: RunState) -> RunProgress:
    last = run_dir.last_metrics() or {}
    length = probe = None
    if state.status in FINISHED:
        final = run_dir.read_final() or {}
        probe = final.get("probe_wall_s")
        if probe is not None and final.get("steps") is not None:
            length = final["steps"] * (final.get("sec_per_iter") or 0.0) + probe
    return RunProgress(run_id, state.status, last.get("step"), last.get("total_steps"), last.get("loss"),
                       last.get("sec_per_iter"), state.error, length, probe)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def typical_length_s(progress: list[RunProgress]) -> float | None:
    """The median length of the finished runs (median: a run whose attempt shared the cores is
    not typical); before any has finished, of the training seen so far (None: nothing seen)."""
    done = _median([p.length_s for p in progress if p.length_s is not None])
    if done is not None:
        return done
    return _median([p.total_steps * p.sec_per_iter for p in progress if p.total_steps and p.sec_per_iter])


def run_left_s(p: RunProgress, progress: list[RunProgress]) -> float | None:
    """Seconds left in a running run: its training left at its logged pace, plus the finished
    runs' median probe time (None before it logs a step)."""
    if p.eta_s is None:
        return None
    return p.eta_s + (_median([q.probe_s for q in progress if q.probe_s is not None]) or 0.0)


# How the summary line counts runs: new ones as pending, cancelled and corrupt ones as failed,
# diverged ones as done (their result is recorded; the table and the report say they diverged).
_COUNTED_AS = {Status.NEW: Status.PENDING, Status.CANCELLED: Status.FAILED, Status.CORRUPT: Status.FAILED,
               Status.DIVERGED: Status.DONE}


def counts(progress: list[RunProgress]) -> dict[Status, int]:
    """Runs done / running / pending / failed (failed counts cancelled and corrupt runs too)."""
    out = {Status.DONE: 0, Status.RUNNING: 0, Status.PENDING: 0, Status.FAILED: 0}
    for p in progress:
        key = _COUNTED_AS.get(p.status, p.status)
        out[key if key in out else Status.PENDING] += 1
    return out


def overall_eta_s(progress: list[RunProgress]) -> float | None:
    """A rough ETA for the table: what is left in the running runs (a typical run's length, for
    one that has logged no step yet), plus each pending run at a typical run's length
    (:func:`typical_length_s`), spread over as many runs at once as run now. Process start-up is
    not counted."""
    running = [p for p in progress if p.status == Status.RUNNING]
    pending = [p for p in progress if p.status in (Status.PENDING, Status.NEW)]
    if not running and not pending:
        return 0.0
    typical = typical_length_s(progress)
    lefts = [run_left_s(p, progress) for p in running]
    if typical is None and (pending or None in lefts):
        return None
    left = sum(typical if v is None else v for v in lefts) + len(pending) * (typical or 0.0)
    return left / max(1, len(running))


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def run_figures(p: RunProgress, left_s: float | None) -> str:
    """``step 4/6  loss 2.1234  0.310 s/step  ETA 0m01s`` (``-`` for what is not logged yet)."""
    step = "-" if p.step is None else f"{p.step}/{p.total_steps if p.total_steps is not None else '?'}"
    loss = "-" if p.loss is None else f"{p.loss:.4f}"
    spi = "-" if p.sec_per_iter is None else f"{p.sec_per_iter:.3f}"
    return f"step {step:>11}  loss {loss:>8}  {spi:>7} s/step  ETA {fmt_duration(left_s)}"


def _bar(p: RunProgress, width: int = 20) -> str:
    if p.step is None or not p.total_steps:
        return "|" + " " * width + "|"
    filled = min(width, round(width * p.step / p.total_steps))
    return "|" + "#" * filled + " " * (width - filled) + "|"


def summary_line(name: str, progress: list[RunProgress], *, detail: bool = False) -> str:
    """``t01/smoke: 2/6 done, 2 running, 2 pending, 0 failed; ETA 1m20s``; with ``detail``, each
    running run's step and ETA after it (``| bn-bn-s0-1a2b 4/6 ETA 0m01s``)."""
    c = counts(progress)
    line = (f"{name}: {c[Status.DONE]}/{len(progress)} done, {c[Status.RUNNING]} running, "
            f"{c[Status.PENDING]} pending, {c[Status.FAILED]} failed; ETA {fmt_duration(overall_eta_s(progress))}")
    if detail:
        for p in progress:
            if p.status == Status.RUNNING:
                step = "-" if p.step is None else f"{p.step}/{p.total_steps if p.total_steps is not None else '?'}"
                line += f" | {p.run_id} {step} ETA {fmt_duration(run_left_s(p, progress))}"
    return line


def block_lines(name: str, progress: list[RunProgress]) -> list[str]:
    """The terminal block: the summary line, then one bar per running run."""
    lines = [summary_line(name, progress)]
    for p in progress:
        if p.status == Status.RUNNING:
            lines.append(f"  {p.run_id:<40} {_bar(p)} {run_figures(p, run_left_s(p, progress))}")
    return lines


class LiveView:
    """Shows a table's progress on ``stream``: a redrawn block on a terminal, else a line
    every ``interval_s`` seconds (and whenever a run ends). ``note`` prints a line above it."""

    def __init__(self, name: str, stream: TextIO, *, interval_s: float = 30.0, tty: bool | None = None,
                 clock=time.monotonic):
        self.name, self.stream, self.interval_s, self.clock = name, stream, interval_s, clock
        self.tty = stream.isatty() if tty is None else tty
        self._drawn = 0  # lines of the block on screen
        self._last_line_at: float | None = None
        self._last_counts: dict | None = None

    def _erase(self) -> None:
        if self._drawn:
            # Up to the block's first line, then clear to the end of the screen.
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def note(self, line: str) -> None:
        self._erase()
        self.stream.write(line + "\n")
        self.stream.flush()

    def update(self, progress: list[RunProgress], *, force: bool = False) -> None:
        if self.tty:
            self._erase()
            lines = block_lines(self.name, progress)
            self.stream.write("\n".join(lines) + "\n")
            self._drawn = len(lines)
        else:
            now, c = self.clock(), counts(progress)
            due = self._last_line_at is None or now - self._last_line_at >= self.interval_s
            if force or due or c != self._last_counts:
                self.stream.write(summary_line(self.name, progress, detail=True) + "\n")
                self._last_line_at, self._last_counts = now, c
        self.stream.flush()

    def close(self) -> None:
        """Leave the last block on screen (it is the final state)."""
        self._drawn = 0
