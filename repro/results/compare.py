"""Runs that differ by one option, paired seed by seed: does the option change the results?

Two kinds of pairs, one analysis:

- the same rows of one table at two profiles (:func:`compare`): a speed option
  (``train.precision: bf16`` with ``train.channels_last``) may be adopted for a reduced-scale
  profile only if it leaves the results equivalent (below); the second profile differs from the
  first by that option alone, with the same seeds;
- rows of one profile against their variants (:func:`compare_rows`), rows that differ by one
  setting, e.g. Table 1's Momentum BN rows with the paper's biased variance against the
  authors' code's convention (``model.variance``): does the convention matter at a device
  batch of 4?

A run at one seed starts from the same weights and sees the same data order and augmentations
on both sides, so each (row, seed) pair differs only by the option: d = value(other) - value(base).

For each accuracy metric, over all pairs (n of them, every row's option effect taken as one):

- the estimate is mean(d) with the 95% interval mean(d) ± t_{0.975,n-1} sd(d) / sqrt(n), and
  the 90% interval of the two one-sided tests (TOST);
- the equivalence margin is fixed in advance, not estimated from the same data:
  :data:`EQUIVALENCE_MARGIN` points, a quarter of the paper's Table 1 effects the campaigns are
  powered to see (Synced BN over BN 3.90, Momentum BN over BN 4.02);
- ``equivalent`` when the whole 90% interval lies inside ± the margin (TOST at the 5% level:
  the option moves the metric by less than the margin, even where the shift is significantly
  non-zero); ``changed`` when the 95% interval excludes 0 and the 90% interval reaches beyond
  the margin; ``inconclusive`` otherwise, and when fewer than 2 pairs are measured;
- the rows x option interaction, per row against the first row compared: does the option move
  one row more than another (which would change their ordering, whatever the pooled shift)?
  The per-seed difference of the two rows' option effects, with the same intervals and
  outcomes;
- the noise (the base profile's run-to-run standard deviation pooled over its trained rows) is
  shown beside them for scale; it decides nothing.

Seconds per step are reported as the geometric mean of the per-pair ratios (other / base),
with its 95% interval on the log scale; they get no verdict (the option is there for them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..config import ConfigError
from ..grid import Table
from ..rundir import Scheduler, Status
from .claims import CONTROL_ROW, measured_values, pooled_std
from .collect import collect, fmt, write_if_changed
from .stats import mean_interval, tost_equivalent

ACCURACY_METRICS = ("top1", "knn_top1")
# Points of top-1: a quarter of the paper's Table 1 effects that the CPU campaigns are sized to
# see (3.90 and 4.02): an option that moves results by less cannot turn a verdict about them.
EQUIVALENCE_MARGIN = 1.0
TOST_LEVEL = 0.90  # two one-sided tests at 5% each
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
    low90: float | None = None  # the TOST interval
    high90: float | None = None
    margin: float | None = None
    # row -> the interaction (this row's option effect minus the first row's), paired by seed
    interactions: tuple["Interaction", ...] = ()

    @property
    def n(self) -> int:
        return len(self.pairs)


@dataclass(frozen=True)
class Interaction:
    row: str
    against: str
    n: int
    estimate: float | None
    low: float | None
    high: float | None
    low90: float | None
    high90: float | None
    outcome: str


def pairs(base: pd.DataFrame, other: pd.DataFrame, metric: str) -> list[Pair]:
    """Finished (row, seed) runs present at both profiles, in the other profile's order."""
    def done(frame: pd.DataFrame) -> dict[tuple[str, int], float]:
        if not len(frame) or metric not in frame:
            return {}
        ok = frame[(frame["status"] == Status.DONE) & pd.to_numeric(frame[metric], errors="coerce").notna()]
        return {(r, int(s)): float(v) for r, s, v in zip(ok["row"], ok["seed"], ok[metric])}

    b, o = done(base), done(other)
    return [Pair(r, s, b[(r, s)], v) for (r, s), v in o.items() if (r, s) in b]


def judge(low: float | None, high: float | None, low90: float | None, high90: float | None,
          margin: float = EQUIVALENCE_MARGIN) -> str:
    """The outcome of a difference (see the module): TOST on the 90% interval against the
    margin fixed in advance; ``changed`` needs the 95% interval to exclude 0 as well."""
    if low is None or high is None or low90 is None or high90 is None:
        return "inconclusive"
    if tost_equivalent(low90, high90, margin):
        return "equivalent"
    if low > 0 or high < 0:
        return "changed"
    return "inconclusive"


def _judged(d: list[float]) -> tuple:
    est, low, high = mean_interval(d)
    _, low90, high90 = mean_interval(d, TOST_LEVEL)
    return est, low, high, low90, high90, judge(low, high, low90, high90)


def interactions(ps: list[Pair]) -> tuple[Interaction, ...]:
    """Each row's option effect minus the first row's, paired by seed (seeds both rows have)."""
    effect: dict[str, dict[int, float]] = {}
    for p in ps:
        effect.setdefault(p.row, {})[p.seed] = p.other - p.base
    rows = list(effect)
    out = []
    for row in rows[1:]:
        seeds = sorted(set(effect[row]) & set(effect[rows[0]]))
        d = [effect[row][s] - effect[rows[0]][s] for s in seeds]
        est, low, high, low90, high90, outcome = _judged(d)
        out.append(Interaction(row, rows[0], len(d), est, low, high, low90, high90, outcome))
    return tuple(out)


def _check_profile(table: Table, profile: str) -> None:
    if profile not in table.profiles:
        raise ConfigError(f"unknown profile {profile!r} for table {table.name}; choose one of {', '.join(table.profiles)}")


def compare(table: Table, base: str, other: str, runs_root: str | Path,
            scheduler: Scheduler | None = None) -> list[Comparison]:
    """Every accuracy metric and seconds per step of ``other`` against ``base``, paired."""
    for p in (base, other):
        _check_profile(table, p)
    if base == other:
        raise ConfigError(f"compare {table.name}: --profile and --against are both {base!r}; give two profiles")
    fb = collect(table, base, runs_root, scheduler)
    return _comparisons(table, base, fb, fb, collect(table, other, runs_root, scheduler))


def compare_rows(table: Table, profile: str, variants: dict[str, str], runs_root: str | Path,
                 scheduler: Scheduler | None = None) -> list[Comparison]:
    """Every accuracy metric and seconds per step of each variant row against its base row
    (``variants``: base row -> variant row) at ``profile``, paired by seed; a pair is named by
    its base row."""
    _check_profile(table, profile)
    ids = [r.id for r in table.rows]
    for base, other in variants.items():
        for row in (base, other):
            if row not in ids:
                raise ConfigError(f"compare {table.name}: no row {row!r} in the table; its rows: {', '.join(ids)}")
        if base == other:
            raise ConfigError(f"compare {table.name}: row {base!r} against itself; give a base row and its variant")
    frame = collect(table, profile, runs_root, scheduler)
    fb = frame[frame["row"].isin(list(variants))]
    fo = frame[frame["row"].isin(list(variants.values()))].assign(
        row=lambda f: f["row"].map({o: b for b, o in variants.items()}))
    return _comparisons(table, profile, frame, fb, fo)


def _comparisons(table: Table, profile: str, frame: pd.DataFrame, fb: pd.DataFrame,
                 fo: pd.DataFrame) -> list[Comparison]:
    """The analysis of the module over the pairs of ``fb`` (base) and ``fo`` (other); the noise is
    that of ``frame``'s trained rows at ``profile``."""
    out = []
    for metric in ACCURACY_METRICS:
        ps = pairs(fb, fo, metric)
        est, low, high, low90, high90, outcome = _judged([p.other - p.base for p in ps])
        trained = {r: v for r, v in measured_values(table, profile, frame, metric).items() if r != CONTROL_ROW}
        noise = pooled_std(trained)
        out.append(Comparison(metric, tuple(ps), est, low, high, noise, outcome, low90, high90, EQUIVALENCE_MARGIN,
                              interactions(ps)))
    ps = [p for p in pairs(fb, fo, "sec_per_iter") if p.base > 0 and p.other > 0]
    est, low, high = mean_interval([math.log(p.other / p.base) for p in ps])
    out.append(Comparison("sec_per_iter", tuple(ps), est, low, high, None, None))
    return out


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{math.exp(x):.2f}x"


def report(table: Table, base: str, other: str, results: list[Comparison], *,
           variants: dict[str, str] | None = None) -> str:
    """Markdown: one line per metric with its outcome, the interactions, then the per-pair values.
    ``base`` and ``other``: two profiles; with ``variants`` (base row -> variant row), ``base``
    is the one profile and ``other`` names what the variants change."""
    if variants:
        labels = {r.id: r.label for r in table.rows}
        head = [f"# {table.name}: {other} at profile `{base}`, paired by seed", "",
                "Each base row against its variant, the same config but for that setting:", "",
                *[f"- `{b}` ({labels[b]}) against `{o}` ({labels[o]})" for b, o in variants.items()], ""]
        pairs_are = ("Each pair is one seed of a base row and of its variant (same initial weights, data order and "
                     "augmentations), named by the base row.")
        sides, nothing = ("base row", "variant"), "No seed has finished for both a row and its variant yet."
    else:
        head = [f"# {table.name}: profile `{other}` against `{base}`, paired by seed", "",
                f"`{other}`: {' '.join(table.profiles[other].description.split())}", ""]
        pairs_are = ("Each pair is one row and seed run at both profiles (same initial weights, data order and "
                     "augmentations).")
        sides, nothing = (f"`{base}`", f"`{other}`"), "No (row, seed) has finished at both profiles yet."
    lines = head + [pairs_are + " Accuracies: the mean difference with its 95% interval and its 90% interval "
             "(Student's t over the pairs); the option is `equivalent` when the whole 90% interval lies inside "
             f"± {EQUIVALENCE_MARGIN:g} point (two one-sided tests; the margin is fixed in advance, a quarter of "
             "the paper's Table 1 effects), `changed` when the 95% interval excludes 0 and the 90% one reaches "
             "beyond the margin. The interaction asks whether the option moves one row more than another "
             "(which would change their ordering): per seed, the difference of the two rows' option effects. "
             f"The noise (run-to-run standard deviation at `{base}`, pooled over its trained rows) is shown "
             "for scale. Seconds per step: the geometric mean ratio.", "",
             "| metric | pairs | estimate | 95% interval | 90% interval | margin | noise | outcome |",
             "|---|---|---|---|---|---|---|---|"]

    def span(lo, hi):
        return "-" if lo is None else f"[{lo:+.2f}, {hi:+.2f}]"

    for c in results:
        label = METRIC_LABELS.get(c.metric, c.metric)
        if c.metric == "sec_per_iter":
            ci = "-" if c.low is None else f"[{_ratio(c.low)}, {_ratio(c.high)}]"
            lines.append(f"| {label} | {c.n} | {_ratio(c.estimate)} | {ci} | - | - | - | - |")
        else:
            est = "-" if c.estimate is None else f"{c.estimate:+.2f}"
            lines.append(f"| {label} | {c.n} | {est} | {span(c.low, c.high)} | {span(c.low90, c.high90)} | "
                         f"±{c.margin:g} | {fmt(c.noise)} | {c.outcome} |")
    inter = [(c, i) for c in results for i in c.interactions]
    if inter:
        lines += ["", "| interaction (option effect of row − of row) | metric | seeds | estimate | 95% interval | "
                  "90% interval | outcome |", "|---|---|---|---|---|---|---|"]
        for c, i in inter:
            est = "-" if i.estimate is None else f"{i.estimate:+.2f}"
            lines.append(f"| {i.row} − {i.against} | {METRIC_LABELS.get(c.metric, c.metric)} | {i.n} | {est} | "
                         f"{span(i.low, i.high)} | {span(i.low90, i.high90)} | {i.outcome} |")
    if not any(c.pairs for c in results):
        return "\n".join(lines + ["", nothing]) + "\n"
    lines += ["", f"| row | seed | metric | {sides[0]} | {sides[1]} | difference |", "|---|---|---|---|---|---|"]
    for c in results:
        for p in c.pairs:
            diff = f"{p.other / p.base:.2f}x" if c.metric == "sec_per_iter" else f"{p.other - p.base:+.2f}"
            digits = 3 if c.metric == "sec_per_iter" else 2
            lines.append(f"| {p.row} | {p.seed} | {METRIC_LABELS.get(c.metric, c.metric)} | "
                         f"{fmt(p.base, digits)} | {fmt(p.other, digits)} | {diff} |")
    return "\n".join(lines) + "\n"


def compare_profiles(table: Table, base: str, other: str, runs_root: str | Path, out: str | Path | None = None,
                     scheduler: Scheduler | None = None) -> str:
    """The comparison as markdown; written atomically to ``out`` when given."""
    text = report(table, base, other, compare(table, base, other, runs_root, scheduler))
    if out is not None:
        write_if_changed(Path(out), text)
    return text


def compare_variants(table: Table, profile: str, variants: dict[str, str], runs_root: str | Path,
                     out: str | Path | None = None, scheduler: Scheduler | None = None) -> str:
    """:func:`compare_rows` as markdown; written atomically to ``out`` when given."""
    results = compare_rows(table, profile, variants, runs_root, scheduler)
    text = report(table, profile, _changed_setting(table, variants), results, variants=variants)
    if out is not None:
        write_if_changed(Path(out), text)
    return text


def _changed_setting(table: Table, variants: dict[str, str]) -> str:
    """What the variants change, from the rows' settings: ``model.variance: biased``."""
    sets = {r.id: r.set for r in table.rows}
    changed = {f"{k}: {v}" for b, o in variants.items() for k, v in sets[o].items() if sets[b].get(k, object()) != v}
    return " and ".join(sorted(changed)) or "the variant rows"
