"""Boxes other than the papers' tight box: drawn inside each ROI's context window.

Both papers crop every mass by the tight bounding box of the radiologist's contour; a model trained
only on such crops learns that the mass ends at the box. A user's box (drawn by hand, given by a
detector) is looser and off-centre. With the context windows of a dataset file
(:mod:`kerasseg.data.dataset`: ``context``, ``context_mask``, ``context_box``, ``context_valid``)
any box around the mass can be cut out again:

- :func:`grow_boxes` is the one geometry: the tight box grown on each side by ``margin`` times the
  box's height (top, bottom) or width (left, right), its centre moved by ``shift`` times the box's
  height / width, clipped to the part of the window that lies inside the image, rounded to whole
  window pixels (``floor(v + 0.5)``) and at least 2 px;
- :func:`crop_views` cuts those boxes out of the windows and resizes image and mask to the ROI size
  with :func:`kerasseg.data.transforms.resize` / :func:`~kerasseg.data.transforms.resize_mask` (the one
  resize, the one the saved model's ``Resize`` layer runs on a raw crop);
- :class:`BoxJitter` (config ``data.box_jitter``) draws the training boxes: every side's margin
  uniform in ``margin = [lo, hi]``, the centre shift uniform in ``[-shift, shift]`` per axis, and with
  probability ``tight`` the ROI's own tight crop (the ``images`` array) instead. The draws are a
  stateless function of ``(seed, epoch)`` (Philox), so a resumed run sees the same boxes;
- :func:`box_view` gives the ROIs at a fixed margin and shift for scoring (``kerasseg evaluate
  --box-margin M --box-shift S``): every side grown by ``M``, the centre moved by ``S`` times the box
  size in a direction drawn once per ROI from ``seed``. ``M = S = 0`` is the dataset itself (the
  tight crops, so scoring is exactly the papers' protocol).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from kerasseg.errors import KerassegError

#: the margins of ``kerasseg evaluate --robustness`` (fraction of the box per side)
ROBUSTNESS_MARGINS = (0.0, 0.1, 0.2, 0.3, 0.4)
#: the centre shifts of ``--robustness`` (fraction of the box size), at margin 0.2
ROBUSTNESS_SHIFTS = (0.0, 0.1, 0.2)
ROBUSTNESS_SHIFT_MARGIN = 0.2
#: the largest margin / shift a context window (side twice the box's longer side) holds on the longer side
MAX_MARGIN = 0.5
#: the key that draws validation boxes during training (never an epoch number)
VALIDATION_EPOCH = 2**31 - 1


def need_context(ds, what: str) -> None:
    """A one-line error naming the file when ``ds`` has no context windows."""
    if not getattr(ds, "has_context", False):
        raise KerassegError(f"{what} needs context windows around each box, and this dataset file has "
                            "none; re-run `kerasseg data prepare` (it writes them) on the source", ds.origin)


@dataclass(frozen=True)
class BoxJitter:
    """Random boxes for training (config ``data.box_jitter``).

    Args:
        margin: ``[lo, hi]``: each side grows by a fraction uniform in [lo, hi] of the box's
            height (top, bottom) or width (left, right); independent sides also change the aspect.
        shift: the box centre moves by a fraction uniform in ``[-shift, shift]`` of the box's
            height and width.
        tight: probability that an ROI keeps its tight crop in an epoch.
    """

    margin: tuple = (0.0, 0.4)
    shift: float = 0.1
    tight: float = 0.25

    KEYS = ("margin", "shift", "tight")

    @classmethod
    def from_config(cls, value, path=None, where="data.box_jitter") -> "BoxJitter | None":
        """``None`` for ``None``/``false``; else a validated :class:`BoxJitter` (one-line errors)."""
        if value is None or value is False:
            return None
        if not isinstance(value, dict):
            raise KerassegError(f"{where} must be null or a mapping with keys {list(cls.KEYS)}, got {value!r}",
                                path)
        for key in value:
            if key not in cls.KEYS:
                raise KerassegError(f"unknown key {where}.{key}; valid keys: {', '.join(cls.KEYS)}", path)
        margin = value.get("margin", list(cls.margin))
        if (not isinstance(margin, (list, tuple)) or len(margin) != 2
                or not all(_number(v) for v in margin)):
            raise KerassegError(f"{where}.margin must be a pair [lo, hi] of numbers, got {margin!r}", path)
        lo, hi = float(margin[0]), float(margin[1])
        if not 0.0 <= lo <= hi <= MAX_MARGIN:
            raise KerassegError(f"{where}.margin must satisfy 0 <= lo <= hi <= {MAX_MARGIN}, got {margin!r}",
                                path)
        shift, tight = value.get("shift", cls.shift), value.get("tight", cls.tight)
        if not _number(shift) or not 0.0 <= shift <= MAX_MARGIN:
            raise KerassegError(f"{where}.shift must be a number in [0, {MAX_MARGIN}], got {shift!r}", path)
        if not _number(tight) or not 0.0 <= tight <= 1.0:
            raise KerassegError(f"{where}.tight must be a probability in [0, 1], got {tight!r}", path)
        return cls(margin=(lo, hi), shift=float(shift), tight=float(tight))

    def to_config(self) -> dict:
        return {"margin": [float(self.margin[0]), float(self.margin[1])], "shift": float(self.shift),
                "tight": float(self.tight)}

    def draws(self, n, seed: int, epoch):
        """``(margins (n, 4), shifts (n, 2), use_tight (n,) bool)`` as tensors, a function of
        ``(seed, epoch)`` only (``epoch`` may be a tensor)."""
        import tensorflow as tf

        # seed + 2**32: a key no epoch order of the pipeline (keyed by (seed, epoch), seed < 2**32) uses
        key = tf.stack([tf.constant(int(seed) + 2**32, tf.int64), tf.cast(epoch, tf.int64)])
        u = tf.random.stateless_uniform([n, 7], seed=key, dtype=tf.float32)
        lo, hi = self.margin
        margins = lo + (hi - lo) * u[:, :4]
        shifts = self.shift * (2.0 * u[:, 4:6] - 1.0)
        return margins, shifts, u[:, 6] < self.tight


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def grow_boxes(context_box, context_valid, margins, shifts):
    """Integer boxes ``(y0, x0, y1, x1)`` int32 (N, 4) in window pixels (ends exclusive).

    ``context_box`` / ``context_valid`` float (N, 4) ``(y0, x0, y1, x1)``; ``margins`` (N, 4) per side
    in the order top, left, bottom, right (fractions of the tight box's height / width); ``shifts``
    (N, 2) (dy, dx) as fractions of its height / width. Works on tensors and arrays (eager or in a
    graph); see the module docstring for the rule.
    """
    import tensorflow as tf

    b = tf.cast(context_box, tf.float32)
    v = tf.cast(context_valid, tf.float32)
    m = tf.cast(margins, tf.float32)
    s = tf.cast(shifts, tf.float32)
    h, w = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    y0 = b[:, 0] - m[:, 0] * h + s[:, 0] * h
    x0 = b[:, 1] - m[:, 1] * w + s[:, 1] * w
    y1 = b[:, 2] + m[:, 2] * h + s[:, 0] * h
    x1 = b[:, 3] + m[:, 3] * w + s[:, 1] * w
    y0, x0 = tf.maximum(y0, v[:, 0]), tf.maximum(x0, v[:, 1])
    y1, x1 = tf.minimum(y1, v[:, 2]), tf.minimum(x1, v[:, 3])
    out = tf.cast(tf.floor(tf.stack([y0, x0, y1, x1], axis=1) + 0.5), tf.int32)
    # at least 2 px inside the valid part of the window
    lo = tf.cast(tf.math.ceil(v[:, :2]), tf.int32)
    hi = tf.cast(tf.floor(v[:, 2:]), tf.int32)
    end = tf.minimum(tf.maximum(out[:, 2:], out[:, :2] + 2), hi)
    start = tf.maximum(tf.minimum(out[:, :2], end - 2), lo)
    return tf.concat([start, end], axis=1)


def crop_views(context, context_mask, boxes, size: int):
    """Cut ``boxes`` int (N, 4) out of the windows and resize to ``size``: ``(images float32 (N, S, S),
    masks float32 (N, S, S) in {0, 1})`` as tensors (the one resize; masks resized as float and
    thresholded at 0.5 as ``data prepare`` does)."""
    import tensorflow as tf

    from kerasseg.data import transforms

    windows = tf.convert_to_tensor(context, tf.float32)
    masks = tf.cast(tf.convert_to_tensor(context_mask), tf.float32)
    boxes = tf.cast(boxes, tf.int32)

    def one(args):
        win, msk, box = args
        begin, extent = box[:2], box[2:] - box[:2]
        img = tf.slice(win, begin, extent)[tf.newaxis]
        m = tf.slice(msk, begin, extent)[tf.newaxis]
        return (transforms.resize(img, size)[0],
                tf.cast(transforms.resize_mask(m, size)[0], tf.float32))

    spec = tf.TensorSpec([size, size], tf.float32)
    return tf.map_fn(one, (windows, masks, boxes), fn_output_signature=(spec, spec))


def scoring_draws(ids, margin: float, shift: float, seed: int = 0):
    """``(margins (n, 4), shifts (n, 2))`` of :func:`box_view` for the ROIs ``ids``: every side
    ``margin``; the centre moved by ``shift`` in a direction drawn from ``(seed, id)`` alone (the same
    for an ROI whichever file, split or order it is scored in)."""
    import hashlib

    for name, v in (("box margin", margin), ("box shift", shift)):
        if not _number(v) or not 0.0 <= v <= MAX_MARGIN:
            raise KerassegError(f"{name} must be a number in [0, {MAX_MARGIN}] (a fraction of the box), got {v!r}")
    u = np.array([int.from_bytes(hashlib.sha256(f"{int(seed)}:{i}".encode()).digest()[:8], "big") / 2.0**64
                  for i in np.asarray(ids).astype(str)], np.float64)
    theta = 2.0 * np.pi * u
    shifts = shift * np.stack([np.sin(theta), np.cos(theta)], axis=1) if len(u) else np.zeros((0, 2))
    return np.full((len(u), 4), margin, np.float32), np.asarray(shifts, np.float32)


@functools.lru_cache(maxsize=8)
def _crop_graph(size: int):
    """:func:`crop_views` traced once per ROI size (eager map_fn is ~20x slower)."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.float32),
                                  tf.TensorSpec([None, None, None], tf.float32),
                                  tf.TensorSpec([None, 4], tf.int32)])
    def crop(context, context_mask, boxes):
        return crop_views(context, context_mask, boxes, size)

    return crop


def box_view(ds, margin: float = 0.0, shift: float = 0.0, seed: int = 0, batch: int = 256):
    """``ds`` with its ROIs cut at other boxes (see the module docstring): a new
    :class:`~kerasseg.data.dataset.ROIDataset` whose ``images`` / ``masks`` are the crops at
    ``margin`` / ``shift`` resized to the dataset's ROI size; ``margin = shift = 0`` returns ``ds``."""
    margins, shifts = scoring_draws(ds.ids, margin, shift, seed)
    if margin == 0 and shift == 0:
        return ds
    need_context(ds, "scoring at a box margin or shift")
    boxes = grow_boxes(ds.context_box, ds.context_valid, margins, shifts)
    crop = _crop_graph(ds.size)
    images, masks = [], []
    for i in range(0, len(ds), batch):
        x, m = crop(ds.context[i:i + batch], ds.context_mask[i:i + batch].astype(np.float32), boxes[i:i + batch])
        images.append(x.numpy())
        masks.append(m.numpy().astype(np.uint8))
    from kerasseg.data.dataset import ROIDataset

    view = ROIDataset(images=np.concatenate(images), masks=np.concatenate(masks), split=ds.split, ids=ds.ids,
                      spacing_mm=None, boxes=None, source=ds.source, group=ds.group, origin=ds.origin,
                      context=ds.context, context_mask=ds.context_mask, context_box=ds.context_box,
                      context_valid=ds.context_valid, context_spacing_mm=ds.context_spacing_mm)
    return view


def jitter_views(ds, jitter: BoxJitter, seed: int, epoch: int):
    """Raw ROIs ``(images float32 (N, S, S), masks uint8)`` of one training epoch's draw (the same as the
    training pipeline's; eager)."""
    x, m = epoch_views(ds, jitter, seed, epoch)
    return x.numpy(), m.numpy().astype(np.uint8)


def epoch_views(ds, jitter: BoxJitter, seed: int, epoch):
    """The raw crops of one epoch as tensors (eager or in a tf.data graph; ``epoch`` may be a tensor):
    each ROI at a jittered box, or its tight crop with probability ``jitter.tight``."""
    import tensorflow as tf

    need_context(ds, "data.box_jitter")
    n = len(ds)
    margins, shifts, tight = jitter.draws(n, seed, epoch)
    boxes = grow_boxes(ds.context_box, ds.context_valid, margins, shifts)
    x, m = _crop_graph(ds.size)(ds.context, ds.context_mask.astype(np.float32), boxes)
    keep = tight[:, None, None]
    x = tf.where(keep, tf.constant(ds.images, tf.float32), x)
    m = tf.where(keep, tf.constant(ds.masks, tf.float32), m)
    return x, m
