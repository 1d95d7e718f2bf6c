"""Statistics against statsmodels / hand-computed exact values."""

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

from kerasseg.evaluation import stats as S


@pytest.mark.parametrize("b,c", [(0, 0), (3, 0), (5, 9), (10, 10), (11, 10), (1, 30), (120, 95), (400, 350)])
def test_mcnemar_exact_matches_statsmodels(b, c):
    ref = sm_mcnemar(np.array([[50, b], [c, 70]]), exact=True).pvalue
    assert S.mcnemar_exact_from_counts(b, c)["pvalue"] == pytest.approx(ref, rel=1e-9, abs=1e-15)


def test_mcnemar_from_pixels_counts_discordant_pairs(rng):
    gt = rng.random((6, 12, 12)) < 0.4
    a = gt ^ (rng.random(gt.shape) < 0.10)
    b = gt ^ (rng.random(gt.shape) < 0.20)
    res = S.mcnemar_exact(a, b, gt)
    ok_a, ok_b = (a == gt).ravel(), (b == gt).ravel()
    table = np.array([[np.sum(ok_a & ok_b), np.sum(ok_a & ~ok_b)],
                      [np.sum(~ok_a & ok_b), np.sum(~ok_a & ~ok_b)]])
    assert (res["b"], res["c"]) == (table[0, 1], table[1, 0])
    assert res["pvalue"] == pytest.approx(sm_mcnemar(table, exact=True).pvalue, rel=1e-9)
    # one-sided exact tail by hand (binomial pmf sum), doubled
    n, k = res["b"] + res["c"], min(res["b"], res["c"])
    tail = sum(sps.binom.pmf(i, n, 0.5) for i in range(k + 1))
    assert res["pvalue"] == pytest.approx(min(1.0, 2 * tail), rel=1e-9)


def test_wilcoxon_exact_small_case_and_scipy(rng):
    a = np.array([0.9, 0.8, 0.85, 0.7, 0.95])
    b = a - np.array([0.01, 0.02, 0.03, 0.04, 0.05])
    # all 5 differences positive: exact two-sided p = 2 / 2**5
    assert S.wilcoxon_dice(a, b)["pvalue"] == pytest.approx(2 / 32)
    x, y = rng.random(30), rng.random(30)
    assert S.wilcoxon_dice(x, y)["pvalue"] == pytest.approx(sps.wilcoxon(x, y).pvalue)
    assert S.wilcoxon_dice(x, x)["pvalue"] == 1.0


def test_bootstrap_ci_contains_truth_and_is_deterministic(rng):
    n = 200
    base = rng.uniform(0.6, 0.95, n)
    a = base + 0.03 + rng.normal(0, 0.02, n)
    b = base
    r1 = S.bootstrap_ci(a, b, seed=7)
    r2 = S.bootstrap_ci(a, b, seed=7)
    r3 = S.bootstrap_ci(a, b, seed=8)
    assert r1 == r2
    assert r1 != r3
    assert r1["ci_low"] < 0.03 < r1["ci_high"]
    assert r1["ci_low"] <= r1["mean_diff"] <= r1["ci_high"]
    # the CI width matches the normal approximation 2 * 1.96 * sd / sqrt(n) within 15 %
    d = a - b
    width = 2 * 1.959964 * d.std(ddof=1) / np.sqrt(n)
    assert (r1["ci_high"] - r1["ci_low"]) == pytest.approx(width, rel=0.15)
