"""Untrained baselines printed beside a run's Dice: Otsu thresholding and the mean-mask prior."""

import numpy as np
import pytest
from skimage.filters import threshold_otsu

from kerasseg.errors import KerassegError
from kerasseg.training.baselines import otsu_dice, otsu_masks, prior_dice


def np_dice(p, t):
    p, t = p.astype(bool), t.astype(bool)
    den = p.sum() + t.sum()
    return 1.0 if den == 0 else 2.0 * (p & t).sum() / den


def test_otsu_dice_matches_reference(rng):
    masks = np.zeros((5, 20, 20), np.uint8)
    for i in range(5):
        masks[i, 3 + i:14 + i, 4:12 + i] = 1
    images = masks * 2.0 + rng.normal(scale=0.8, size=masks.shape)
    images[4] *= 50.0  # intensity scale must not matter
    want = np.mean([np_dice(img > threshold_otsu(img), m) for img, m in zip(images, masks)])
    # the library's one Dice (kerasseg.training.metrics.dice_per_image) runs in float32
    assert otsu_dice(images, masks) == pytest.approx(want, rel=1e-6, abs=1e-7)
    assert 0.5 < want < 1.0
    # bright = mass: an inverted image scores low
    assert otsu_dice(-images, masks) < 0.5
    # a constant ROI gives an empty mask, no error
    assert not otsu_masks(np.ones((1, 6, 6))).any()


def test_prior_dice_matches_reference():
    train = np.zeros((4, 10, 10), np.uint8)
    train[:3, 2:8, 2:8] = 1          # 3 of 4 cover the centre -> prior = centre square
    train[3, 0:3, 0:3] = 1
    train[:2, 8:10, 2:8] = 1         # 2 of 4: mean exactly 0.5, in the prior (threshold >= 0.5)
    test = np.zeros((2, 10, 10), np.uint8)
    test[0, 2:10, 2:8] = 1
    test[1, 5:10, 5:10] = 1
    mean = train.astype(np.float64).mean(0)
    prior = mean >= 0.5
    assert prior.sum() == 8 * 6 and (mean == 0.5).sum() == 2 * 6
    want = (np_dice(prior, test[0]) + np_dice(prior, test[1])) / 2
    # the library's one Dice (kerasseg.training.metrics.dice_per_image) runs in float32
    assert prior_dice(train, test) == pytest.approx(want, rel=1e-6, abs=1e-7)
    assert np_dice(prior, test[0]) == 1.0
    # the old strict threshold (> 0.5) would leave the 0.5 rows out and score differently
    strict = mean > 0.5
    want_strict = (np_dice(strict, test[0]) + np_dice(strict, test[1])) / 2
    assert abs(want_strict - want) > 1e-3


def test_baseline_shape_errors():
    with pytest.raises(KerassegError, match="same shape"):
        otsu_dice(np.zeros((2, 5, 5)), np.zeros((2, 5, 6)))
    with pytest.raises(KerassegError, match="prior baseline"):
        prior_dice(np.zeros((2, 5, 5)), np.zeros((2, 6, 6)))
