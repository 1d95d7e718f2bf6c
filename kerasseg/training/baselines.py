"""Reference scores printed beside a trained model's Dice: what no training achieves.

- :func:`otsu_dice`: per-ROI Otsu thresholding (``skimage.filters.threshold_otsu``), bright =
  mass (mammograms show dense tissue bright);
- :func:`prior_dice`: the mean training mask thresholded at 0.5 (a pure position prior: with
  tight ROI boxes the mass covers the centre of most ROIs).

Both return the mean per-image Dice (:func:`kerasseg.training.metrics.dice_per_image`).
"""

from __future__ import annotations

import numpy as np

from kerasseg.errors import KerassegError


def _mean_dice(preds, masks) -> float:
    from kerasseg.training.metrics import mean_dice

    return mean_dice(np.asarray(preds, bool), np.asarray(masks, bool))


def _check(images, masks):
    images, masks = np.asarray(images), np.asarray(masks)
    if images.ndim != 3 or images.shape != masks.shape or len(images) == 0:
        raise KerassegError(f"baselines need (N, H, W) images and masks of the same shape, "
                            f"got {images.shape} and {masks.shape}")
    return images, masks


def otsu_masks(images) -> np.ndarray:
    """``image > threshold_otsu(image)`` per ROI (a constant ROI gives an empty mask)."""
    from skimage.filters import threshold_otsu

    out = np.zeros(np.shape(images), bool)
    for i, img in enumerate(np.asarray(images, np.float64)):
        if np.ptp(img) > 0:
            out[i] = img > threshold_otsu(img)
    return out


def otsu_dice(images, masks) -> float:
    """Mean per-ROI Dice of Otsu thresholding against ``masks``."""
    images, masks = _check(images, masks)
    return _mean_dice(otsu_masks(images), masks)


def prior_mask(train_masks) -> np.ndarray:
    """The model-free prior: ``mean(train_masks) >= 0.5`` as a bool (H, W) mask."""
    from kerasseg.training.metrics import binarize

    train_masks = np.asarray(train_masks)
    if train_masks.ndim != 3 or len(train_masks) == 0:
        raise KerassegError(f"prior baseline: train masks must be (N, H, W) with N >= 1, got {train_masks.shape}")
    return binarize(train_masks.astype(np.float64).mean(0)).astype(bool)


def prior_dice(train_masks, masks) -> float:
    """Mean per-ROI Dice of ``mean(train_masks) >= 0.5`` against ``masks``."""
    train_masks = np.asarray(train_masks)
    masks = np.asarray(masks)
    if train_masks.ndim != 3 or masks.ndim != 3 or train_masks.shape[1:] != masks.shape[1:]:
        raise KerassegError(f"prior baseline: train masks {train_masks.shape} and masks "
                            f"{masks.shape} must be (N, H, W) of the same size")
    return _mean_dice([prior_mask(train_masks)] * len(masks), masks)
