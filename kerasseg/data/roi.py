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

:func:`context_window` cuts the context window of a mass (the dataset's optional ``context*``
arrays, :mod:`kerasseg.data.dataset`): a square of side ``L = 2 * max(h, w)`` original pixels
around the TIGHT box (``h x w``), centred on the box centre (top-left ``floor(centre - L/2 + 0.5)``,
:func:`context_square`), the part outside the image filled with the image's edge values
(``np.pad(mode="edge")``; the mask is 0 there), resized to ``size x size`` with the same
:func:`resize_image` / :func:`resize_mask` as the ROIs. The tight box and the part of the window
inside the image are returned as ``(y0, x0, y1, x1)`` in window pixels (original pixels relative to
the window's top-left times ``size / L``, ends exclusive).
"""

from __future__ import annotations

import functools

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


@functools.lru_cache(maxsize=None)
def _resize_fn(kind: str):
    """:func:`kerasseg.data.transforms.resize` (``"image"``), ``resize_mask`` (``"mask"``) or both
    (``"both"``) as one traced graph for any (1, H, W) float32 input and size: the same ops and
    kernels as eager calls (the same pixels) without eager dispatch per op (called once per ROI)."""
    import tensorflow as tf
    from kerasseg.data import transforms

    spec = tf.TensorSpec((1, None, None), tf.float32)
    if kind == "both":
        return tf.function(lambda x, m, size: (transforms.resize(x, size), transforms.resize_mask(m, size)),
                           autograph=False, input_signature=(spec, spec, tf.TensorSpec((), tf.int32)))
    op = transforms.resize if kind == "image" else transforms.resize_mask
    return tf.function(lambda x, size: op(x, size), autograph=False,
                       input_signature=(spec, tf.TensorSpec((), tf.int32)))


def resize_image(img: np.ndarray, size: int) -> np.ndarray:
    """One image (H, W) to ``size x size`` with :func:`kerasseg.data.transforms.resize` (bicubic,
    anti-aliased when shrinking: the same op the saved model's ``Resize`` layer runs); float32."""
    return np.asarray(_resize_fn("image")(np.asarray(img, np.float32)[None], np.int32(size)))[0]


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """One binary mask (H, W) to ``size x size`` with :func:`kerasseg.data.transforms.resize_mask`
    (bilinear as float, anti-aliased when shrinking, then ``>= 0.5``); uint8 in {0, 1}."""
    out = _resize_fn("mask")(np.asarray(mask, np.float32)[None], np.int32(size))
    return np.asarray(out)[0].astype(np.uint8)


def resize_roi(img: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`resize_image` of ``img`` and :func:`resize_mask` of ``mask`` (both (H, W)) in one call;
    the same pixels as the two calls."""
    x, m = _resize_fn("both")(np.asarray(img, np.float32)[None], np.asarray(mask, np.float32)[None],
                              np.int32(size))
    return np.asarray(x)[0], np.asarray(m)[0].astype(np.uint8)


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
    roi, roi_mask = resize_roi(image[y0:y1, x0:x1], mask[y0:y1, x0:x1], size)
    if not roi_mask.any():  # a mass thinner than one ROI pixel: keep at least its centre
        crop = mask[y0:y1, x0:x1].astype(np.float64)
        rr, cc = np.nonzero(crop)
        roi_mask[min(size - 1, int(rr.mean() * size / crop.shape[0])),
                 min(size - 1, int(cc.mean() * size / crop.shape[1]))] = 1
    if mirror:
        roi = roi[:, ::-1].copy()
        roi_mask = roi_mask[:, ::-1].copy()
    return roi, roi_mask, box, roi_spacing(spacing, y1 - y0, x1 - x0, size)


def context_square(box) -> tuple[int, int, int]:
    """``(top, left, L)``: the square of :func:`context_window` around the tight ``(x0, y0, x1, y1)``
    box in original pixels: side ``L = 2 * max(h, w)``, top-left ``floor(centre - L / 2 + 0.5)``."""
    x0, y0, x1, y1 = (int(v) for v in box)
    side = 2 * max(y1 - y0, x1 - x0)
    top = int(np.floor((y0 + y1) / 2.0 - side / 2.0 + 0.5))
    left = int(np.floor((x0 + x1) / 2.0 - side / 2.0 + 0.5))
    return top, left, side


def context_window(image: np.ndarray, mask: np.ndarray, box, *, size: int = 128, spacing=None,
                   mirror: bool = False):
    """The context window of one mass: the image around its tight box (module docstring).

    ``image`` (H, W) and ``mask`` (H, W) are the full image and the mask of ONE mass; ``box`` is the
    tight ``(x0, y0, x1, y1)`` box (end-exclusive, original pixels) as :func:`mask_box` returns;
    ``spacing`` is the original pixel size in mm (a number or (row, col) pair) or None.
    ``mirror=True`` flips window and mask left-right and mirrors the x coordinates (``x -> size - x``),
    as :func:`extract_roi` does for the ROI.
    Returns ``(window float32 (size, size), window_mask uint8 (size, size), box_in_window float32 (4,)
    (y0, x0, y1, x1), valid float32 (4,) (y0, x0, y1, x1): the part inside the image, window_spacing_mm
    or None)``; the window's pixel size is :func:`roi_spacing` of the ``L x L`` square.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 8:
        raise KerassegError(f"context window size must be an integer >= 8, got {size!r}")
    image, mask = np.asarray(image), np.asarray(mask)
    if image.ndim != 2:
        raise KerassegError(f"context window: image must be 2-D (H, W), got shape {image.shape}")
    if image.shape != mask.shape:
        raise KerassegError(f"image shape {image.shape} differs from mask shape {mask.shape}")
    try:
        x0, y0, x1, y1 = (int(v) for v in box)
    except (TypeError, ValueError):
        raise KerassegError(f"context window: box must be 4 integers (x0, y0, x1, y1), got {box!r}") from None
    h, w = image.shape
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise KerassegError(f"context window: box {(x0, y0, x1, y1)} is not an (x0, y0, x1, y1) box inside "
                            f"the {h}x{w} image")
    size = int(size)
    top, left, side = context_square((x0, y0, x1, y1))
    r0, r1 = max(top, 0), min(top + side, h)        # the rows / cols of the window inside the image
    c0, c1 = max(left, 0), min(left + side, w)
    pad = ((r0 - top, top + side - r1), (c0 - left, left + side - c1))
    win = np.pad(np.asarray(image[r0:r1, c0:c1], np.float32), pad, mode="edge")
    win_mask = np.pad(np.asarray(mask[r0:r1, c0:c1] != 0, np.uint8), pad, mode="constant")
    window, window_mask = resize_roi(win, win_mask, size)
    if not window_mask.any() and win_mask.any():  # a mass thinner than a window pixel: keep its centre
        rr, cc = np.nonzero(win_mask)
        window_mask[min(size - 1, int(rr.mean() * size / side)), min(size - 1, int(cc.mean() * size / side))] = 1
    s = size / side
    box_in = np.array([y0 - top, x0 - left, y1 - top, x1 - left], np.float64) * s
    valid = np.array([r0 - top, c0 - left, r1 - top, c1 - left], np.float64) * s
    if mirror:
        window = window[:, ::-1].copy()
        window_mask = window_mask[:, ::-1].copy()
        box_in = np.array([box_in[0], size - box_in[3], box_in[2], size - box_in[1]])
        valid = np.array([valid[0], size - valid[3], valid[2], size - valid[1]])
    return (window, window_mask, box_in.astype(np.float32), valid.astype(np.float32),
            roi_spacing(spacing, side, side, size))
