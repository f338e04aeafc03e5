"""The paper's claims (``tables/claims.yaml``) checked against collected results.

Every check reduces to one or more *conditions*: a weighted sum of row means (a linear
contrast; for ratios, of log row means) that must reach a threshold. Each condition is
reported as an estimate with a 95% confidence interval (SPEC §8):

- *table* (the primary interval of a within-table contrast) when the table's measured rows
  (the control left out) share >= 2 seeds: rows x seeds as a two-way layout with seeds as
  blocks, x_{r,s} = mu_r + b_s + e; the residual variance sigma^2 = SS_res / ((R-1)(n-1))
  over all R rows, and a contrast whose weights sum to 0 has SE = sigma sqrt(sum w^2 / n) on
  (R-1)(n-1) degrees of freedom. It uses every row's noise, not only the contrast's own;
- *paired* when every measured row of the contrast ran the same seeds (n >= 2): rows that
  share a seed share initial weights, data order and augmentations, so the contrast's noise
  is the spread s of its per-seed values d_s = sum_i w_i x_{i,s}; the interval is
  mean(d) ± t_{0.975,n-1} s / sqrt(n). Beside a table interval it is the robustness check
  (it assumes nothing about the other rows' noise); an outcome that differs between the two
  is reported as such;
- *unpaired* (Welch) otherwise, and always for ratio checks (seconds per iteration are not
  common random numbers): SE = sqrt(sum_i w_i^2 s_i^2 / n_i), Welch-Satterthwaite degrees of
  freedom; a row with exact (paper) values contributes no noise.

A condition holds when the whole interval clears its threshold, fails when the whole
interval misses it, and is inconclusive in between, or when the noise is not measured (a
measured row with one seed). The minimum detectable effect at 80% power is the exact one:
the effect d with P(|T| > t_{0.975,df}) = 0.8 for T noncentral t with noncentrality d / SE
(5.65 SE at 2 degrees of freedom, where the usual (t_{0.975} + t_{0.8}) SE gives 5.36); when it
exceeds the paper's own margin for that condition,
the report says this number of seeds cannot decide it; when the whole interval lies below the
paper's own effect, it says the effect at that scale is smaller than the paper's, which decides
the size even where the sign is open.

A claim is ``supported`` when all its conditions hold, ``not supported`` when any fails,
``inconclusive`` otherwise, and ``not run`` when a row it needs has no result at that
profile. A claim with a premise (``premise:`` in the claims file, e.g. "there is a gap to
close") is ``not applicable`` where the premise does not hold beyond its interval: its check
would test something the paper never claims; so is a claim whose check the design of the runs
at a profile does not allow (``applies_when:``, read from the rows' configs: Synced BN's cost is
communication between processes, and emulated devices in one process have none). At a reduced
scale an accuracy claim of a pre-training table first passes a learning-signal gate: every
trained row it uses must beat the table's ``random-init`` control row (same model and seed, no
optimizer step, probed the same way) by more than the noise, paired over seeds; otherwise, or when no control ran at that profile, the verdict is
``no learning signal`` and no ordering is read from the rows. A claim that needs a row whose
training diverged at some seed (the loss became NaN or Inf: the run's result, with no accuracy)
is ``inconclusive``, naming the rows and seeds, with what the runs that trained show: they are
the seeds where the row survived, a selected sample, so no verdict is read from them; such rows
stay out of the table's two-way layout, so the other claims keep every seed.

Values come from two sources, never mixed silently: *measured* (``final.json`` of runs,
one value per seed) and *paper* (transcribed from the paper; exact, no noise). At paper
scale a literature row (``run: false``, e.g. supervised pre-training) enters with its paper
value; at a reduced scale nobody measured it, so claims that need it are ``not run`` there.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd

from ..config import ConfigError, PretrainConfig, from_dict, has_key, load_yaml
from ..grid import TABLES_DIR, Table, expand, load_table
from ..rundir import Status
from . import stats
from .stats import Interval, mde_in_se, sample_sd  # noqa: F401  (re-exported: the claims' intervals)

CLAIMS_FILE = TABLES_DIR / "claims.yaml"
VERDICTS = ("supported", "not supported", "inconclusive", "not applicable", "no learning signal", "not run")
CONTROL_ROW = "random-init"  # a reduced-scale table's control: the same model, never trained
TIME_METRICS = ("sec_per_iter",)  # not accuracies: no learning-signal gate


# --------------------------------------------------------------------------- the claims file


@dataclass(frozen=True)
class Contrast:
    terms: dict[str, float]  # row id -> weight
    at_least: float = 0.0


@dataclass(frozen=True)
class Check:
    kind: Literal["margin", "contrast", "ratio", "trend"]
    better: str | None = None  # margin
    than: list[str] = field(default_factory=list)  # margin
    all: list[Contrast] = field(default_factory=list)  # contrast
    num: str | None = None  # ratio
    den: str | None = None  # ratio
    at_most: float | None = None  # ratio
    at_least: float | None = None  # ratio
    rows: list[str] = field(default_factory=list)  # trend, in the order the parameter grows


@dataclass(frozen=True)
class AppliesWhen:
    """What a check takes for granted of the runs' design, read from the configs of its rows at a
    profile (not from their results): e.g. Synced BN's cost is communication between processes,
    which a profile that emulates every device in one process does not have."""

    key: str  # a dotted config key of a pre-training run, e.g. train.world_size
    at_least: float
    why: str  # what the check needs, said so a reader sees why it cannot be read elsewhere


@dataclass(frozen=True)
class Claim:
    id: str
    where: str  # section, table, figure
    quote: str  # the sentence the claim rests on, quoted short
    table: str
    metric: str
    check: Check
    tolerance: float = 0.0  # in the metric's units (a ratio's units for ratios)
    note: str = ""  # how the sentence was turned into the check
    rows_at: dict[str, dict[str, str]] = field(default_factory=dict)  # profile -> {paper row: row run there}
    # What the check takes for granted (e.g. a gap to close): where it does not hold beyond its
    # interval, the claim is "not applicable" there instead of being checked.
    premise: Contrast | None = None
    # What the check takes for granted of the design: where a row's config falls short, the claim
    # is "not applicable" there, whatever the results.
    applies_when: AppliesWhen | None = None


@dataclass(frozen=True)
class ClaimsFile:
    claims: list[Claim]
    scales: dict[str, str] = field(default_factory=dict)  # profile -> what its scale can show


@dataclass(frozen=True)
class Condition:
    text: str  # human-readable, with the paper's row ids
    terms: dict[str, float]
    threshold: float
    log: bool = False  # a ratio: the contrast is over log(mean)
    ratio: tuple[str, str] | None = None  # (num, den) of a ratio condition, for display


def _num(x: float) -> str:
    return f"{x:g}" if x != 0 else "0"  # never "-0"


def conditions(claim: Claim) -> list[Condition]:
    """The claim's check as conditions ``sum(w * row) >= threshold`` (tolerance applied)."""
    c, tol = claim.check, claim.tolerance
    if c.kind == "margin":
        return [Condition(f"{c.better} − {t} ≥ {_num(-tol)}", {c.better: 1.0, t: -1.0}, -tol) for t in c.than]
    if c.kind == "contrast":
        return [_contrast_condition(k, tol) for k in c.all]
    if c.kind == "ratio":
        if c.at_most is not None:
            bound = c.at_most + tol
            return [Condition(f"{c.num} / {c.den} ≤ {bound:g}", {c.den: 1.0, c.num: -1.0}, -math.log(bound), log=True,
                              ratio=(c.num, c.den))]
        bound = c.at_least - tol
        return [Condition(f"{c.num} / {c.den} ≥ {bound:g}", {c.num: 1.0, c.den: -1.0}, math.log(bound), log=True,
                          ratio=(c.num, c.den))]
    if c.kind == "trend":
        steps = [Condition(f"{b} − {a} ≥ {_num(-tol)}", {b: 1.0, a: -1.0}, -tol) for a, b in zip(c.rows, c.rows[1:])]
        overall = Condition(f"{c.rows[-1]} − {c.rows[0]} ≥ 0", {c.rows[-1]: 1.0, c.rows[0]: -1.0}, 0.0)
        return steps + [overall]
    raise ValueError(c.kind)  # unreachable: the loader checks the kind


def _contrast_condition(k: Contrast, tol: float = 0.0) -> Condition:
    text = " ".join(f"{'+' if w >= 0 else '−'} {abs(w):g}·{r}" for r, w in k.terms.items()).lstrip("+ ")
    return Condition(f"{text} ≥ {_num(k.at_least - tol)}", dict(k.terms), k.at_least - tol)


def claim_rows(claim: Claim) -> list[str]:
    seen: dict[str, None] = {}
    for cond in conditions(claim):
        seen.update(dict.fromkeys(cond.terms))
    if claim.premise is not None:
        seen.update(dict.fromkeys(claim.premise.terms))
    return list(seen)


def _validate(claim: Claim, where: str, table: Table) -> None:
    c = claim.check
    need = {"margin": ("better", "than"), "contrast": ("all",), "ratio": ("num", "den"), "trend": ("rows",)}[c.kind]
    for name in need:
        if not getattr(c, name):
            raise ConfigError(f"{where}.check.{name}: required for a {c.kind} check")
    if c.kind == "ratio" and (c.at_most is None) == (c.at_least is None):
        raise ConfigError(f"{where}.check: a ratio check needs exactly one of at_most, at_least")
    if c.kind == "trend" and len(c.rows) < 2:
        raise ConfigError(f"{where}.check.rows: a trend needs at least two rows")
    ids = [r.id for r in table.rows]
    for row in claim_rows(claim):
        if row not in ids:
            raise ConfigError(f"{where}: row {row!r} is not in table {claim.table} ({', '.join(ids)})")
    if claim.metric not in table.columns:
        raise ConfigError(f"{where}.metric: {claim.metric!r} is not a column of {claim.table} "
                          f"({', '.join(table.columns)})")
    if claim.applies_when is not None:
        if not has_key(PretrainConfig, claim.applies_when.key):
            raise ConfigError(f"{where}.applies_when.key: {claim.applies_when.key!r} is not a key of a "
                              "pre-training run's config (e.g. train.world_size)")
    for profile, mapping in claim.rows_at.items():
        if profile not in table.profiles:
            raise ConfigError(f"{where}.rows_at.{profile}: table {claim.table} has no such profile")
        for src, dst in mapping.items():
            if src not in claim_rows(claim) or dst not in ids:
                raise ConfigError(f"{where}.rows_at.{profile}: {src} -> {dst} must map a row of the check "
                                  f"onto a row of {claim.table}")


def load_claims(path: str | Path = CLAIMS_FILE, tables: Mapping[str, Table] | None = None) -> ClaimsFile:
    """The claims file, each claim checked against its table (``tables``: already loaded, by name;
    any other table is loaded once)."""
    tables = dict(tables or {})
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with 'claims'")
    try:
        parsed = from_dict(ClaimsFile, data)
        ids = [c.id for c in parsed.claims]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ConfigError(f"claims: duplicate id {dup[0]!r}")
        for i, claim in enumerate(parsed.claims):
            if claim.table not in tables:
                tables[claim.table] = load_table(claim.table)
            _validate(claim, f"claims[{i}] ({claim.id})", tables[claim.table])
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return parsed


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class RowValues:
    """One row's values of one metric at one profile."""

    row: str  # the row actually used (after rows_at)
    values: tuple[float, ...]  # one per seed (measured) or the single paper value
    source: Literal["measured", "paper"]
    seeds: tuple[int, ...] = ()  # the seed of each measured value (pairs rows seed by seed)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    @property
    def std(self) -> float | None:
        if self.source != "measured" or self.n < 2:
            return None
        return sample_sd(self.values)


Values = dict[str, RowValues]  # row id -> values


def paper_values(table: Table, metric: str) -> Values:
    """The paper's own numbers, as exact values (rows the paper leaves blank are absent)."""
    return {r.id: RowValues(r.id, (float(r.paper[metric]),), "paper")
            for r in table.rows if r.paper.get(metric) is not None}


def measured_values(table: Table, profile: str, runs: pd.DataFrame, metric: str) -> Values:
    """Per-seed values of finished runs (``results.collect`` frame); at paper scale, literature
    rows (``run: false``) carry their paper value."""
    out: Values = {}
    done = runs[runs["status"] == Status.DONE] if len(runs) else runs
    for row in table.rows:
        if not row.run:
            if table.is_paper_scale(profile) and row.paper.get(metric) is not None:
                out[row.id] = RowValues(row.id, (float(row.paper[metric]),), "paper")
            continue
        if metric not in done or not len(done):
            continue
        mine = done[done["row"] == row.id]
        vals = pd.to_numeric(mine[metric], errors="coerce")
        keep = vals.notna()
        if keep.any():
            seeds = tuple(int(x) for x in mine["seed"][keep]) if "seed" in mine else ()
            out[row.id] = RowValues(row.id, tuple(float(v) for v in vals[keep]), "measured", seeds)
    return out


def diverged_seeds(runs: pd.DataFrame) -> dict[str, tuple[int, ...]]:
    """Row id -> the seeds whose training diverged (``results.collect`` frame; rows with none absent)."""
    if not len(runs) or "status" not in runs:
        return {}
    hit = runs[runs["status"] == Status.DIVERGED]
    return {row: tuple(sorted(int(s) for s in group["seed"])) for row, group in hit.groupby("row", sort=False)}


def pooled_std(values: Values, log: bool = False) -> float | None:
    """Run-to-run standard deviation pooled over rows with at least two seeds (None if none)."""
    return stats.pooled_sd([math.log(v) for v in rv.values] if log else list(rv.values)
                           for rv in values.values() if rv.source == "measured" and rv.n >= 2)


# --------------------------------------------------------------------------- intervals
# Which interval a contrast gets, from its rows; the arithmetic is in ``stats.py``.


def paired_interval(terms: dict[str, float], values: Values, log: bool = False) -> Interval | None:
    """The contrast over per-seed values, when every measured row ran the same >= 2 seeds
    (None otherwise). Exact rows add their constant to every seed's value."""
    f = math.log if log else (lambda x: x)
    measured = {r: values[r] for r in terms if values[r].source == "measured"}
    if not measured:
        return None
    seed_sets = {frozenset(rv.seeds) for rv in measured.values()}
    if any(len(rv.seeds) != rv.n or len(set(rv.seeds)) != rv.n for rv in measured.values()) or len(seed_sets) != 1:
        return None
    seeds = sorted(next(iter(seed_sets)))
    if len(seeds) < 2:
        return None
    const = sum(w * f(values[r].mean) for r, w in terms.items() if r not in measured)
    by_seed = {r: dict(zip(rv.seeds, rv.values)) for r, rv in measured.items()}
    return stats.paired_interval([const + sum(terms[r] * f(by_seed[r][s]) for r in measured) for s in seeds])


def welch_interval(terms: dict[str, float], values: Values, log: bool = False) -> Interval:
    """The contrast of row means with Welch's standard error and degrees of freedom."""
    f = math.log if log else (lambda x: x)
    estimate = sum(w * f(values[r].mean) for r, w in terms.items())
    return stats.welch_interval(estimate, [(w, [f(v) for v in values[r].values]) for r, w in terms.items()
                                           if values[r].source == "measured"])


def table_interval(terms: dict[str, float], values: Values, exclude: frozenset[str] = frozenset()) -> Interval | None:
    """The contrast with the noise of the whole table (SPEC §8; module docstring): rows x seeds
    as a two-way layout, seeds as blocks, over every measured row but the control on the seeds
    they all share. Rows in ``exclude`` (those whose training diverged at a seed) stay out of
    the layout, so that one diverged run does not take its seed from every other row. None
    where that does not apply: fewer than 2 rows or 2 shared seeds, a contrast whose weights do
    not sum to 0 (its seed effects would not cancel), or one with a row outside the layout
    (exact, excluded, or missing a shared seed)."""
    rows = {r: rv for r, rv in values.items()
            if rv.source == "measured" and r != CONTROL_ROW and r not in exclude
            and len(set(rv.seeds)) == rv.n == len(rv.seeds) > 0}
    if any(r not in rows for r in terms) or abs(sum(terms.values())) > 1e-9:
        return None
    seeds = sorted(set.intersection(*(set(rv.seeds) for rv in rows.values())))
    if len(rows) < 2 or len(seeds) < 2:
        return None
    return stats.two_way_interval({r: dict(zip(rv.seeds, rv.values)) for r, rv in rows.items()}, seeds, terms)


def contrast_interval(terms: dict[str, float], values: Values, log: bool = False) -> Interval:
    """Paired where the rows share seeds, else Welch; ratios (``log``) always Welch."""
    return (None if log else paired_interval(terms, values)) or welch_interval(terms, values, log)


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class ConditionResult:
    condition: Condition
    outcome: Literal["holds", "fails", "inconclusive", "not run"]
    value: float | None = None  # the contrast (log contrast for ratios)
    band: float | None = None  # half-width of the 95% interval; None when the noise is not measured
    missing: tuple[str, ...] = ()
    shown: float | None = None  # what a reader compares with the threshold: the contrast, or the ratio
    interval: Interval | None = None
    paper_margin: float | None = None  # how far the paper's own values clear the threshold
    # Beside a table interval: the per-contrast interval (paired, else Welch) and its outcome.
    robust: Interval | None = None
    robust_outcome: str | None = None

    @property
    def robust_differs(self) -> bool:
        return self.robust_outcome is not None and self.robust_outcome != self.outcome

    @property
    def undecidable(self) -> bool:
        """The minimum detectable effect exceeds the paper's margin: these seeds cannot decide it."""
        i = self.interval
        return (i is not None and i.mde is not None and i.mde > 0 and self.paper_margin is not None
                and i.mde > abs(self.paper_margin))

    @property
    def below_papers_effect(self) -> bool:
        """The paper's own effect lies beyond the whole 95% interval, on the side of the claim: the
        effect here is smaller than the paper's (whatever the outcome on the threshold itself)."""
        i = self.interval
        return (i is not None and i.high is not None and bool(i.se) and self.paper_margin is not None
                and self.paper_margin > 0 and i.high < self.condition.threshold + self.paper_margin)


@dataclass(frozen=True)
class SignalResult:
    """One trained row against the ``random-init`` control (paired over seeds)."""

    row: str
    trained: float  # mean
    control: float  # mean
    interval: Interval  # trained - control

    @property
    def beats(self) -> bool:
        return self.interval.low is not None and self.interval.low > 0


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    profile: str  # a profile name, or "paper numbers" for the paper's own values
    metric: str
    verdict: str  # one of VERDICTS
    reason: str
    results: list[ConditionResult]
    evidence: list[RowValues]  # the rows the check used
    substitutions: dict[str, str]  # paper row -> row used at this profile
    noise: float | None  # pooled run-to-run std of the metric (None: not measured)
    signal: list[SignalResult] | None = None  # the learning-signal gate (None: no gate here)
    premise: ConditionResult | None = None  # the claim's premise, where it has one


def _mapped(cond: Condition, mapping: dict[str, str]) -> Condition:
    terms: dict[str, float] = {}
    for row, w in cond.terms.items():
        terms[mapping.get(row, row)] = terms.get(mapping.get(row, row), 0.0) + w
    text = re.sub(r"[A-Za-z0-9_.\-]+", lambda m: mapping.get(m.group(0), m.group(0)), cond.text)
    ratio = tuple(mapping.get(r, r) for r in cond.ratio) if cond.ratio else None
    return Condition(text, terms, cond.threshold, cond.log, ratio)


def _outcome(ci: Interval, threshold: float) -> str:
    band = ci.half_width
    if band is None:
        return "inconclusive"
    margin = ci.estimate - threshold
    if band == 0.0:
        return "holds" if margin >= -1e-9 else "fails"
    return "holds" if margin > band else "fails" if margin < -band else "inconclusive"


def evaluate_condition(cond: Condition, values: Values, paper_margin: float | None = None,
                       exclude: frozenset[str] = frozenset()) -> ConditionResult:
    """The condition's outcome on its primary interval: the table's (:func:`table_interval`, without
    the rows of ``exclude``) where it applies, with the per-contrast interval beside it, else the
    per-contrast one."""
    missing = tuple(r for r in cond.terms if r not in values)
    if missing:
        return ConditionResult(cond, "not run", missing=missing)
    rvs = [values[r] for r in cond.terms]
    if cond.log and any(v <= 0 for rv in rvs for v in rv.values):
        return ConditionResult(cond, "not run", missing=tuple(rv.row for rv in rvs))
    own = contrast_interval(cond.terms, values, cond.log)
    table = None if cond.log else table_interval(cond.terms, values, exclude)
    ci = table or own
    robust = dict(robust=own, robust_outcome=_outcome(own, cond.threshold)) if table is not None else {}
    return ConditionResult(cond, _outcome(ci, cond.threshold), ci.estimate, ci.half_width,
                           shown=_shown(cond, values, ci.estimate), interval=ci, paper_margin=paper_margin, **robust)


def _shown(cond: Condition, values: Values, value: float) -> float:
    if cond.ratio:
        num, den = cond.ratio
        return values[num].mean / values[den].mean
    return value


def _paper_margin(cond: Condition, paper: Values | None) -> float | None:
    if not paper or any(r not in paper for r in cond.terms):
        return None
    f = math.log if cond.log else (lambda x: x)
    if cond.log and any(paper[r].mean <= 0 for r in cond.terms):
        return None
    return sum(w * f(paper[r].mean) for r, w in cond.terms.items()) - cond.threshold


def needs_control(table: Table, profile: str, metric: str) -> bool:
    """Whether verdicts on ``metric`` at ``profile`` pass the learning-signal gate: reduced-scale
    accuracies of pre-training tables."""
    if table.is_paper_scale(profile) or metric in TIME_METRICS or profile not in table.profiles:
        return False
    runs = expand(table, profile)
    return bool(runs) and all(r.config.task == "pretrain" for r in runs)


def out_of_scope(claim: Claim, table: Table, profile: str) -> str | None:
    """Why ``claim``'s check cannot be read at ``profile`` by the design of its runs (its
    ``applies_when`` against the configs of the rows it uses there), or None when it can."""
    need = claim.applies_when
    if need is None or profile not in table.profiles:
        return None
    mapping = claim.rows_at.get(profile, {})
    rows = {mapping.get(r, r) for r in claim_rows(claim)}
    short = {}
    for run in expand(table, profile):
        if run.row in rows:
            value = run.config
            for part in need.key.split("."):
                value = getattr(value, part)
            if value < need.at_least:
                short.setdefault(run.row, value)
    if not short:
        return None
    said = ", ".join(f"{row} {value}" for row, value in sorted(short.items()))
    return f"its premise does not hold in this design: {need.why} ({need.key} is {said} at this profile)"


def learning_signal(rows: list[str], values: Values) -> list[SignalResult]:
    """Each measured trained row of ``rows`` against the control (which must be in ``values``)."""
    control = values[CONTROL_ROW]
    out = []
    for r in rows:
        if r == CONTROL_ROW or r not in values or values[r].source != "measured":
            continue
        ci = contrast_interval({r: 1.0, CONTROL_ROW: -1.0}, values)
        out.append(SignalResult(r, values[r].mean, control.mean, ci))
    return out


def _fmt_ci(i: Interval) -> str:
    if i.se is None:
        return f"{i.estimate:+.2f} (noise not measured)"
    return f"{i.estimate:+.2f}, 95% CI [{i.low:+.2f}, {i.high:+.2f}]"


def _below(r: ConditionResult) -> str:
    f = (lambda x: f"{x:.3g} (log)") if r.condition.log else (lambda x: f"{x:.3g}")
    return (f"{r.condition.text}: interval up to {f(r.interval.high - r.condition.threshold)}, "
            f"smaller than the paper's ({f(r.paper_margin)})")


def evaluate(claim: Claim, values: Values, profile: str, metric: str | None = None, *,
             paper: Values | None = None, gate: bool = False, scope: str | None = None,
             diverged: Mapping[str, tuple[int, ...]] | None = None) -> Verdict:
    """The verdict of ``claim`` on ``values`` (one table, one profile, one metric).

    ``paper``: the paper's values of the claim's rows, for each condition's paper margin (the
    minimum detectable effect is compared with it). ``gate``: apply the learning-signal gate
    (reduced-scale accuracies, see :func:`needs_control`). ``scope``: why the design of the runs
    at this profile does not allow the check (:func:`out_of_scope`); the verdict is then
    ``not applicable``, whatever the values. ``diverged``: row -> the seeds whose training diverged
    (:func:`diverged_seeds`); a claim that needs such a row is ``inconclusive``, naming them."""
    metric = metric or claim.metric
    diverged = {r: tuple(s) for r, s in (diverged or {}).items() if s}
    mapping = claim.rows_at.get(profile, {})
    raw = conditions(claim)
    conds = [_mapped(c, mapping) for c in raw]
    noise = pooled_std({r: v for r, v in values.items() if r != CONTROL_ROW}, log=conds[0].log)
    results = [evaluate_condition(cond, values, _paper_margin(c, paper), frozenset(diverged))
               for c, cond in zip(raw, conds)]
    used = list(dict.fromkeys(r for c in conds for r in c.terms))
    evidence = [values[r] for r in used if r in values]
    outcomes = [r.outcome for r in results]
    signal = None
    if scope is not None:
        return Verdict(claim, profile, metric, "not applicable", scope, results, evidence, dict(mapping), noise)
    hit = {r: diverged[r] for r in used if r in diverged}
    if hit:
        return Verdict(claim, profile, metric, "inconclusive", _diverged_reason(hit, results, metric), results,
                       evidence, dict(mapping), noise)
    if "not run" in outcomes:
        missing = sorted({m for r in results for m in r.missing})
        verdict, reason = "not run", f"no result for {', '.join(missing)} at this scale"
        return Verdict(claim, profile, metric, verdict, reason, results, evidence, dict(mapping), noise)
    if gate:
        if CONTROL_ROW not in values:
            return Verdict(claim, profile, metric, "no learning signal",
                           f"no `{CONTROL_ROW}` control ran at this profile, so nothing shows that training "
                           "learned anything; no ordering is read from the rows", results, evidence,
                           dict(mapping), noise, signal=[])
        signal = learning_signal(used, values)
        evidence = evidence + [values[CONTROL_ROW]]
        weak = [s for s in signal if not s.beats]
        if weak:
            said = "; ".join(f"{s.row} {s.trained:.2f} vs random init {s.control:.2f}: {_fmt_ci(s.interval)}"
                             for s in weak)
            return Verdict(claim, profile, metric, "no learning signal",
                           f"not every trained row beats the `{CONTROL_ROW}` control beyond the noise ({said}); "
                           "no ordering is read from the rows", results, evidence, dict(mapping), noise, signal)
    premise = None
    if claim.premise is not None:
        premise = evaluate_condition(_mapped(_contrast_condition(claim.premise), mapping), values)
        if premise.outcome != "holds":
            i = premise.interval
            said = _fmt_ci(i) if i is not None else "no result"
            return Verdict(claim, profile, metric, "not applicable",
                           f"its premise does not hold at this scale: {premise.condition.text} reads {said} "
                           f"({i.method if i is not None else 'not run'}), so the check would test something the "
                           "paper does not claim", results, evidence, dict(mapping), noise, signal, premise)
    verdict, reason = _read(results, outcomes)
    differ = [r for r in results if r.robust_differs]
    if differ:
        reason += ("; the per-contrast interval reads otherwise (" + "; ".join(
            f"{r.condition.text}: {r.robust_outcome}, {_fmt_ci(r.robust)}, {r.robust.method}" for r in differ) + ")")
    return Verdict(claim, profile, metric, verdict, reason, results, evidence, dict(mapping), noise, signal, premise)


def _diverged_reason(hit: dict[str, tuple[int, ...]], results: list[ConditionResult], metric: str) -> str:
    """Why a check that needs rows whose training diverged reads nothing: a diverged run has no
    value, and the runs that trained alone are a selected sample (the seeds where the row was
    lucky); what they show is given, as a description, not as a verdict."""
    said = "; ".join(f"{row} at seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
                     for row, seeds in hit.items())
    shown = []
    for r in results:
        if r.interval is not None:
            method = f" ({r.interval.method})" if r.interval.se is not None else ""
            shown.append(f"{r.condition.text}: {_fmt_ci(r.interval)}{method}")
        elif r.missing:
            shown.append(f"{r.condition.text}: no trained run of {', '.join(r.missing)}")
    return (f"training diverged ({said}): a diverged run has no {metric}, and the seeds that trained alone are "
            "a selected sample, so no verdict is read" + (f"; the runs that trained show {'; '.join(shown)}"
                                                        if shown else ""))


def _read(results: list[ConditionResult], outcomes: list[str]) -> tuple[str, str]:
    """The verdict and its reason from the conditions' outcomes."""
    if "fails" in outcomes:
        failed = [r.condition.text for r in results if r.outcome == "fails"]
        verdict, reason = "not supported", f"fails beyond the 95% interval: {'; '.join(failed)}"
    elif "inconclusive" in outcomes:
        if any(r.band is None for r in results):
            verdict, reason = "inconclusive", "one seed per row: run-to-run noise not measured (run at least 2 seeds)"
        else:
            inside = [r for r in results if r.outcome == "inconclusive"]
            reason = f"the 95% interval straddles the threshold: {'; '.join(r.condition.text for r in inside)}"
            short = [r for r in inside if r.undecidable]
            if short:
                reason += ("; cannot decide at this number of seeds: the minimum detectable effect exceeds the "
                           "paper's margin (" + "; ".join(f"{r.condition.text}: {r.interval.mde:.3g} > "
                                                           f"{abs(r.paper_margin):.3g}" for r in short) + ")")
            smaller = [r for r in inside if r.below_papers_effect]
            if smaller:
                reason += ("; the effect here is smaller than the paper's: its 95% interval lies below the "
                           "paper's margin (" + "; ".join(_below(r) for r in smaller) + ")")
            verdict = "inconclusive"
    elif all(r.band == 0.0 for r in results):
        verdict, reason = "supported", "every condition holds (exact values: no noise band)"
    else:
        verdict, reason = "supported", "every condition clears its threshold by more than its 95% interval"
    return verdict, reason
