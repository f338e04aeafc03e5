"""Claims as data and their verdicts, on hand-made run records.

The records are written the way a finished run writes them (``final.json`` in the run
directory the grid assigns), so the whole path collect -> values -> verdict is exercised.
"""

import json
import math

import pytest

from repro.results.claims import (Claim, Check, Contrast, evaluate, load_claims, measured_values, out_of_scope,
                                  paper_values, pooled_std,
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
    return evaluate(claim, measured_values(table, profile, collect(table, profile, root), metric), profile, metric,
                    scope=out_of_scope(claim, table, profile))


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

    # per-seed differences +3.0 and -1.5: the paired 95% interval straddles 0
    noisy = {**T1_BASE, "bn-syncbn": [90.5, 93.5], "bn-mbn": [93.5, 92.0]}
    write_runs(tmp_path / "c", "t01", "cpu", noisy)
    v = verdict_of("mbn-beats-syncbn-teacher", tmp_path / "c", "cpu")
    assert v.verdict == "inconclusive" and "straddles the threshold" in v.reason


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
           "bn-bn": [0.300, 0.302], "bn-mbn": [0.301, 0.300], "syncbn-mbn": [0.5, 0.52]}
    write_runs(tmp_path / "a", "t01", "cpu", spi, metric="sec_per_iter")
    slow = verdict_of("syncbn-slow", tmp_path / "a", "cpu")
    assert slow.verdict == "supported" and slow.results[0].shown == pytest.approx(0.61 / 0.301)
    assert verdict_of("mbn-as-fast-as-bn", tmp_path / "a", "cpu").verdict == "supported"
    write_runs(tmp_path / "b", "t01", "cpu", {**spi, "bn-mbn": [0.45, 0.46]}, metric="sec_per_iter")
    v = verdict_of("mbn-as-fast-as-bn", tmp_path / "b", "cpu")
    assert v.verdict == "not supported" and v.results[0].shown == pytest.approx(0.455 / 0.301)


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
    bad.write_text("claims:\n  - {id: x, where: w, quote: q, table: t01, metric: sec_per_iter,\n"
                   "     applies_when: {key: train.world, at_least: 2, why: w},\n"
                   "     check: {kind: ratio, num: syncbn-syncbn, den: bn-bn, at_least: 1.5}}\n")
    with pytest.raises(ConfigError, match=r"applies_when.key: 'train.world' is not a key"):
        load_claims(bad)


def test_tolerance_shifts_every_threshold():
    claim = Claim("x", "w", "q", "t01", "top1", Check("contrast", all=[Contrast({"bn-mbn": 1.0, "bn-bn": -1.0}, 1.0)]),
                  tolerance=0.25)
    assert [c.threshold for c in conditions(claim)] == [0.75]
    ratio = Claim("y", "w", "q", "t01", "sec_per_iter", Check("ratio", num="bn-mbn", den="bn-bn", at_most=1.0),
                  tolerance=0.1)
    (cond,) = conditions(ratio)
    assert cond.log and cond.threshold == pytest.approx(-math.log(1.1))


# --------------------------------------------------------------------------- paired statistics (SPEC §8)

T_975_2, T_80_2 = 4.302653, 1.060660  # Student's t quantiles at 2 degrees of freedom, from tables


def test_paired_interval_and_mde_match_hand_computed_values():
    from repro.results.claims import RowValues, paired_interval

    # per-seed differences 1, 2, 3: mean 2, s 1, SE 1/sqrt(3), 2 degrees of freedom
    vals = {"a": RowValues("a", (11.0, 22.0, 33.0), "measured", (0, 1, 2)),
            "b": RowValues("b", (10.0, 20.0, 30.0), "measured", (0, 1, 2))}
    ci = paired_interval({"a": 1.0, "b": -1.0}, vals)
    assert ci.paired and ci.n == 3 and ci.df == 2
    assert ci.estimate == pytest.approx(2.0) and ci.se == pytest.approx(1 / math.sqrt(3))
    assert ci.half_width == pytest.approx(T_975_2 / math.sqrt(3), rel=1e-6)  # 2.4841
    assert (ci.low, ci.high) == pytest.approx((2 - 2.484138, 2 + 2.484138), rel=1e-6)
    # the exact minimum detectable effect (noncentral t): 5.6535 SE at 2 degrees of freedom, above
    # the usual approximation (t_0.975 + t_0.8) = 5.3633 SE
    assert ci.mde == pytest.approx(5.6535 / math.sqrt(3), rel=1e-4)
    assert ci.mde > (T_975_2 + T_80_2) / math.sqrt(3)
    # seeds matched by number, not by position
    shuffled = {**vals, "b": RowValues("b", (30.0, 10.0, 20.0), "measured", (2, 0, 1))}
    assert paired_interval({"a": 1.0, "b": -1.0}, shuffled).estimate == pytest.approx(2.0)
    # rows that do not share seeds are not paired
    other = {**vals, "b": RowValues("b", (10.0, 20.0, 30.0), "measured", (3, 4, 5))}
    assert paired_interval({"a": 1.0, "b": -1.0}, other) is None


def test_welch_interval_matches_hand_computed_values():
    from repro.results.claims import RowValues, contrast_interval, welch_interval

    # a: s^2 = 2 over 2 seeds; b: s^2 = 12 over 3 seeds -> SE^2 = 1 + 4 = 5, df = 25 / (1/1 + 16/2) = 25/9
    vals = {"a": RowValues("a", (1.0, 3.0), "measured", (0, 1)), "b": RowValues("b", (0.0, 0.0, 6.0), "measured", (0, 1, 2))}
    ci = welch_interval({"a": 1.0, "b": -1.0}, vals)
    assert not ci.paired and ci.estimate == pytest.approx(0.0)
    assert ci.se == pytest.approx(math.sqrt(5)) and ci.df == pytest.approx(25 / 9)
    assert contrast_interval({"a": 1.0, "b": -1.0}, vals).paired is False  # seed sets differ: Welch
    # an exact (paper) row adds no noise; a measured row with one seed leaves it unmeasured
    exact = {"a": vals["a"], "p": RowValues("p", (1.0,), "paper")}
    assert welch_interval({"a": 1.0, "p": -1.0}, exact).se == pytest.approx(1.0)
    single = {"a": vals["a"], "c": RowValues("c", (5.0,), "measured", (0,))}
    assert welch_interval({"a": 1.0, "c": -1.0}, single).se is None


def test_a_paired_effect_is_clear_where_the_unpaired_band_is_not(tmp_path):
    # seeds 10 points apart, every row moving with its seed; bn-mbn is bn-syncbn + 1.0 (+0.02)
    rows = {r: [85.0, 95.0] for r in T1_BASE} | {"bn-syncbn": [85.0, 95.0], "bn-mbn": [86.0, 96.02]}
    write_runs(tmp_path, "t01", "cpu", rows)
    v = verdict_of("mbn-beats-syncbn-teacher", tmp_path, "cpu")
    (r,) = v.results
    # the per-contrast (paired) interval, beside the table's, says the same
    assert r.robust.paired and r.robust.n == 2 and r.robust.rows is None
    assert r.value == pytest.approx(1.01) and r.robust.half_width == pytest.approx(12.706205 * 0.01, rel=1e-5)
    assert r.interval.rows == 6 and r.outcome == r.robust_outcome == "holds"
    assert v.verdict == "supported"
    # the same rows without the pairing: Welch over two spreads of about 7 points says nothing
    from repro.results.claims import welch_interval

    unpaired = welch_interval(r.condition.terms, {e.row: e for e in v.evidence})
    assert unpaired.half_width > 30 and unpaired.low < 0 < unpaired.high
    # and neither did the pooled band of before (2 pooled SEs of a difference of 2-seed means)
    assert 2 * v.noise * math.sqrt(1 / 2 + 1 / 2) > r.robust.estimate


def test_mde_above_the_papers_margin_says_the_seeds_cannot_decide(tmp_path):
    claim = next(c for c in load_claims().claims if c.id == "mbn-beats-syncbn-teacher")
    table = load_table("t01")
    # only the claim's two rows: the table's interval is then the paired one (2 rows x 2 seeds, df 1)
    write_runs(tmp_path, "t01", "cpu", {"bn-syncbn": [90.5, 93.5], "bn-mbn": [93.5, 92.0]})
    values = measured_values(table, "cpu", collect(table, "cpu", tmp_path), "top1")
    v = evaluate(claim, values, "cpu", paper=paper_values(table, "top1"))
    (r,) = v.results
    assert r.paper_margin == pytest.approx(88.18 - 87.80)
    # differences +3.0, -1.5: s = 3.18, SE = 2.25; exact MDE at 1 degree of freedom 16.334 SE = 36.7
    assert r.interval.se == pytest.approx(4.5 / math.sqrt(2) / math.sqrt(2)) and r.interval.df == 1
    assert r.interval.mde == pytest.approx(16.334 * 4.5 / math.sqrt(2) / math.sqrt(2), rel=1e-4)
    assert v.verdict == "inconclusive" and "cannot decide at this number of seeds" in v.reason


def test_an_interval_below_the_papers_effect_says_the_effect_is_smaller_here(tmp_path):
    """Inconclusive on the sign, yet decided on the size: the paper's 3.90-point drop without Synced BN
    lies above the whole interval, so the effect here is smaller than the paper's."""
    claim = next(c for c in load_claims().claims if c.id == "syncbn-critical")
    table = load_table("t01")
    paper = paper_values(table, "top1")

    def result(syncbn, bn):
        root = tmp_path / f"{syncbn[0]}-{bn[0]}"
        write_runs(root, "t01", "cpu", {"syncbn-syncbn": syncbn, "bn-bn": bn})  # 2 rows: table = paired
        v = evaluate(claim, measured_values(table, "cpu", collect(table, "cpu", root), "top1"), "cpu", paper=paper)
        return v, v.results[0]

    # differences +0.5, -0.3: mean 0.1, s = 0.566, 95% interval 0.1 +- 12.71 * 0.4 = [-4.98, 5.18]
    v, r = result([90.5, 91.7], [90.0, 92.0])
    assert r.outcome == "inconclusive" and r.interval.high > r.paper_margin
    assert not r.below_papers_effect and "smaller than the paper's" not in v.reason
    # differences +0.5, +0.3: [-0.87, 1.67], all of it below 3.90
    v, r = result([90.5, 92.3], [90.0, 92.0])
    assert r.paper_margin == pytest.approx(88.06 - 84.16)
    assert r.outcome == "inconclusive" and r.interval.high == pytest.approx(0.4 + 12.706205 * 0.1, rel=1e-5)
    assert r.below_papers_effect
    assert v.verdict == "inconclusive" and "smaller than the paper's (3.9)" in v.reason
    # a condition that holds can still fall short of the paper's size: differences +1.0, +1.1, [0.41, 1.69]
    v, r = result([91.0, 93.1], [90.0, 92.0])
    assert r.outcome == "holds" and r.below_papers_effect and v.verdict == "supported"
    # without the paper's values there is nothing to compare with
    v = evaluate(claim, measured_values(table, "cpu", collect(table, "cpu", tmp_path / "91.0-90.0"), "top1"), "cpu")
    assert not v.results[0].below_papers_effect


# --------------------------------------------------------------------------- the learning-signal gate


def gated_verdict(claim_id, root, profile="cpu", metric=None):
    from repro.results.claims import needs_control

    claim = next(c for c in load_claims().claims if c.id == claim_id)
    table = load_table(claim.table)
    metric = metric or claim.metric
    values = measured_values(table, profile, collect(table, profile, root), metric)
    return evaluate(claim, values, profile, metric, paper=paper_values(table, claim.metric),
                    gate=needs_control(table, profile, metric))


def test_a_trained_row_below_random_init_gives_no_learning_signal(tmp_path):
    # T1_BASE would support the claim, but the never-trained encoder scores above bn-syncbn
    write_runs(tmp_path, "t01", "cpu", {**T1_BASE, "random-init": [93.0, 93.1]})
    v = gated_verdict("mbn-beats-syncbn-teacher", tmp_path)
    assert v.verdict == "no learning signal"
    assert "bn-syncbn 92.10 vs random init 93.05" in v.reason
    by_row = {s.row: s for s in v.signal}
    assert by_row["bn-mbn"].beats and not by_row["bn-syncbn"].beats
    assert by_row["bn-syncbn"].interval.estimate == pytest.approx(-0.95)
    # the same rows with a control below every trained row: the verdict is read
    write_runs(tmp_path / "b", "t01", "cpu", {**T1_BASE, "random-init": [80.0, 80.3]})
    v = gated_verdict("mbn-beats-syncbn-teacher", tmp_path / "b")
    assert v.verdict == "supported" and all(s.beats for s in v.signal)


def test_without_a_control_a_reduced_scale_accuracy_claim_gets_no_verdict(tmp_path):
    write_runs(tmp_path, "t01", "cpu", T1_BASE)
    v = gated_verdict("mbn-beats-syncbn-teacher", tmp_path)
    assert v.verdict == "no learning signal" and "no `random-init` control ran" in v.reason and v.signal == []
    # seconds per iteration need no control; neither does the paper scale
    assert gated_verdict("syncbn-slow", tmp_path, metric="sec_per_iter").signal is None
    from repro.results.claims import needs_control

    assert not needs_control(load_table("t01"), "paper", "top1")
    assert needs_control(load_table("t01"), "cpu", "knn_top1")


def test_the_random_init_control_runs_at_the_cpu_evidence_profiles_and_the_default_table1():
    for name in ("t01", "t04", "t06"):
        table = load_table(name)
        # the default `make table1` (t01 at local) shows its control too (issue 27)
        with_control = ("cpu", "cpu-mnist", "cpu-8x4") + (("local",) if name == "t01" else ())
        evidence = {p for p in table.profiles if p in with_control}
        for profile in table.profiles:
            rows = {r.row for r in expand(table, profile)}
            assert ("random-init" in rows) == (profile in evidence), (name, profile)
        for profile in evidence:  # one control per seed, paired with the trained rows
            ctl = [r for r in expand(table, profile) if r.row == "random-init"]
            assert [r.seed for r in ctl] == table.profiles[profile].seeds
        ctl = [r for r in expand(table, "cpu") if r.row == "random-init"]
        assert all(r.config.train.max_steps == 0 for r in ctl)
        assert next(r for r in table.rows if r.id == "random-init").paper == {}


# --------------------------------------------------------------------------- the table's residual (issue 27)


def test_the_primary_interval_uses_the_whole_table_s_residual_variance(tmp_path):
    """Rows x seeds, seeds as blocks: checked against an independent least-squares fit."""
    import numpy as np

    from repro.results.claims import RowValues, mde_in_se, table_interval

    data = {"a": (90.0, 91.5, 89.0, 92.0), "b": (88.0, 90.5, 87.5, 89.0), "c": (91.0, 91.0, 90.0, 93.5),
            "random-init": (80.0, 70.0, 75.0, 72.0)}  # the control stays out of the residual
    values = {r: RowValues(r, v, "measured", (0, 1, 2, 3)) for r, v in data.items()}
    ci = table_interval({"a": 1.0, "b": -1.0}, values)
    y = np.array([v for r in "abc" for v in data[r]])
    design = np.array([[float(i == k) for k in range(3)] + [float(j == s) for s in range(1, 4)]
                       for i in range(3) for j in range(4)])
    residual = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
    sigma2 = residual @ residual / ((3 - 1) * (4 - 1))
    assert (ci.df, ci.rows, ci.n) == (6, 3, 4)
    assert ci.estimate == pytest.approx(np.mean(data["a"]) - np.mean(data["b"]))
    assert ci.se == pytest.approx(math.sqrt(sigma2 * 2 / 4))
    assert ci.mde == pytest.approx(mde_in_se(6) * ci.se)
    assert "table residual (3 rows x 4 seeds, df 6)" == ci.method
    # weights that do not sum to 0 (seed effects would not cancel), or an exact row: no table interval
    assert table_interval({"a": 1.0}, values) is None
    assert table_interval({"a": 1.0, "p": -1.0}, {**values, "p": RowValues("p", (88.0,), "paper")}) is None


def test_a_verdict_that_the_per_contrast_interval_reads_otherwise_says_so(tmp_path):
    """The contrast's own rows agree to 0.1 point seed after seed, the table's other rows move by
    several points: the paired interval is narrow and fails the claim, the table's is wide and
    inconclusive. The report shows the table's, and says the paired one differs."""
    rows = {"syncbn-syncbn": [93.0, 90.0, 95.0], "bn-bn": [89.0, 91.0, 87.0],
            "bn-syncbn": [90.0, 88.9, 91.1], "syncbn-bn": [90.1, 89.0, 91.2],
            "bn-mbn": [94.0, 90.0, 92.0], "syncbn-mbn": [91.0, 94.0, 90.0]}
    write_runs(tmp_path, "t01", "cpu-mnist", rows)
    v = verdict_of("stable-teacher-essential", tmp_path, "cpu-mnist")
    (r,) = v.results
    assert r.interval.rows == 6 and r.outcome == "inconclusive"
    assert r.robust.paired and r.robust_outcome == "fails"
    assert v.verdict == "inconclusive" and "the per-contrast interval reads otherwise" in v.reason
    assert "fails" in v.reason and "paired over 3 seeds" in v.reason


def test_a_check_whose_premise_does_not_hold_is_not_applicable(tmp_path):
    """With no gap between BN/BN and Synced BN/Synced BN, "one stable side closes half the gap"
    would read "Synced BN on one side beats both", which the paper never claims."""
    rows = {**T1_BASE, "syncbn-syncbn": [89.1, 89.2], "bn-bn": [89.0, 89.3], "syncbn-bn": [88.0, 88.2]}
    write_runs(tmp_path, "t01", "cpu", rows)
    v = verdict_of("one-stable-side-suffices", tmp_path, "cpu")
    assert v.verdict == "not applicable"
    assert "premise does not hold" in v.reason and "syncbn-syncbn − 1·bn-bn ≥ 0" in v.reason
    assert v.premise is not None and v.premise.outcome != "holds"
    # with the gap there, the same check is read (here: one side falls short of half of it)
    write_runs(tmp_path / "gap", "t01", "cpu", {**T1_BASE, "syncbn-bn": [89.5, 89.7]})
    v = verdict_of("one-stable-side-suffices", tmp_path / "gap", "cpu")
    assert v.verdict == "not supported" and v.premise.outcome == "holds"


def test_a_speed_claim_about_communication_is_not_applicable_in_one_process(tmp_path):
    """Synced BN (and shuffling BN) cost communication between processes. Where every device of
    a run is emulated in one process (cpu-8x4, paper-1x64) there is none, so "Synced BN is slower"
    reads `not applicable`, with the reason, never `not supported`; with 2 processes (cpu) the
    same times are read and fail."""
    spi = {"syncbn-syncbn": [0.300, 0.302, 0.301], "bn-bn": [0.301, 0.300, 0.302]}
    for profile in ("cpu-8x4", "paper-1x64", "cpu"):
        write_runs(tmp_path / profile, "t01", profile, spi, metric="sec_per_iter")
    for profile in ("cpu-8x4", "paper-1x64"):
        v = verdict_of("syncbn-slow", tmp_path / profile, profile)
        assert v.verdict == "not applicable"
        assert "communication between processes" in v.reason
        assert "train.world_size is bn-bn 1, syncbn-syncbn 1 at this profile" in v.reason
    assert verdict_of("syncbn-slow", tmp_path / "cpu", "cpu").verdict == "not supported"
    # Momentum BN's speed needs no communication to be read: it is checked in one process too.
    assert verdict_of("mbn-as-fast-as-bn", tmp_path / "cpu-8x4", "cpu-8x4").verdict == "not run"
    claim = next(c for c in load_claims().claims if c.id == "moco-mbn-faster")
    assert out_of_scope(claim, load_table("t03"), "local") is None  # 2 processes


def test_a_paper_protocol_on_emulated_devices_is_read_at_paper_scale(tmp_path):
    """Table 1's paper-1x64 runs the paper's protocol and BN statistics on one GPU: no random-init
    control gates its verdicts, and its table draws the difference to the paper."""
    from repro.results.claims import needs_control
    from repro.results.collect import render

    table = load_table("t01")
    assert table.is_paper_scale("paper") and table.is_paper_scale("paper-1x64") and table.is_paper_scale("paper-8x8")
    assert not table.is_paper_scale("cpu-8x4")
    assert not needs_control(table, "paper-1x64", "top1") and needs_control(table, "cpu-8x4", "top1")
    write_runs(tmp_path, "t01", "paper-1x64", {r: [v + 0.5] for r, v in
                                               {"syncbn-syncbn": 88.06, "bn-syncbn": 87.80, "syncbn-bn": 87.12,
                                                "bn-bn": 84.16, "bn-mbn": 88.18, "syncbn-mbn": 88.25}.items()})
    v = verdict_of("syncbn-critical", tmp_path, "paper-1x64")
    assert v.verdict == "inconclusive" and v.signal is None  # one seed, and no gate
    import pandas as pd

    paths = render(load_table("t01"), "paper-1x64", tmp_path, tmp_path / "out")
    assert "Δ Top-1 (%)" in paths["md"].read_text()
    deltas = pd.read_csv(paths["csv"]).set_index("row")["top1_delta"]
    assert deltas["bn-bn"] == pytest.approx(0.5) and deltas["syncbn-syncbn"] == pytest.approx(0.5)
