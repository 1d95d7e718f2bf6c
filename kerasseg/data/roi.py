"""ROI extraction: crop a mass by its mask's bounding box and resize to ``size x size``.

As in both papers (ROIs "extracted with rectangular bounding boxes and then resized into
40 x 40 pixels using bicubic interpolation"):

- the box is the tight bounding box of the mask (``margin=0``); ``margin`` enlarges it by that
  fraction of its width (left and right) and height (top and bottom), clipped to the image;
- the image crop is resized bicubically, anti-aliased when shrinking, with the TensorFlow op of
  :func:`kerasseg.data.transforms.resize` -- the one resize of kerasseg, also run by the saved
  model's :class:`~kerasseg.layers.Resize` layer, so a served raw crop gets the same pixels;
- the mask crop is resized as float (bilinear, anti-aliased when shrinking) and thresholded at
  0.5, which keeps its area fraction;
- ``boxes`` are ``(x0, y0, x1, y1)`` in original pixel coordinates, x = column, end-exclusive
  (``image[y0:y1, x0:x1]`` is the crop);
- the ROI pixel size reported is :func:`roi_spacing` (``sqrt(row_mm * h * col_mm * w) / size``, one
  number per ROI whose square is the area of one ROI pixel, so ``mask.sum() * spacing_mm**2`` is the
  mass area; the readers and the phantom use the same function);
- ``mirror=True`` flips the ROI left-right (used to bring right breasts to the left orientation).
"""

from __future__ import annotations

import numpy as np
from kerasseg.errors import KerassegError


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight ``(x0, y0, x1, y1)`` box (end-exclusive) of the non-zero pixels of ``mask``."""
    rows = np.flatnonzero(np.any(mask, axis=1))
    cols = np.flatnonzero(np.any(mask, axis=0))
    if rows.size == 0:
        raise KerassegError("mask is empty")
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def expand_box(box, margin: float, shape) -> tuple[int, int, int, int]:
    """Enlarge ``box`` by ``margin`` x its width/height on each side, clipped to ``shape`` (H, W)."""
    if margin < 0:
        raise KerassegError(f"margin must be >= 0, got {margin}")
    x0, y0, x1, y1 = box
    dx = int(round(margin * (x1 - x0)))
    dy = int(round(margin * (y1 - y0)))
    h, w = shape[:2]
    return max(0, x0 - dx), max(0, y0 - dy), min(w, x1 + dx), min(h, y1 + dy)


def resize_image(img: np.ndarray, size: int) -> np.ndarray:
    """One image (H, W) to ``size x size`` with :func:`kerasseg.data.transforms.resize` (bicubic,
    anti-aliased when shrinking: the same op the saved model's ``Resize`` layer runs); float32."""
    from kerasseg.data import transforms

    return np.asarray(transforms.resize(np.asarray(img, np.float32)[None], size))[0]


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """One binary mask (H, W) to ``size x size`` with :func:`kerasseg.data.transforms.resize_mask`
    (bilinear as float, anti-aliased when shrinking, then ``>= 0.5``); uint8 in {0, 1}."""
    from kerasseg.data import transforms

    return np.asarray(transforms.resize_mask(np.asarray(mask, np.float32)[None], size))[0].astype(np.uint8)


def roi_spacing(spacing, h, w, size: int) -> float | None:
    """The pixel size (mm) of an ``h x w`` crop resized to ``size x size``: ``sqrt(row_mm * h *
    col_mm * w) / size``, one number whose square is the area of one ROI pixel. ``spacing`` is the
    original pixel size in mm (a number or a (row, col) pair) or None (then None)."""
    if spacing is None:
        return None
    sp = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (2,))
    return float(np.sqrt(sp[0] * h * sp[1] * w) / size)


def extract_roi(image: np.ndarray, mask: np.ndarray, *, size: int = 40, margin: float = 0.0,
                mirror: bool = False, spacing=None):
    """Crop one mass and resize it.

    ``image`` (H, W) and ``mask`` (H, W, bool) are the full image and the mask of ONE mass;
    ``spacing`` is the original pixel size in mm (a number or (row, col) pair) or None.
    Returns ``(roi_image float32 (size, size), roi_mask uint8, box int tuple, roi_spacing_mm or None)``.
    """
    if size < 2:
        raise KerassegError(f"ROI size must be >= 2, got {size}")
    if image.shape != mask.shape:
        raise KerassegError(f"image shape {image.shape} differs from mask shape {mask.shape}")
    box = expand_box(mask_box(mask), margin, image.shape)
    x0, y0, x1, y1 = box
    roi = resize_image(image[y0:y1, x0:x1], size)
    roi_mask = resize_mask(mask[y0:y1, x0:x1], size)
    if not roi_mask.any():  # a mass thinner than one ROI pixel: keep at least its centre
        crop = mask[y0:y1, x0:x1].astype(np.float64)
        rr, cc = np.nonzero(crop)
        roi_mask[min(size - 1, int(rr.mean() * size / crop.shape[0])),
                 min(size - 1, int(cc.mean() * size / crop.shape[1]))] = 1
    if mirror:
        roi = roi[:, ::-1].copy()
        roi_mask = roi_mask[:, ::-1].copy()
    return roi, roi_mask, box, roi_spacing(spacing, y1 - y0, x1 - x0, size)
