"""Claims as data and their verdicts, on hand-made run records.

The records are written the way a finished run writes them (``final.json`` in the run
directory the grid assigns), so the whole path collect -> values -> verdict is exercised.
"""

import json
import math

import pytest

from repro.results.claims import (Claim, Check, Contrast, evaluate, load_claims, measured_values, paper_values, pooled_std,
                          conditions)
from repro.config import ConfigError
from repro.grid import expand, load_table
from repro.results.collect import collect


def write_runs(root, table, profile, values, metric="top1", extra=None):
    """values: row -> list of per-seed values (missing rows / seeds stay unfinished)."""
    for run in expand(load_table(table), profile):
        vals = values.get(run.row)
        if vals is None or run.seed >= len(vals):
            continue
        d = run.run_dir(root)
        d.mkdir(parents=True, exist_ok=True)
        rec = {"top1": 90.0, "knn_top1": 80.0, "sec_per_iter": 0.3, **(extra or {}), metric: vals[run.seed]}
        (d / "final.json").write_text(json.dumps(rec))


def verdict_of(claim_id, root, profile, metric=None):
    claim = next(c for c in load_claims().claims if c.id == claim_id)
    table = load_table(claim.table)
    metric = metric or claim.metric
    return evaluate(claim, measured_values(table, profile, collect(table, profile, root), metric), profile, metric)


T1_BASE = {"syncbn-syncbn": [93.0, 93.2], "bn-syncbn": [92.0, 92.2], "syncbn-bn": [91.0, 91.2],
           "bn-bn": [89.0, 89.2], "bn-mbn": [94.0, 94.2], "syncbn-mbn": [94.1, 94.3]}


def test_every_claim_holds_on_the_papers_own_numbers():
    """The transcription check: each check, applied to the paper's values, says what the paper says."""
    claims = load_claims().claims
    assert len(claims) >= 20
    for claim in claims:
        v = evaluate(claim, paper_values(load_table(claim.table), claim.metric), "paper numbers")
        assert v.verdict == "supported", (claim.id, v.reason)


def test_the_claims_cover_the_papers_sections_and_tables():
    claims = load_claims().claims
    assert sum("Section 3.1, observation" in c.where for c in claims) == 4
    assert {c.table for c in claims} >= {"t01", "t02", "t03", "t04", "t06", "t07", "t09", "t10", "t11", "t12"}
    assert {c.check.kind for c in claims} == {"margin", "contrast", "ratio", "trend"}
    assert all(c.quote and c.where for c in claims)


def test_margin_supported_not_supported_and_inconclusive(tmp_path):
    write_runs(tmp_path / "a", "t01", "cpu", T1_BASE)
    v = verdict_of("mbn-beats-syncbn-teacher", tmp_path / "a", "cpu")
    assert v.verdict == "supported"
    assert [r.row for r in v.evidence] == ["bn-mbn", "bn-syncbn"] and v.evidence[0].n == 2

    reversed_ = {**T1_BASE, "bn-mbn": [90.0, 90.2]}
    write_runs(tmp_path / "b", "t01", "cpu", reversed_)
    v = verdict_of("mbn-beats-syncbn-teacher", tmp_path / "b", "cpu")
    assert v.verdict == "not supported" and "bn-mbn − bn-syncbn" in v.reason

    # a 0.5-point margin with seeds 3 points apart: inside the noise
    noisy = {r: [x[0] - 1.5, x[0] + 1.5] for r, x in T1_BASE.items()} | {"bn-mbn": [91.0, 94.0]}
    write_runs(tmp_path / "c", "t01", "cpu", noisy)
    v = verdict_of("mbn-beats-syncbn-teacher", tmp_path / "c", "cpu")
    assert v.verdict == "inconclusive" and "inside the run-to-run noise" in v.reason


def test_noise_band_is_two_standard_errors_of_the_contrast(tmp_path):
    # every row: seeds m - 1, m + 1 -> pooled std sqrt(2); band of a difference of two
    # 2-seed means = 2 * sqrt(2) * sqrt(1/2 + 1/2) = 2.83
    rows = {r: [x[0] - 1, x[0] + 1] for r, x in T1_BASE.items()}
    write_runs(tmp_path / "a", "t01", "cpu", {**rows, "bn-mbn": [92.0 + 2.8 - 1, 92.0 + 2.8 + 1],
                                              "bn-syncbn": [91.0, 93.0]})
    v = verdict_of("mbn-beats-syncbn-teacher", tmp_path / "a", "cpu")
    assert v.noise == pytest.approx(math.sqrt(2))
    assert v.results[0].band == pytest.approx(2 * math.sqrt(2))
    assert v.results[0].value == pytest.approx(2.8)
    assert v.verdict == "inconclusive"  # 2.8 < 2.83
    write_runs(tmp_path / "b", "t01", "cpu", {**rows, "bn-mbn": [92.0 + 2.9 - 1, 92.0 + 2.9 + 1],
                                              "bn-syncbn": [91.0, 93.0]})
    assert verdict_of("mbn-beats-syncbn-teacher", tmp_path / "b", "cpu").verdict == "supported"  # 2.9 > 2.83


def test_one_seed_is_inconclusive_whatever_the_margin(tmp_path):
    write_runs(tmp_path, "t01", "local", {r: x[:1] for r, x in T1_BASE.items()})
    v = verdict_of("mbn-beats-syncbn-teacher", tmp_path, "local")
    assert v.verdict == "inconclusive" and "noise not measured" in v.reason
    assert v.results[0].band is None and v.results[0].value == pytest.approx(2.0)


def test_not_run_names_the_missing_rows(tmp_path):
    write_runs(tmp_path, "t01", "cpu", {r: x for r, x in T1_BASE.items() if r != "bn-syncbn"})
    v = verdict_of("mbn-beats-syncbn-teacher", tmp_path, "cpu")
    assert v.verdict == "not run" and "bn-syncbn" in v.reason
    # and nothing at all: not run
    empty = tmp_path / "empty"
    empty.mkdir()
    assert verdict_of("dynamic-alpha-beats-fixed", empty, "cpu").verdict == "not run"


def test_ratio_checks_on_seconds_per_iteration(tmp_path):
    spi = {"syncbn-syncbn": [0.60, 0.62], "bn-syncbn": [0.4, 0.41], "syncbn-bn": [0.5, 0.51],
           "bn-bn": [0.30, 0.31], "bn-mbn": [0.31, 0.30], "syncbn-mbn": [0.5, 0.52]}
    write_runs(tmp_path / "a", "t01", "cpu", spi, metric="sec_per_iter")
    slow = verdict_of("syncbn-slow", tmp_path / "a", "cpu")
    assert slow.verdict == "supported" and slow.results[0].shown == pytest.approx(0.61 / 0.305)
    assert verdict_of("mbn-as-fast-as-bn", tmp_path / "a", "cpu").verdict == "supported"
    write_runs(tmp_path / "b", "t01", "cpu", {**spi, "bn-mbn": [0.45, 0.46]}, metric="sec_per_iter")
    v = verdict_of("mbn-as-fast-as-bn", tmp_path / "b", "cpu")
    assert v.verdict == "not supported" and v.results[0].shown == pytest.approx(0.455 / 0.305)


def test_contrast_closing_half_the_gap(tmp_path):
    # BN/BN 89, Synced 93: one stable side must reach 91 (half the gap)
    write_runs(tmp_path / "a", "t01", "cpu", {**T1_BASE, "syncbn-bn": [89.5, 89.7]})
    v = verdict_of("one-stable-side-suffices", tmp_path / "a", "cpu")
    assert v.verdict == "not supported"
    assert [r.outcome for r in v.results] == ["holds", "fails"]


def test_trend_with_substituted_rows_at_cpu_scale(tmp_path):
    t04 = {"byol-16": [80.0, 80.2], "byol-32": [84.0, 84.2], "byol-64": [86.0, 86.2], "byol-128": [88.0, 88.2],
           "ours-16": [87.0, 87.2], "ours-32": [88.0, 88.2], "ours-64": [88.4, 88.6], "ours-128": [88.6, 88.8]}
    write_runs(tmp_path / "a", "t04", "cpu", t04)
    v = verdict_of("byol-needs-large-bn", tmp_path / "a", "cpu")
    assert v.verdict == "supported"
    assert v.substitutions == {"byol-64": "byol-16", "byol-128": "byol-32", "byol-256": "byol-64",
                               "byol-512": "byol-128"}
    assert [r.condition.text for r in v.results] == ["byol-32 − byol-16 ≥ -0.5", "byol-64 − byol-32 ≥ -0.5",
                                                     "byol-128 − byol-64 ≥ -0.5", "byol-128 − byol-16 ≥ 0"]
    assert verdict_of("byol-deteriorates-ours-robust", tmp_path / "a", "cpu").verdict == "supported"
    assert verdict_of("small-bn-on-par-with-byol-large", tmp_path / "a", "cpu").verdict == "supported"
    # a dip of 3 points in the middle is a reversal, beyond tolerance and noise
    write_runs(tmp_path / "b", "t04", "cpu", {**t04, "byol-64": [81.0, 81.2]})
    assert verdict_of("byol-needs-large-bn", tmp_path / "b", "cpu").verdict == "not supported"


def test_literature_rows_count_only_at_paper_scale(tmp_path):
    claim = next(c for c in load_claims().claims if c.id == "lvis-beats-supervised")
    table = load_table("t11")
    runs = collect(table, "paper", tmp_path)
    at_paper = measured_values(table, "paper", runs, "mask_ap")
    assert at_paper["supervised"].source == "paper" and "ours-300" not in at_paper
    assert evaluate(claim, at_paper, "paper").verdict == "not run"
    assert "supervised" not in measured_values(table, "local", collect(table, "local", tmp_path), "mask_ap")


def test_pooled_std_ignores_single_seed_and_paper_rows():
    from repro.results.claims import RowValues

    vals = {"a": RowValues("a", (1.0, 3.0), "measured"), "b": RowValues("b", (5.0,), "measured"),
            "c": RowValues("c", (9.0,), "paper")}
    assert pooled_std(vals) == pytest.approx(math.sqrt(2))
    assert pooled_std({"b": vals["b"], "c": vals["c"]}) is None


def test_claims_file_errors_name_the_claim_and_the_fix(tmp_path):
    bad = tmp_path / "claims.yaml"
    bad.write_text("claims:\n  - {id: x, where: w, quote: q, table: t01, metric: top1,\n"
                   "     check: {kind: margin, better: bn-mbn, than: [no-such-row]}}\n")
    with pytest.raises(ConfigError, match=r"claims\[0\] \(x\): row 'no-such-row' is not in table t01"):
        load_claims(bad)
    bad.write_text("claims:\n  - {id: x, where: w, quote: q, table: t01, metric: top1,\n"
                   "     check: {kind: ratio, num: bn-mbn, den: bn-bn}}\n")
    with pytest.raises(ConfigError, match="exactly one of at_most, at_least"):
        load_claims(bad)
    bad.write_text("claims:\n  - {id: x, where: w, quote: q, table: t01, metric: top9,\n"
                   "     check: {kind: margin, better: bn-mbn, than: [bn-bn]}}\n")
    with pytest.raises(ConfigError, match="'top9' is not a column of t01"):
        load_claims(bad)


def test_tolerance_shifts_every_threshold():
    claim = Claim("x", "w", "q", "t01", "top1", Check("contrast", all=[Contrast({"bn-mbn": 1.0, "bn-bn": -1.0}, 1.0)]),
                  tolerance=0.25)
    assert [c.threshold for c in conditions(claim)] == [0.75]
    ratio = Claim("y", "w", "q", "t01", "sec_per_iter", Check("ratio", num="bn-mbn", den="bn-bn", at_most=1.0),
                  tolerance=0.1)
    (cond,) = conditions(ratio)
    assert cond.log and cond.threshold == pytest.approx(-math.log(1.1))
