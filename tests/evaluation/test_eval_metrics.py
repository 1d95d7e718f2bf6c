"""Metrics against hand-computed values and brute-force references."""

import math

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from kerasseg.errors import KerassegError
from kerasseg.evaluation import metrics as M


def square(size, r0, c0, side):
    m = np.zeros((size, size), np.uint8)
    m[r0:r0 + side, c0:c0 + side] = 1
    return m


def test_dice_iou_sens_prec_hand_values():
    gt = square(20, 2, 2, 10)           # 100 px
    pred = square(20, 2, 7, 10)         # 100 px, overlap 10x5 = 50
    assert M.dice(pred, gt) == pytest.approx(2 * 50 / 200)
    assert M.iou(pred, gt) == pytest.approx(50 / 150)
    assert M.sensitivity(pred, gt) == pytest.approx(0.5)
    assert M.precision(pred, gt) == pytest.approx(0.5)
    small = square(20, 2, 2, 5)         # 25 px inside gt
    assert M.sensitivity(small, gt) == pytest.approx(0.25)
    assert M.precision(small, gt) == pytest.approx(1.0)
    assert M.dice(small, gt) == pytest.approx(50 / 125)
    assert M.dice(gt, gt) == 1.0


def test_empty_cases_defined_no_nan():
    e = np.zeros((12, 16), np.uint8)
    m = np.zeros((12, 16), np.uint8)
    m[3:6, 3:6] = 1
    for f in (M.dice, M.iou, M.sensitivity, M.precision):
        assert f(e, e) == 1.0
        assert f(m, e) == 0.0
        assert f(e, m) == 0.0
    assert M.hd95(e, e) == 0.0
    assert M.hd95(m, e) == pytest.approx(math.hypot(12, 16))
    assert M.hd95(e, m, spacing=0.5) == pytest.approx(0.5 * math.hypot(12, 16))
    s, per = M.summarize(np.stack([e, m]), np.stack([e, e]))
    for k, v in s.items():
        if isinstance(v, float):
            assert np.isfinite(v), k
    assert per["dice"].tolist() == [1.0, 0.0]


def test_pooled_vs_per_image():
    gt = np.stack([square(10, 0, 0, 4), square(10, 0, 0, 2)])   # 16 + 4 px
    pred = np.stack([square(10, 0, 0, 4), np.zeros((10, 10), np.uint8)])
    # per-image: (1 + 0) / 2; pooled: 2*16 / (2*16 + 4)
    _, per = M.summarize(pred, gt)
    assert per["dice"].mean() == pytest.approx(0.5)
    assert M.pooled_dice(pred, gt) == pytest.approx(32 / 36)


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("axis", [0, 1])
def test_hausdorff_of_shifted_squares_is_shift(k, axis):
    a = square(30, 8, 8, 10)
    b = np.roll(a, k, axis=axis)
    assert M.hausdorff(a, b, percentile=100) == pytest.approx(k)
    assert M.hausdorff(a, b, percentile=100, spacing=0.07) == pytest.approx(0.07 * k)


def _brute_boundary_points(mask):
    """Boundary pixels by explicit 4-neighbour check (padding = background)."""
    m = np.pad(mask.astype(bool), 1)
    pts = []
    for r in range(1, m.shape[0] - 1):
        for c in range(1, m.shape[1] - 1):
            if m[r, c] and not (m[r - 1, c] and m[r + 1, c] and m[r, c - 1] and m[r, c + 1]):
                pts.append((r - 1, c - 1))
    return np.array(pts, np.float64)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hd95_against_brute_force_point_sets(seed):
    from skimage.draw import ellipse

    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(2):
        m = np.zeros((40, 40), np.uint8)
        rr, cc = ellipse(rng.uniform(12, 28), rng.uniform(12, 28), rng.uniform(4, 12),
                         rng.uniform(4, 12), shape=m.shape, rotation=rng.uniform(0, np.pi))
        m[rr, cc] = 1
        m[rng.integers(0, 40, 5), rng.integers(0, 40, 5)] = 1   # speckles
        masks.append(m)
    pa, pb = _brute_boundary_points(masks[0]), _brute_boundary_points(masks[1])
    d = cdist(pa, pb)
    ab, ba = d.min(axis=1), d.min(axis=0)
    ref95 = np.percentile(np.concatenate([ab, ba]), 95)
    assert M.hd95(masks[0], masks[1]) == pytest.approx(ref95, abs=1e-9)
    assert M.hausdorff(masks[0], masks[1], 100) == pytest.approx(max(ab.max(), ba.max()))
    assert M.hd95(masks[0], masks[1], spacing=0.2) == pytest.approx(0.2 * ref95, abs=1e-9)


@pytest.mark.parametrize("w", [1, 2, 3, 4, 5])
def test_trimap_band_counts_on_square(w):
    s = 12
    gt = square(40, 14, 14, s)
    band = M.trimap_bands(gt)[w]
    inside = s * s - (s - 2 * w) ** 2
    corner = sum(1 for i in range(1, w + 1) for j in range(1, w + 1) if i * i + j * j <= w * w)
    outside = 4 * s * w + 4 * corner
    assert int((band & gt.astype(bool)).sum()) == inside
    assert int((band & ~gt.astype(bool)).sum()) == outside


def test_trimap_accuracy_hand_value():
    gt = square(40, 14, 14, 12)
    pred = gt.copy()
    pred[14, 14:26] = 0                  # 12 pixels of the top row wrong: all in band 1
    acc = M.trimap_accuracy(pred[None], gt[None])
    n1 = 12 * 12 - 10 * 10 + 4 * 12
    assert acc[1] == pytest.approx((n1 - 12) / n1)
    assert M.trimap_accuracy(gt[None], gt[None]) == {w: 1.0 for w in range(1, 6)}
    # empty ground truth has no band: pooled accuracy is over the other images only
    acc2 = M.trimap_accuracy(np.stack([pred, np.ones_like(gt)]), np.stack([gt, 0 * gt]))
    assert acc2[1] == pytest.approx(acc[1])
    assert M.trimap_accuracy(gt[None] * 0, gt[None] * 0)[3] is None


def test_shape_mismatch_is_clear_error():
    with pytest.raises(KerassegError, match="shape"):
        M.dice(np.zeros((4, 4)), np.zeros((4, 5)))
