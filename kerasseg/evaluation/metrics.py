"""Segmentation metrics on binary masks (NumPy / SciPy, float64).

Conventions (documented in docs/evaluation.md and metrics.json):

- Masks are 2-D arrays; any non-zero value is foreground (mass).
- **Per-image** metrics are computed on one ROI at a time and then averaged
  (``dice_mean`` etc.). The **pooled** Dice sums TP/FP/FN over every pixel of a
  set before dividing (``dice_pooled``; this is what the original code of Zhu et
  al. reports).
- Ratios that are 0/0 (e.g. Dice when both masks are empty) are **1 when the
  prediction equals the ground truth (both empty) and 0 otherwise** -- never NaN.
- Hausdorff distances are measured between mask *boundaries* (foreground pixels
  with a 4-neighbour in the background, the image edge counting as background).
  Both empty -> 0; exactly one empty -> the image diagonal ``sqrt(H^2 + W^2)``
  (times the pixel spacing in mm).
- Trimap band of width ``w``: pixels whose Euclidean distance to the other side
  of the ground-truth boundary is at most ``w`` pixels, i.e. the ``w`` pixel rings
  just inside the mass plus the ``w`` rings just outside it (2w pixels thick).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from kerasseg.errors import KerassegError

TRIMAP_WIDTHS = (1, 2, 3, 4, 5)
_FOUR = ndimage.generate_binary_structure(2, 1)


def _pair(pred, gt):
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise KerassegError(f"prediction shape {pred.shape} differs from ground-truth shape {gt.shape}")
    if pred.ndim != 2:
        raise KerassegError(f"masks must be 2-D (H, W), got shape {pred.shape}")
    return pred.astype(bool), gt.astype(bool)


def _ratio(num, den, both_empty):
    if den == 0:
        return 1.0 if both_empty else 0.0
    return float(num) / float(den)


def confusion(pred, gt):
    """(tp, fp, fn, tn) pixel counts of one image (ints)."""
    p, g = _pair(pred, gt)
    tp = int(np.count_nonzero(p & g))
    fp = int(np.count_nonzero(p & ~g))
    fn = int(np.count_nonzero(~p & g))
    tn = int(p.size - tp - fp - fn)
    return tp, fp, fn, tn


def dice(pred, gt) -> float:
    """Dice = 2TP / (2TP + FP + FN); 1 when both masks are empty (the one definition,
    :func:`kerasseg.training.metrics.dice_per_image`, on one image)."""
    from kerasseg.training.metrics import dice_per_image

    p, g = _pair(pred, gt)
    return float(np.asarray(dice_per_image(p[None], g[None]))[0])


def iou(pred, gt) -> float:
    """Intersection over union (Jaccard) = TP / (TP + FP + FN); 1 when both are empty."""
    tp, fp, fn, _ = confusion(pred, gt)
    return _ratio(tp, tp + fp + fn, both_empty=(tp + fp + fn == 0))


def sensitivity(pred, gt) -> float:
    """TP / (TP + FN); 1 when both are empty, 0 when only the ground truth is empty."""
    tp, fp, fn, _ = confusion(pred, gt)
    return _ratio(tp, tp + fn, both_empty=(tp + fp + fn == 0))


def precision(pred, gt) -> float:
    """TP / (TP + FP); 1 when both are empty, 0 when only the prediction is empty."""
    tp, fp, fn, _ = confusion(pred, gt)
    return _ratio(tp, tp + fp, both_empty=(tp + fp + fn == 0))


def pooled_dice(preds, gts) -> float:
    """Dice over all pixels of a set of images (sums TP, FP, FN first); 1 if everything is empty."""
    preds = np.asarray(preds).astype(bool)
    gts = np.asarray(gts).astype(bool)
    if preds.shape != gts.shape:
        raise KerassegError(f"prediction shape {preds.shape} differs from ground-truth shape {gts.shape}")
    tp = int(np.count_nonzero(preds & gts))
    fp = int(np.count_nonzero(preds & ~gts))
    fn = int(np.count_nonzero(~preds & gts))
    return _ratio(2 * tp, 2 * tp + fp + fn, both_empty=(tp + fp + fn == 0))


def boundary(mask) -> np.ndarray:
    """Boundary pixels: foreground pixels with a 4-neighbour outside the mask (image edge = outside)."""
    m = np.asarray(mask).astype(bool)
    eroded = ndimage.binary_erosion(m, structure=_FOUR, border_value=0)
    return m & ~eroded


def surface_distances(pred, gt, spacing=1.0):
    """Distances from every boundary pixel of ``pred`` to the boundary of ``gt``, and back.

    Returns ``(d_pred_to_gt, d_gt_to_pred)`` as float64 arrays, in pixels times ``spacing``.
    Both masks must be non-empty.
    """
    p, g = _pair(pred, gt)
    bp, bg = boundary(p), boundary(g)
    if not bp.any() or not bg.any():
        raise ValueError("surface_distances needs two non-empty masks")
    dt_g = ndimage.distance_transform_edt(~bg, sampling=(spacing, spacing))
    dt_p = ndimage.distance_transform_edt(~bp, sampling=(spacing, spacing))
    return dt_g[bp].astype(np.float64), dt_p[bg].astype(np.float64)


def hausdorff(pred, gt, percentile=95.0, spacing=1.0) -> float:
    """Symmetric percentile Hausdorff distance between the mask boundaries.

    The ``percentile`` (95 -> HD95, 100 -> classic Hausdorff) of the union of both
    directed boundary-distance sets. Both empty -> 0; one empty -> image diagonal.
    ``spacing`` is the pixel size (1 -> pixels, mm/pixel -> mm).
    """
    p, g = _pair(pred, gt)
    has_p, has_g = p.any(), g.any()
    if not has_p and not has_g:
        return 0.0
    if not has_p or not has_g:
        h, w = p.shape
        return float(math.hypot(h, w) * spacing)
    a, b = surface_distances(p, g, spacing)
    return float(np.percentile(np.concatenate([a, b]), percentile))


def hd95(pred, gt, spacing=1.0) -> float:
    """95th-percentile symmetric Hausdorff distance (see :func:`hausdorff`)."""
    return hausdorff(pred, gt, 95.0, spacing)


def trimap_bands(gt, widths=TRIMAP_WIDTHS) -> dict:
    """Boolean band masks ``{w: band}`` around the ground-truth boundary (see module docstring)."""
    g = np.asarray(gt).astype(bool)
    if g.ndim != 2:
        raise KerassegError(f"masks must be 2-D (H, W), got shape {g.shape}")
    out = {}
    if not g.any() or g.all():
        for w in widths:
            out[int(w)] = np.zeros_like(g)
        return out
    d_in = ndimage.distance_transform_edt(g)    # inside: distance to the nearest background pixel
    d_out = ndimage.distance_transform_edt(~g)  # outside: distance to the nearest mass pixel
    dist = np.where(g, d_in, d_out)
    for w in widths:
        out[int(w)] = dist <= float(w) + 1e-9
    return out


def trimap_counts(pred, gt, widths=TRIMAP_WIDTHS) -> dict:
    """``{w: (correct, total)}`` pixel counts inside each trimap band of one image."""
    p, g = _pair(pred, gt)
    correct = p == g
    return {w: (int(np.count_nonzero(correct & band)), int(np.count_nonzero(band)))
            for w, band in trimap_bands(g, widths).items()}


def trimap_accuracy(preds, gts, widths=TRIMAP_WIDTHS) -> dict:
    """Pixel accuracy within each band, pooled over all images: ``{w: accuracy or None}``.

    ``None`` (JSON null) only if no image has a boundary (every ground truth empty).
    """
    preds = np.asarray(preds)
    gts = np.asarray(gts)
    if preds.ndim == 2:
        preds, gts = preds[None], gts[None]
    tot = {int(w): [0, 0] for w in widths}
    for p, g in zip(preds, gts):
        for w, (c, n) in trimap_counts(p, g, widths).items():
            tot[w][0] += c
            tot[w][1] += n
    return {w: (c / n if n else None) for w, (c, n) in tot.items()}


PER_IMAGE_KEYS = ("dice", "iou", "sensitivity", "precision", "hd95_px", "hd95_mm")


def per_image_metrics(preds, gts, spacing_mm=None) -> dict:
    """Per-image metric arrays ``{key: float64 (N,)}`` for keys in :data:`PER_IMAGE_KEYS`.

    ``hd95_mm`` is present only when ``spacing_mm`` (N,) is given.
    """
    preds = np.asarray(preds)
    gts = np.asarray(gts)
    if preds.shape != gts.shape or preds.ndim != 3:
        raise KerassegError(f"predictions {preds.shape} and masks {gts.shape} must both be (N, H, W)")
    n = len(preds)
    out = {k: np.zeros(n, np.float64) for k in PER_IMAGE_KEYS if k != "hd95_mm"}
    if spacing_mm is not None:
        spacing_mm = np.asarray(spacing_mm, np.float64).reshape(-1)
        if spacing_mm.shape != (n,):
            raise KerassegError(f"spacing_mm must have shape ({n},), got {spacing_mm.shape}")
        out["hd95_mm"] = np.zeros(n, np.float64)
    if n:
        from kerasseg.training.metrics import dice_per_image

        out["dice"][:] = np.asarray(dice_per_image(preds.astype(bool), gts.astype(bool)), np.float64)
    for i, (p, g) in enumerate(zip(preds, gts)):
        out["iou"][i] = iou(p, g)
        out["sensitivity"][i] = sensitivity(p, g)
        out["precision"][i] = precision(p, g)
        out["hd95_px"][i] = hd95(p, g)
        if spacing_mm is not None:
            out["hd95_mm"][i] = out["hd95_px"][i] * spacing_mm[i]
    return out


def summarize(preds, gts, spacing_mm=None, widths=TRIMAP_WIDTHS) -> tuple[dict, dict]:
    """Summary metrics (the metrics.json numbers) and the per-image arrays."""
    per = per_image_metrics(preds, gts, spacing_mm)
    d = per["dice"]
    summary = {
        "n": int(len(d)),
        "dice_mean": float(d.mean()) if len(d) else None,
        "dice_std": float(d.std()) if len(d) else None,
        "dice_pooled": pooled_dice(preds, gts),
        "iou_mean": float(per["iou"].mean()) if len(d) else None,
        "sensitivity_mean": float(per["sensitivity"].mean()) if len(d) else None,
        "precision_mean": float(per["precision"].mean()) if len(d) else None,
        "hd95_px_mean": float(per["hd95_px"].mean()) if len(d) else None,
        "hd95_mm_mean": float(per["hd95_mm"].mean()) if "hd95_mm" in per and len(d) else None,
        "trimap_accuracy": {str(k): v for k, v in trimap_accuracy(preds, gts, widths).items()},
    }
    return summary, per
