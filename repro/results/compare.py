"""The same rows of one table at two profiles, paired seed by seed: does an option change them?

A speed option (``train.precision: bf16`` with ``train.channels_last``) may be adopted for a
reduced-scale profile only if it leaves the results unchanged within noise. The check runs
some rows of the table at a second profile that differs from the first by that option alone,
with the same seeds. A row's run at one seed starts from the same weights and sees the same
data order and augmentations at both profiles, so each (row, seed) pair differs only by the
option: d = value(other) - value(base).

For each accuracy metric, over all pairs (n of them, every row's option effect taken as one):

- the estimate is mean(d) with the 95% interval mean(d) ± t_{0.975,n-1} sd(d) / sqrt(n);
- the noise is the base profile's run-to-run standard deviation of that metric, pooled over
  its trained rows (the spread between seeds that every contrast of the table lives with);
- ``unchanged within noise`` when the whole interval lies inside ± that noise (an
  equivalence test: with 95% confidence the option moves the metric by less than one
  seed-to-seed standard deviation, even where the shift is significantly non-zero);
  ``changed`` when the interval excludes 0 and reaches beyond the noise; ``inconclusive``
  otherwise, and when fewer than 2 pairs or no noise are measured.

Seconds per step are reported as the geometric mean of the per-pair ratios (other / base),
with its 95% interval on the log scale; they get no verdict (the option is there for them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .. import rundir
from ..config import ConfigError
from ..grid import Table, load_table
from .claims import CONTROL_ROW, Interval, measured_values, pooled_std, sample_sd
from .collect import States, collect, fmt, write_if_changed

ACCURACY_METRICS = ("top1", "knn_top1")
METRIC_LABELS = {"top1": "linear probe top-1", "knn_top1": "kNN top-1", "sec_per_iter": "seconds per step"}


@dataclass(frozen=True)
class Pair:
    row: str
    seed: int
    base: float
    other: float


@dataclass(frozen=True)
class Comparison:
    """One metric over the pairs: the mean difference (for seconds, the mean log ratio)."""

    metric: str
    pairs: tuple[Pair, ...]
    estimate: float | None
    low: float | None
    high: float | None
    noise: float | None  # the base profile's pooled run-to-run std (accuracies only)
    outcome: str | None  # None for seconds per step

    @property
    def n(self) -> int:
        return len(self.pairs)


def pairs(base: pd.DataFrame, other: pd.DataFrame, metric: str) -> list[Pair]:
    """Finished (row, seed) runs present at both profiles, in the other profile's order."""
    def done(frame: pd.DataFrame) -> dict[tuple[str, int], float]:
        if not len(frame) or metric not in frame:
            return {}
        ok = frame[(frame["status"] == "done") & pd.to_numeric(frame[metric], errors="coerce").notna()]
        return {(r, int(s)): float(v) for r, s, v in zip(ok["row"], ok["seed"], ok[metric])}

    b, o = done(base), done(other)
    return [Pair(r, s, b[(r, s)], v) for (r, s), v in o.items() if (r, s) in b]


def _interval(d: list[float]) -> tuple[float | None, float | None, float | None]:
    """mean(d) and its paired 95% interval: the claims' own :class:`Interval` over the seeds."""
    if not d:
        return None, None, None
    m = sum(d) / len(d)
    if len(d) < 2:
        return m, None, None
    interval = Interval(m, sample_sd(d) / math.sqrt(len(d)), len(d) - 1, True, len(d))
    return m, interval.low, interval.high


def judge(low: float | None, high: float | None, noise: float | None) -> str:
    """The outcome of a difference's 95% interval against the noise band (see the module)."""
    if low is None or high is None or not noise:
        return "inconclusive"
    if -noise < low and high < noise:
        return "unchanged within noise"
    if low > 0 or high < 0:
        return "changed"
    return "inconclusive"


def compare(table: Table, base: str, other: str, runs_root: str | Path,
            states: States = rundir.run_states) -> list[Comparison]:
    """Every accuracy metric and seconds per step of ``other`` against ``base``, paired."""
    for p in (base, other):
        if p not in table.profiles:
            raise ConfigError(f"unknown profile {p!r} for table {table.name}; choose one of {', '.join(table.profiles)}")
    if base == other:
        raise ConfigError(f"compare {table.name}: --profile and --against are both {base!r}; give two profiles")
    fb, fo = collect(table, base, runs_root, states), collect(table, other, runs_root, states)
    out = []
    for metric in ACCURACY_METRICS:
        ps = pairs(fb, fo, metric)
        est, low, high = _interval([p.other - p.base for p in ps])
        trained = {r: v for r, v in measured_values(table, base, fb, metric).items() if r != CONTROL_ROW}
        noise = pooled_std(trained)
        out.append(Comparison(metric, tuple(ps), est, low, high, noise, judge(low, high, noise)))
    ps = [p for p in pairs(fb, fo, "sec_per_iter") if p.base > 0 and p.other > 0]
    est, low, high = _interval([math.log(p.other / p.base) for p in ps])
    out.append(Comparison("sec_per_iter", tuple(ps), est, low, high, None, None))
    return out


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{math.exp(x):.2f}x"


def report(table: Table, base: str, other: str, results: list[Comparison]) -> str:
    """Markdown: the per-pair values, then one line per metric with its outcome."""
    lines = [f"# {table.name}: profile `{other}` against `{base}`, paired by seed", "",
             f"`{other}`: {' '.join(table.profiles[other].description.split())}", "",
             "Each pair is one row and seed run at both profiles (same initial weights, data order and "
             "augmentations). Accuracies: the mean difference with its 95% interval (Student's t over the "
             "pairs), against the noise, the run-to-run standard deviation of the metric at "
             f"`{base}` pooled over its trained rows; the option leaves a metric unchanged within noise when "
             "the whole interval lies inside ± the noise. Seconds per step: the geometric mean ratio.", "",
             "| metric | pairs | estimate | 95% interval | noise (± band) | outcome |", "|---|---|---|---|---|---|"]
    for c in results:
        label = METRIC_LABELS.get(c.metric, c.metric)
        if c.metric == "sec_per_iter":
            ci = "-" if c.low is None else f"[{_ratio(c.low)}, {_ratio(c.high)}]"
            lines.append(f"| {label} | {c.n} | {_ratio(c.estimate)} | {ci} | - | - |")
        else:
            ci = "-" if c.low is None else f"[{c.low:+.2f}, {c.high:+.2f}]"
            est = "-" if c.estimate is None else f"{c.estimate:+.2f}"
            lines.append(f"| {label} | {c.n} | {est} | {ci} | {fmt(c.noise)} | {c.outcome} |")
    if not any(c.pairs for c in results):
        return "\n".join(lines + ["", "No (row, seed) has finished at both profiles yet."]) + "\n"
    lines += ["", f"| row | seed | metric | `{base}` | `{other}` | difference |", "|---|---|---|---|---|---|"]
    for c in results:
        for p in c.pairs:
            diff = f"{p.other / p.base:.2f}x" if c.metric == "sec_per_iter" else f"{p.other - p.base:+.2f}"
            digits = 3 if c.metric == "sec_per_iter" else 2
            lines.append(f"| {p.row} | {p.seed} | {METRIC_LABELS.get(c.metric, c.metric)} | "
                         f"{fmt(p.base, digits)} | {fmt(p.other, digits)} | {diff} |")
    return "\n".join(lines) + "\n"


def compare_profiles(table_name: str, base: str, other: str, runs_root: str | Path, out: str | Path | None = None,
                     states: States = rundir.run_states) -> str:
    """The comparison as markdown; written atomically to ``out`` when given."""
    table = load_table(table_name)
    text = report(table, base, other, compare(table, base, other, runs_root, states))
    if out is not None:
        write_if_changed(Path(out), text)
    return text
