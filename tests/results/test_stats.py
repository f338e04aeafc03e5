"""repro/results/stats.py: the intervals' arithmetic on hand-computed values (float64)."""

import math

import numpy as np
import pytest

from repro.results import stats

T_975_2 = 4.302653  # Student's t, 0.975 quantile at 2 degrees of freedom, from tables


def test_sample_sd_and_pooled_sd():
    assert stats.sample_sd([1.0, 3.0]) == pytest.approx(math.sqrt(2))
    assert stats.sample_sd([2.0, 4.0, 9.0]) == pytest.approx(np.std([2.0, 4.0, 9.0], ddof=1), rel=1e-15)
    # (1, 3): SS 2 on 1 df; (0, 0, 6): SS 24 on 2 df; (5,): no spread, skipped -> sqrt(26 / 3)
    assert stats.pooled_sd([[1.0, 3.0], [0.0, 0.0, 6.0], [5.0]]) == pytest.approx(math.sqrt(26 / 3))
    assert stats.pooled_sd([[5.0], []]) is None


def test_paired_interval_and_its_exact_mde():
    ci = stats.paired_interval([1.0, 2.0, 3.0])  # mean 2, s 1, SE 1/sqrt(3), 2 df
    assert (ci.estimate, ci.df, ci.n, ci.paired) == (2.0, 2, 3, True)
    assert ci.se == pytest.approx(1 / math.sqrt(3))
    assert ci.half_width == pytest.approx(T_975_2 / math.sqrt(3), rel=1e-6)
    assert ci.bounds() == pytest.approx((ci.low, ci.high))
    assert ci.mde == pytest.approx(5.6535 / math.sqrt(3), rel=1e-4)  # noncentral t, not 5.3633
    assert stats.mde_in_se(2) == pytest.approx(5.6535, rel=1e-4)
    assert ci.method == "paired over 3 seeds"


def test_welch_interval():
    # weights 1, -1; s^2 = 2 over 2 values and 12 over 3: SE^2 = 1 + 4, df = 25 / (1/1 + 16/2)
    ci = stats.welch_interval(0.0, [(1.0, [1.0, 3.0]), (-1.0, [0.0, 0.0, 6.0])])
    assert ci.se == pytest.approx(math.sqrt(5)) and ci.df == pytest.approx(25 / 9) and not ci.paired
    assert ci.method == "unpaired (Welch, df 2.8)"
    assert stats.welch_interval(1.0, [(1.0, [1.0, 3.0]), (-1.0, [5.0])]).se is None  # one value: not measured
    exact = stats.welch_interval(1.0, [])
    assert (exact.se, exact.half_width, exact.method) == (0.0, 0.0, "exact")


def test_two_way_interval_matches_least_squares():
    data = {"a": (90.0, 91.5, 89.0, 92.0), "b": (88.0, 90.5, 87.5, 89.0), "c": (91.0, 91.0, 90.0, 93.5)}
    x = {r: dict(enumerate(v)) for r, v in data.items()}
    ci = stats.two_way_interval(x, [0, 1, 2, 3], {"a": 1.0, "b": -1.0})
    y = np.array([v for r in "abc" for v in data[r]])
    design = np.array([[float(i == k) for k in range(3)] + [float(j == s) for s in range(1, 4)]
                       for i in range(3) for j in range(4)])
    residual = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
    assert (ci.df, ci.rows, ci.n) == (6, 3, 4)
    assert ci.se == pytest.approx(math.sqrt(residual @ residual / 6 * 2 / 4))
    assert ci.estimate == pytest.approx(np.mean(data["a"]) - np.mean(data["b"]))


def test_mean_interval_and_tost():
    assert stats.mean_interval([]) == (None, None, None)
    assert stats.mean_interval([0.5]) == (0.5, None, None)
    m, low, high = stats.mean_interval([1.0, 2.0, 3.0])
    assert m == 2.0 and (low, high) == pytest.approx((2 - T_975_2 / math.sqrt(3), 2 + T_975_2 / math.sqrt(3)), rel=1e-6)
    _, low90, high90 = stats.mean_interval([1.0, 2.0, 3.0], 0.90)
    assert low < low90 < high90 < high
    assert stats.tost_equivalent(-0.9, 0.9, 1.0) and not stats.tost_equivalent(-0.5, 1.0, 1.0)
