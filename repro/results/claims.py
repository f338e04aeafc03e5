"""The paper's claims (``tables/claims.yaml``) checked against collected results.

Every check reduces to one or more *conditions*: a weighted sum of row means (a linear
contrast; for ratios, of log row means) that must reach a threshold. A condition's noise
band is twice the standard error of that contrast, with the run-to-run standard deviation
pooled over every row of the same table and profile that has at least two seeds:

    SE = s_pooled * sqrt(sum_i w_i^2 / n_i)        (rows with exact values contribute 0)

A condition holds when it clears its threshold by more than the band, fails when it misses
by more than the band, and is inconclusive in between, or when no row of its table has two
seeds (the noise is not measured). A claim is ``supported`` when all its conditions hold,
``not supported`` when any fails, ``inconclusive`` otherwise, and ``not run`` when a row it
needs has no result at that profile.

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

from ..config import ConfigError, from_dict, load_yaml
from ..grid import TABLES_DIR, Table, load_table

CLAIMS_FILE = TABLES_DIR / "claims.yaml"
VERDICTS = ("supported", "not supported", "inconclusive", "not run")
Z = 2.0  # the noise band is Z standard errors of the contrast
PAPER_SCALE = "paper"  # the profile whose verdicts speak at the paper's scale


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
        out = []
        for k in c.all:
            text = " ".join(f"{'+' if w >= 0 else '−'} {abs(w):g}·{r}" for r, w in k.terms.items()).lstrip("+ ")
            out.append(Condition(f"{text} ≥ {_num(k.at_least - tol)}", dict(k.terms), k.at_least - tol))
        return out
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


def claim_rows(claim: Claim) -> list[str]:
    seen: dict[str, None] = {}
    for cond in conditions(claim):
        seen.update(dict.fromkeys(cond.terms))
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
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / (self.n - 1))


Values = dict[str, RowValues]  # row id -> values


def paper_values(table: Table, metric: str) -> Values:
    """The paper's own numbers, as exact values (rows the paper leaves blank are absent)."""
    return {r.id: RowValues(r.id, (float(r.paper[metric]),), "paper")
            for r in table.rows if r.paper.get(metric) is not None}


def measured_values(table: Table, profile: str, runs: pd.DataFrame, metric: str) -> Values:
    """Per-seed values of finished runs (``results.collect`` frame); at paper scale, literature
    rows (``run: false``) carry their paper value."""
    out: Values = {}
    done = runs[runs["status"] == "done"] if len(runs) else runs
    for row in table.rows:
        if not row.run:
            if profile == PAPER_SCALE and row.paper.get(metric) is not None:
                out[row.id] = RowValues(row.id, (float(row.paper[metric]),), "paper")
            continue
        if metric not in done or not len(done):
            continue
        vals = pd.to_numeric(done.loc[done["row"] == row.id, metric], errors="coerce").dropna()
        if len(vals):
            out[row.id] = RowValues(row.id, tuple(float(v) for v in vals), "measured")
    return out


def pooled_std(values: Values, log: bool = False) -> float | None:
    """Run-to-run standard deviation pooled over rows with at least two seeds (None if none)."""
    ss, dof = 0.0, 0
    for rv in values.values():
        if rv.source != "measured" or rv.n < 2:
            continue
        xs = [math.log(v) for v in rv.values] if log else list(rv.values)
        m = sum(xs) / len(xs)
        ss += sum((x - m) ** 2 for x in xs)
        dof += len(xs) - 1
    return math.sqrt(ss / dof) if dof else None


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class ConditionResult:
    condition: Condition
    outcome: Literal["holds", "fails", "inconclusive", "not run"]
    value: float | None = None  # the contrast (log contrast for ratios)
    band: float | None = None  # Z standard errors; None when the noise is not measured
    missing: tuple[str, ...] = ()
    shown: float | None = None  # what a reader compares with the threshold: the contrast, or the ratio


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


def _mapped(cond: Condition, mapping: dict[str, str]) -> Condition:
    terms: dict[str, float] = {}
    for row, w in cond.terms.items():
        terms[mapping.get(row, row)] = terms.get(mapping.get(row, row), 0.0) + w
    text = re.sub(r"[A-Za-z0-9_.\-]+", lambda m: mapping.get(m.group(0), m.group(0)), cond.text)
    ratio = tuple(mapping.get(r, r) for r in cond.ratio) if cond.ratio else None
    return Condition(text, terms, cond.threshold, cond.log, ratio)


def evaluate_condition(cond: Condition, values: Values, noise: float | None) -> ConditionResult:
    missing = tuple(r for r in cond.terms if r not in values)
    if missing:
        return ConditionResult(cond, "not run", missing=missing)
    rvs = [values[r] for r in cond.terms]
    if cond.log and any(v <= 0 for rv in rvs for v in rv.values):
        return ConditionResult(cond, "not run", missing=tuple(rv.row for rv in rvs))
    mean = (lambda rv: math.log(rv.mean)) if cond.log else (lambda rv: rv.mean)
    value = sum(w * mean(values[r]) for r, w in cond.terms.items())
    margin = value - cond.threshold
    measured = [(w, values[r]) for r, w in cond.terms.items() if values[r].source == "measured"]
    if not measured:
        band = 0.0
    elif noise is None:
        return ConditionResult(cond, "inconclusive", value, None, shown=_shown(cond, values, value))
    else:
        band = Z * noise * math.sqrt(sum(w * w / rv.n for w, rv in measured))
    if band == 0.0:
        outcome = "holds" if margin >= -1e-9 else "fails"
    else:
        outcome = "holds" if margin > band else "fails" if margin < -band else "inconclusive"
    return ConditionResult(cond, outcome, value, band, shown=_shown(cond, values, value))


def _shown(cond: Condition, values: Values, value: float) -> float:
    if cond.ratio:
        num, den = cond.ratio
        return values[num].mean / values[den].mean
    return value


def evaluate(claim: Claim, values: Values, profile: str, metric: str | None = None) -> Verdict:
    """The verdict of ``claim`` on ``values`` (one table, one profile, one metric)."""
    metric = metric or claim.metric
    mapping = claim.rows_at.get(profile, {})
    conds = [_mapped(c, mapping) for c in conditions(claim)]
    noise = pooled_std(values, log=conds[0].log)  # one metric per claim: all conditions share the scale
    results = [evaluate_condition(cond, values, noise) for cond in conds]
    used = list(dict.fromkeys(r for c in conds for r in c.terms))
    evidence = [values[r] for r in used if r in values]
    outcomes = [r.outcome for r in results]
    if "not run" in outcomes:
        missing = sorted({m for r in results for m in r.missing})
        verdict, reason = "not run", f"no result for {', '.join(missing)} at this scale"
    elif "fails" in outcomes:
        failed = [r.condition.text for r in results if r.outcome == "fails"]
        verdict, reason = "not supported", f"fails beyond the noise band: {'; '.join(failed)}"
    elif "inconclusive" in outcomes:
        if any(r.band is None for r in results):
            verdict, reason = "inconclusive", "one seed per row: run-to-run noise not measured (run at least 2 seeds)"
        else:
            inside = [r.condition.text for r in results if r.outcome == "inconclusive"]
            verdict, reason = "inconclusive", f"inside the run-to-run noise: {'; '.join(inside)}"
    elif all(r.band == 0.0 for r in results):
        verdict, reason = "supported", "every condition holds (exact values: no noise band)"
    else:
        verdict, reason = "supported", "every condition clears its threshold by more than the noise band"
    return Verdict(claim, profile, metric, verdict, reason, results, evidence, dict(mapping), noise)
