"""Paired statistical tests between two segmentations of the same data.

- :func:`mcnemar_exact` -- McNemar's exact test on pixel-wise disagreements (as Zhu et
  al. report, but with the correct exact two-sided p-value: a binomial test of the
  discordant count ``b`` out of ``b + c`` with probability 1/2). Pixels of one image
  are not independent, so treat this p-value as optimistic.
- :func:`wilcoxon_dice` -- Wilcoxon signed-rank test on per-image Dice (images are the
  independent units).
- :func:`bootstrap_ci` -- paired bootstrap percentile CI of the mean per-image Dice
  difference, seeded and deterministic.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as sps

from kerasseg.errors import KerassegError


def discordant_counts(pred_a, pred_b, gt) -> tuple[int, int]:
    """``(b, c)``: pixels where only A is correct, and where only B is correct."""
    pred_a = np.asarray(pred_a).astype(bool)
    pred_b = np.asarray(pred_b).astype(bool)
    gt = np.asarray(gt).astype(bool)
    if not (pred_a.shape == pred_b.shape == gt.shape):
        raise KerassegError(
            f"shapes differ: A {pred_a.shape}, B {pred_b.shape}, ground truth {gt.shape}")
    ok_a = pred_a == gt
    ok_b = pred_b == gt
    return int(np.count_nonzero(ok_a & ~ok_b)), int(np.count_nonzero(~ok_a & ok_b))


def mcnemar_exact_from_counts(b: int, c: int) -> dict:
    """Exact two-sided McNemar p-value from the discordant counts ``b`` and ``c``."""
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise KerassegError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    p = 1.0 if n == 0 else float(sps.binomtest(b, n, 0.5, alternative="two-sided").pvalue)
    return {"b": b, "c": c, "n_discordant": n, "statistic": min(b, c), "pvalue": min(1.0, p)}


def mcnemar_exact(pred_a, pred_b, gt) -> dict:
    """McNemar's exact test on pixel correctness of two predictions of the same masks."""
    b, c = discordant_counts(pred_a, pred_b, gt)
    return mcnemar_exact_from_counts(b, c)


def _paired(a, b):
    a = np.asarray(a, np.float64).reshape(-1)
    b = np.asarray(b, np.float64).reshape(-1)
    if a.shape != b.shape:
        raise KerassegError(f"paired samples differ in length: {a.size} vs {b.size}")
    if a.size == 0:
        raise KerassegError("paired test needs at least one image")
    return a, b


def wilcoxon_dice(dice_a, dice_b) -> dict:
    """Two-sided Wilcoxon signed-rank test of per-image Dice A vs B.

    Zero differences are dropped (scipy's default ``zero_method="wilcox"``); when all
    differences are zero the p-value is 1 (no evidence of a difference).
    """
    a, b = _paired(dice_a, dice_b)
    d = a - b
    nz = int(np.count_nonzero(d))
    if nz == 0:
        return {"statistic": 0.0, "pvalue": 1.0, "n": int(a.size), "n_nonzero": 0}
    res = sps.wilcoxon(a, b, alternative="two-sided")
    return {"statistic": float(res.statistic), "pvalue": float(res.pvalue), "n": int(a.size),
            "n_nonzero": nz}


def bootstrap_ci(dice_a, dice_b, n_boot: int = 10000, level: float = 0.95, seed: int = 0) -> dict:
    """Paired bootstrap percentile CI of ``mean(dice_a - dice_b)`` (images resampled with replacement)."""
    a, b = _paired(dice_a, dice_b)
    if not 0 < level < 1:
        raise KerassegError(f"confidence level must be in (0, 1), got {level}")
    d = a - b
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(int(n_boot), d.size))
    means = d[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return {"mean_diff": float(d.mean()), "ci_low": float(lo), "ci_high": float(hi),
            "level": float(level), "n_boot": int(n_boot), "seed": int(seed)}


def paired_tests(pred_a, pred_b, gt, dice_a, dice_b, seed: int = 0, n_boot: int = 10000) -> dict:
    """All three tests of A vs B: ``{"mcnemar": ..., "wilcoxon": ..., "bootstrap": ...}``."""
    return {
        "mcnemar": mcnemar_exact(pred_a, pred_b, gt),
        "wilcoxon": wilcoxon_dice(dice_a, dice_b),
        "bootstrap": bootstrap_ci(dice_a, dice_b, n_boot=n_boot, seed=seed),
    }
