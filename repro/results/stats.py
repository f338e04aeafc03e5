"""The statistics of the claims and the profile comparison: pure functions over numbers.

Nothing here knows a table, a row or a claim: the callers (``claims.py``, ``compare.py``)
turn rows and seeds into plain sequences and read the answers. Standard library and scipy
only. What each interval means and when it applies is explained where it is chosen
(``claims.py``'s module docstring, SPEC §8); here is only the arithmetic:

- :func:`sample_sd` (n - 1 in the denominator) and :func:`pooled_sd` (over groups);
- :class:`Interval`: an estimate, its standard error and degrees of freedom, read as a
  two-sided Student-t interval at any level, with its exact minimum detectable effect
  (:func:`mde_in_se`, the noncentral t);
- the intervals of a contrast: :func:`paired_interval` (per-seed values),
  :func:`welch_interval` (row spreads, Welch-Satterthwaite degrees of freedom) and
  :func:`two_way_interval` (the residual of a rows x seeds layout, seeds as blocks);
- :func:`mean_interval` and :func:`tost_equivalent`: a mean difference and the two one-sided
  tests of equivalence against a margin fixed in advance.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from scipy import stats as sps

LEVEL = 0.95  # two-sided confidence level of every interval
POWER = 0.8  # of the minimum detectable effect


def t_quantile(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t at ``df`` degrees of freedom."""
    return float(sps.t.ppf(q, df))


def _sum_of_squares(xs: Sequence[float]) -> float:
    """Sum of squared deviations from the mean."""
    m = sum(xs) / len(xs)
    return sum((x - m) ** 2 for x in xs)


def sample_sd(xs: Sequence[float]) -> float:
    """The sample standard deviation (n - 1 in the denominator); needs two values at least."""
    return math.sqrt(_sum_of_squares(xs) / (len(xs) - 1))


def pooled_sd(groups: Iterable[Sequence[float]]) -> float | None:
    """The standard deviation pooled over groups: sqrt(sum of squares / sum (n_g - 1)).

    Groups of fewer than two values carry no spread and are skipped; None when none is left."""
    ss, dof = 0.0, 0
    for xs in groups:
        if len(xs) < 2:
            continue
        ss += _sum_of_squares(xs)
        dof += len(xs) - 1
    return math.sqrt(ss / dof) if dof else None


def mde_in_se(df: float, level: float = LEVEL, power: float = POWER) -> float:
    """The minimum detectable effect in standard errors: the noncentrality d of Student's t at
    ``df`` degrees of freedom for which the two-sided test at ``level`` rejects with probability
    ``power`` (both tails counted). The usual t_{0.975} + t_{0.8} approximates it (5.36 against
    5.65 at 2 degrees of freedom; the two agree as df grows)."""
    from scipy.optimize import brentq

    crit = t_quantile(0.5 + level / 2, df)

    def tail(p: float) -> float:  # scipy's noncentral t returns NaN for a tail far below 1e-300
        return 0.0 if math.isnan(p) else p

    def shortfall(d: float) -> float:
        return tail(sps.nct.sf(crit, df, d)) + tail(sps.nct.cdf(-crit, df, d)) - power

    high = crit + t_quantile(power, df)  # the usual approximation, at or below the exact value
    while shortfall(high) < 0:
        high *= 1.5
    return float(brentq(shortfall, 0.0, high))


@dataclass(frozen=True)
class Interval:
    """A contrast's estimate, its standard error and degrees of freedom (SPEC §8).

    ``se`` is None when the noise is not measured (a measured row with one seed) and 0 when
    every row is exact (paper values)."""

    estimate: float
    se: float | None
    df: float | None
    paired: bool  # per-seed differences (True) or Welch over row spreads (False)
    n: int | None = None  # paired seeds

    @property
    def half_width(self) -> float | None:
        """t_{0.975,df} * SE: the 95% interval is estimate ± this."""
        if self.se is None:
            return None
        return 0.0 if self.se == 0 else t_quantile(0.5 + LEVEL / 2, self.df) * self.se

    def bounds(self, level: float = LEVEL) -> tuple[float | None, float | None]:
        """The two-sided interval at ``level`` (the precision check's TOST reads it at 90%)."""
        if self.se is None:
            return None, None
        half = 0.0 if self.se == 0 else t_quantile(0.5 + level / 2, self.df) * self.se
        return self.estimate - half, self.estimate + half

    @property
    def low(self) -> float | None:
        return None if self.se is None else self.estimate - self.half_width

    @property
    def high(self) -> float | None:
        return None if self.se is None else self.estimate + self.half_width

    @property
    def mde(self) -> float | None:
        """Minimum detectable effect at 80% power, exactly: :func:`mde_in_se` standard errors."""
        if self.se is None:
            return None
        return 0.0 if self.se == 0 else mde_in_se(self.df) * self.se

    rows: int | None = None  # a two-way (table) interval: the rows whose residual gives the noise

    @property
    def method(self) -> str:
        if self.se is None:
            return "noise not measured"
        if self.se == 0:
            return "exact"
        if self.rows is not None:
            return f"table residual ({self.rows} rows x {self.n} seeds, df {self.df:.0f})"
        return f"paired over {self.n} seeds" if self.paired else f"unpaired (Welch, df {self.df:.1f})"


def paired_interval(d: Sequence[float]) -> Interval:
    """The mean of per-seed values ``d`` (n >= 2): SE = s / sqrt(n) on n - 1 degrees of freedom."""
    n = len(d)
    return Interval(sum(d) / n, sample_sd(d) / math.sqrt(n), n - 1, True, n)


def welch_interval(estimate: float, rows: Iterable[tuple[float, Sequence[float]]]) -> Interval:
    """A weighted sum of means, ``estimate``, with Welch's standard error and degrees of freedom.

    ``rows``: (weight w_i, values x_i) of every row with noise (exact rows, which add none, are
    left out): SE^2 = sum_i w_i^2 s_i^2 / n_i on Welch-Satterthwaite degrees of freedom
    SE^4 / sum_i (w_i^2 s_i^2 / n_i)^2 / (n_i - 1). A row with one value leaves the noise
    unmeasured (SE None); no row, or no spread at all, gives SE 0."""
    parts = []  # (w^2 s^2 / n, n - 1) per row
    for w, xs in rows:
        n = len(xs)
        if n < 2:
            return Interval(estimate, None, None, False)
        parts.append((w * w * sample_sd(xs) ** 2 / n, n - 1))
    var = sum(p for p, _ in parts)
    if not parts or var == 0:
        return Interval(estimate, 0.0, None, False)
    df = var ** 2 / sum(p * p / k for p, k in parts)
    return Interval(estimate, math.sqrt(var), df, False)


def two_way_interval(x: Mapping[str, Mapping[int, float]], seeds: Sequence[int],
                     weights: Mapping[str, float]) -> Interval:
    """A contrast of row means in a rows x seeds layout with seeds as blocks.

    ``x[row][seed]`` for every row of the layout and every seed of ``seeds``; ``weights``: the
    contrast over some of the rows, summing to 0 (so the seed effects cancel). The model
    x_{r,s} = mu_r + b_s + e gives the residual variance sigma^2 = SS_res / ((R-1)(n-1)) over all
    R rows, and the contrast SE = sigma sqrt(sum w^2 / n) on (R-1)(n-1) degrees of freedom."""
    n, k = len(seeds), len(x)
    row_mean = {r: sum(x[r][s] for s in seeds) / n for r in x}
    seed_mean = {s: sum(x[r][s] for r in x) / k for s in seeds}
    grand = sum(row_mean.values()) / k
    ss = sum((x[r][s] - row_mean[r] - seed_mean[s] + grand) ** 2 for r in x for s in seeds)
    df = (k - 1) * (n - 1)
    se = math.sqrt(ss / df * sum(w * w for w in weights.values()) / n)
    return Interval(sum(w * row_mean[r] for r, w in weights.items()), se, df, True, n, rows=k)


def mean_interval(d: Sequence[float], level: float = LEVEL) -> tuple[float | None, float | None, float | None]:
    """(mean, low, high) of ``d`` with its two-sided Student-t interval at ``level`` (the paired
    interval); the bounds are None with fewer than two values, everything None with none."""
    if not d:
        return None, None, None
    m = sum(d) / len(d)
    if len(d) < 2:
        return m, None, None
    return (m, *paired_interval(d).bounds(level))


def tost_equivalent(low: float, high: float, margin: float) -> bool:
    """Two one-sided tests: equivalent within ± ``margin`` when the whole interval (at 1 - 2 alpha,
    e.g. 90% for tests at 5% each) lies strictly inside it."""
    return -margin < low and high < margin
