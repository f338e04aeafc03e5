"""Two profiles of one table, paired seed by seed (repro.results.compare), on hand-made records
with known answers: the precision check that decides whether bf16 may be adopted."""

import dataclasses
import json
import math

import pytest

from repro.cli import main
from repro.grid import expand, load_table
from repro.results.compare import EQUIVALENCE_MARGIN, compare, compare_profiles, judge

BASE, OTHER = "cpu-mnist", "cpu-mnist-bf16"
# fp32 values of every Table 1 row at 3 seeds: a seed-to-seed spread of about 2 points
FP32 = {"syncbn-syncbn": [93.0, 90.0, 91.5], "bn-syncbn": [92.0, 89.5, 93.0], "syncbn-bn": [91.0, 88.0, 90.0],
        "bn-bn": [92.4, 89.4, 91.0], "bn-mbn": [91.7, 93.9, 90.2], "syncbn-mbn": [92.9, 90.1, 94.0],
        "random-init": [83.3, 83.5, 83.1]}


def write(root, profile, values, sec=0.16):
    """Finished-run records of t01 at ``profile``: values[row][seed] is the linear top-1."""
    for run in expand(load_table("t01"), profile):
        if run.row not in values or values[run.row][run.seed] is None:
            continue
        d = run.run_dir(root)
        d.mkdir(parents=True, exist_ok=True)
        top1 = values[run.row][run.seed]
        (d / "final.json").write_text(json.dumps({
            "top1": top1, "knn_top1": top1 - 8, "sec_per_iter": sec * (1 + 0.01 * run.seed),
            "git": {"commit": "0123456789abcdef", "dirty": False}}))
    return root


def bf16(shift, jitter=(0.1, -0.2, 0.15)):
    return {r: [v + shift + jitter[s] * (1 if r == "bn-bn" else -1) for s, v in enumerate(FP32[r])]
            for r in ("bn-bn", "bn-mbn")}


def by_metric(results):
    return {c.metric: c for c in results}


def test_an_option_that_moves_nothing_beyond_round_off_is_equivalent(tmp_path):
    write(tmp_path, BASE, FP32)
    write(tmp_path, OTHER, bf16(0.0), sec=0.112)
    res = by_metric(compare(load_table("t01"), BASE, OTHER, tmp_path))
    top1 = res["top1"]
    assert top1.n == 6 and {(p.row, p.seed) for p in top1.pairs} == {(r, s) for r in ("bn-bn", "bn-mbn")
                                                                     for s in range(3)}
    # the noise is the fp32 run-to-run std pooled over the 6 trained rows (not the control's)
    ss = sum(sum((x - sum(v) / 3) ** 2 for x in v) for r, v in FP32.items() if r != "random-init")
    assert top1.noise == pytest.approx(math.sqrt(ss / 12))
    assert top1.estimate == pytest.approx(0.0, abs=1e-9)
    assert -EQUIVALENCE_MARGIN < top1.low90 < 0 < top1.high90 < EQUIVALENCE_MARGIN
    assert top1.low < top1.low90 and top1.high90 < top1.high  # the TOST interval is the 90% one
    assert top1.outcome == "equivalent" and res["knn_top1"].outcome == "equivalent"
    # the two rows moved alike: no interaction
    (inter,) = top1.interactions
    assert (inter.row, inter.against, inter.n) == ("bn-mbn", "bn-bn", 3) and inter.outcome == "equivalent"
    # seconds per step: the geometric mean of the per-pair ratios, no verdict
    sec = res["sec_per_iter"]
    assert math.exp(sec.estimate) == pytest.approx(0.7) and sec.outcome is None


def test_a_shift_larger_than_its_noise_is_changed(tmp_path):
    write(tmp_path, BASE, FP32)
    write(tmp_path, OTHER, bf16(-3.0))
    top1 = by_metric(compare(load_table("t01"), BASE, OTHER, tmp_path))["top1"]
    assert top1.estimate == pytest.approx(-3.0) and top1.high < 0
    assert top1.outcome == "changed"


def test_pairs_that_scatter_as_much_as_the_seeds_decide_nothing(tmp_path):
    write(tmp_path, BASE, FP32)
    write(tmp_path, OTHER, bf16(0.0, jitter=(2.5, -3.0, 1.0)))
    top1 = by_metric(compare(load_table("t01"), BASE, OTHER, tmp_path))["top1"]
    assert top1.low < 0 < top1.high and top1.high - top1.low > 2 * top1.noise
    assert top1.outcome == "inconclusive"


def test_only_runs_finished_at_both_profiles_are_paired(tmp_path):
    base = {r: list(v) for r, v in FP32.items()}
    base["bn-mbn"][2] = None  # not finished at fp32: its bf16 twin has nothing to pair with
    write(tmp_path, BASE, base)
    other = bf16(0.0)
    other["bn-bn"][1] = None  # not finished at bf16
    write(tmp_path, OTHER, other)
    top1 = by_metric(compare(load_table("t01"), BASE, OTHER, tmp_path))["top1"]
    assert sorted((p.row, p.seed) for p in top1.pairs) == [("bn-bn", 0), ("bn-bn", 2), ("bn-mbn", 0), ("bn-mbn", 1)]


def test_one_pair_is_inconclusive_and_the_margin_is_fixed_in_advance():
    assert judge(None, None, None, None) == "inconclusive"
    assert judge(-0.2, 0.2, -0.1, 0.1) == "equivalent"
    assert judge(-2.5, 0.1, -2.0, -0.1) == "inconclusive"
    # a 90% interval of [-1.5, +1.5] was "unchanged within noise" when the noise (estimated from the
    # same runs) was 2.0; against the margin fixed in advance it is not shown equivalent
    assert judge(-1.9, 1.9, -1.5, 1.5) == "inconclusive"
    assert EQUIVALENCE_MARGIN == 1.0


def test_the_command_writes_the_comparison_and_names_bad_profiles(tmp_path, capsys):
    write(tmp_path, BASE, FP32)
    write(tmp_path, OTHER, bf16(0.0), sec=0.112)
    out = tmp_path / "check.md"
    assert main(["compare", "t01", "--profile", BASE, "--against", OTHER, "--runs", str(tmp_path),
                 "--out", str(out)]) == 0
    text = out.read_text()
    assert text == compare_profiles(load_table("t01"), BASE, OTHER, tmp_path)
    assert "| linear probe top-1 | 6 | +0.00 |" in text and "| equivalent |" in text
    assert "| seconds per step | 6 | 0.70x |" in text
    assert main(["compare", "t01", "--profile", BASE, "--against", "cpu-mnist-fp8", "--runs", str(tmp_path)]) == 2
    assert "unknown profile 'cpu-mnist-fp8' for table t01" in capsys.readouterr().err
    assert main(["compare", "t01", "--profile", BASE, "--against", BASE, "--runs", str(tmp_path)]) == 2
    assert "give two profiles" in capsys.readouterr().err


def test_the_precision_profile_differs_from_cpu_mnist_by_the_option_alone():
    """What makes the pairs pairs: same rows, seeds and config but for precision and layout."""
    t = load_table("t01")
    base = {(r.row, r.seed): r.config for r in expand(t, BASE)}
    runs = expand(t, OTHER)
    assert sorted((r.row, r.seed) for r in runs) == [(r, s) for r in ("bn-bn", "bn-mbn") for s in range(3)]
    for run in runs:
        train = run.config.train
        assert (train.precision, train.channels_last) == ("bf16", True)
        fp32 = dataclasses.replace(run.config, train=dataclasses.replace(train, precision="fp32", channels_last=False))
        assert fp32 == base[(run.row, run.seed)]


def test_before_any_pair_has_finished_the_comparison_says_so(tmp_path):
    write(tmp_path, BASE, FP32)
    text = compare_profiles(load_table("t01"), BASE, OTHER, tmp_path)
    assert text.rstrip().endswith("No (row, seed) has finished at both profiles yet.")
    assert "| linear probe top-1 | 0 | - | - | - | ±1 | 1.71 | inconclusive |" in text


def test_a_significant_shift_smaller_than_the_margin_still_counts_as_equivalent():
    assert judge(0.2, 0.6, 0.25, 0.55) == "equivalent"  # excludes 0, inside the margin
    assert judge(0.2, 2.6, 0.4, 2.3) == "changed"


def test_an_option_that_moves_the_rows_apart_is_caught_by_the_interaction(tmp_path):
    """bf16 lifts bn-bn by 2 points and lowers bn-mbn by 2 at every seed: the pooled shift is
    nil (and inconclusive), but the ordering of the two rows changes: the interaction says so."""
    write(tmp_path, BASE, FP32)
    moved = {r: [v + (2.0 if r == "bn-bn" else -2.0) + 0.1 * s for s, v in enumerate(FP32[r])]
             for r in ("bn-bn", "bn-mbn")}
    write(tmp_path, OTHER, moved)
    top1 = by_metric(compare(load_table("t01"), BASE, OTHER, tmp_path))["top1"]
    assert top1.estimate == pytest.approx(0.1) and top1.outcome == "inconclusive"
    (inter,) = top1.interactions
    assert inter.estimate == pytest.approx(-4.0) and inter.high < 0 and inter.outcome == "changed"
    assert "| bn-mbn − bn-bn | linear probe top-1 | 3 | -4.00 |" in compare_profiles(load_table("t01"), BASE, OTHER, tmp_path)


# ---------------------------------------------------------------- rows against their variants

VARIANTS = {"bn-mbn": "bn-mbn-biased", "syncbn-mbn": "syncbn-mbn-biased"}


def variant_values(effect_bn, effect_syncbn):
    """cpu-8x4 records of 4 seeds (of 6): each variant row is its base row plus an effect per seed."""
    base = {"bn-mbn": [90.5, 90.8, 90.6, 90.4], "syncbn-mbn": [90.3, 90.1, 91.5, 89.6],
            "bn-bn": [91.0, 89.8, 89.5, 91.4], "random-init": [83.3, 82.5, 83.2, 84.4]}
    values = dict(base)
    values["bn-mbn-biased"] = [v + e for v, e in zip(base["bn-mbn"], effect_bn)]
    values["syncbn-mbn-biased"] = [v + e for v, e in zip(base["syncbn-mbn"], effect_syncbn)]
    return {r: v + [None, None] for r, v in values.items()}


def test_a_setting_is_checked_between_rows_of_one_profile_paired_by_seed(tmp_path):
    """The biased variance lifts both Momentum BN rows by 2 points at every seed (up to a little
    jitter): changed, with no interaction; the pairs are named by their base rows."""
    from repro.results.compare import compare_rows, compare_variants

    write(tmp_path, "cpu-8x4", variant_values([2.0, 2.1, 1.9, 2.0], [2.1, 1.9, 2.0, 2.0]))
    top1 = by_metric(compare_rows(load_table("t01"), "cpu-8x4", VARIANTS, tmp_path))["top1"]
    assert top1.n == 8 and {p.row for p in top1.pairs} == {"bn-mbn", "syncbn-mbn"}
    assert top1.estimate == pytest.approx(2.0) and top1.low > 0 and top1.outcome == "changed"
    (inter,) = top1.interactions
    assert (inter.row, inter.against) == ("syncbn-mbn", "bn-mbn") and inter.outcome == "equivalent"
    text = compare_variants(load_table("t01"), "cpu-8x4", VARIANTS, tmp_path)
    assert text.startswith("# t01: model.variance: biased at profile `cpu-8x4`, paired by seed")
    assert "| linear probe top-1 | 8 | +2.00 |" in text and "| row | seed | metric | base row | variant |" in text


def test_a_setting_that_moves_two_rows_apart_is_caught_by_their_interaction(tmp_path):
    """+2 for one row, -2 for the other: the pooled shift is nil, the ordering changes."""
    from repro.results.compare import compare_rows

    write(tmp_path, "cpu-8x4", variant_values([2.0, 2.2, 1.8, 2.0], [-2.0, -1.9, -2.1, -2.0]))
    top1 = by_metric(compare_rows(load_table("t01"), "cpu-8x4", VARIANTS, tmp_path))["top1"]
    assert top1.estimate == pytest.approx(0.0, abs=1e-9) and top1.outcome != "equivalent"
    (inter,) = top1.interactions
    assert inter.estimate == pytest.approx(-4.0) and inter.outcome == "changed"


def test_the_variant_command_names_bad_rows_and_bad_pairs(tmp_path, capsys):
    write(tmp_path, "cpu-8x4", variant_values([0.1, -0.1, 0.0, 0.05], [0.0, 0.1, -0.1, 0.0]))
    out = tmp_path / "variance.md"
    assert main(["compare", "t01", "--profile", "cpu-8x4", "--variant", "bn-mbn:bn-mbn-biased",
                 "--variant", "syncbn-mbn:syncbn-mbn-biased", "--runs", str(tmp_path), "--out", str(out)]) == 0
    assert "| equivalent |" in out.read_text()
    assert main(["compare", "t01", "--profile", "cpu-8x4", "--variant", "bn-mbn", "--runs", str(tmp_path)]) == 2
    assert "--variant 'bn-mbn': expected ROW:VARIANT" in capsys.readouterr().err
    assert main(["compare", "t01", "--profile", "cpu-8x4", "--variant", "bn-mbn:no-such", "--runs", str(tmp_path)]) == 2
    assert "no row 'no-such' in the table" in capsys.readouterr().err
