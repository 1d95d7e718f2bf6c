"""Mask post-processing as core TensorFlow ops: largest connected component and hole filling.

nnU-Net picks these two steps on the cross-validation; kerasseg applies the choice of a folds dir
(``cv.json`` ``"postprocessing"``) inside the ensemble graph (:mod:`kerasseg.models.ensemble`), so
an exported SavedModel carries it. Everything here is plain TF (``tf.while_loop``, pads, slices,
``unsorted_segment_sum``): no ``py_function``, works in eager mode, in a ``tf.function`` with
unknown height and width, and inside a SavedModel served by a stock ``tensorflow_model_server``.

Connected components are found by label equivalence with pointer jumping (the union-find scheme
of GPU connected-component labelling): every foreground pixel points to a pixel of its component
(at first itself); each step takes the smallest pointer in its neighbourhood, lowers the pointer
of its current root to it (a scatter-min) and then follows pointers to their roots (gathers, which
halve every chain). When nothing changes, every pixel points to its component's first pixel in
raster order. The number of steps grows with the logarithm of a component's length rather than
with its length, so long thin shapes and large crops stay cheap (``benchmarks/bench_postprocessing.py``).

Definitions (the tests compare with scipy exactly):

- :func:`largest_component` = ``scipy.ndimage.label(mask, structure=np.ones((3, 3)))`` and keep the
  label with the most pixels; **ties go to the component scipy numbers first** (whose first pixel in
  raster order comes first). An empty mask stays empty.
- :func:`fill_holes` = ``scipy.ndimage.binary_fill_holes(mask)`` (default structure, i.e. background
  4-connectivity): background pixels not 4-connected to the image border become foreground.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from keras import ops

#: a pixel is mass when the final output's mass probability is >= THRESHOLD (the one threshold of
#: kerasseg: training metrics, model selection, evaluation, predict and the served graph)
THRESHOLD = 0.5


def binarize(prob):
    """``prob >= THRESHOLD`` as uint8 (NumPy in, NumPy out; tensor in, tensor out).

    Example:

    >>> import numpy as np
    >>> binarize(np.array([0.2, 0.5, 0.9])).tolist()
    [0, 1, 1]
    """
    if isinstance(prob, np.ndarray):
        return (prob >= THRESHOLD).astype(np.uint8)
    return ops.cast(ops.greater_equal(prob, THRESHOLD), "uint8")


#: pointer-jumping gathers per union step
_JUMPS = 2


def _as_bool(mask):
    """(B, h, w) any dtype -> bool (non-zero is foreground)."""
    mask = tf.convert_to_tensor(mask)
    if mask.shape.rank is not None and mask.shape.rank != 3:
        raise ValueError(f"mask must be (batch, height, width), got shape {mask.shape}")
    return tf.not_equal(mask, tf.zeros([], mask.dtype)) if mask.dtype != tf.bool else mask


def _neighbour_min(x, big, eight: bool):
    """Minimum over each pixel and its 8 (or 4 edge) neighbours; ``big`` outside the image."""
    pad = tf.pad(x, [[0, 0], [1, 1], [1, 1]], constant_values=big)
    if eight:
        rows = tf.minimum(tf.minimum(pad[:, :, :-2], pad[:, :, 1:-1]), pad[:, :, 2:])
        return tf.minimum(tf.minimum(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])
    return tf.minimum(tf.minimum(tf.minimum(pad[:, 1:-1, 1:-1], pad[:, :-2, 1:-1]),
                                 tf.minimum(pad[:, 2:, 1:-1], pad[:, 1:-1, :-2])), pad[:, 1:-1, 2:])


def _roots(fg, eight: bool = True):
    """Per pixel of ``fg`` (B, h, w) bool, the global flat index ``b*h*w + i`` of the first pixel
    (raster order) of its connected component; ``B*h*w`` on the background."""
    shape = tf.shape(fg)
    total = shape[0] * shape[1] * shape[2]
    index = tf.reshape(tf.range(total, dtype=tf.int32), shape)
    par = tf.where(fg, index, total)

    def body(par, _changed):
        low = tf.where(fg, _neighbour_min(par, total, eight), total)
        flat, lowf = tf.reshape(par, [-1]), tf.reshape(low, [-1])
        # union: the root each pixel points to takes the smallest pointer seen next to the pixel
        ext = tf.concat([tf.minimum(flat, lowf), [total]], axis=0)
        ext = tf.tensor_scatter_nd_min(ext, flat[:, tf.newaxis], lowf)
        new = tf.gather(ext, flat)
        for _ in range(_JUMPS):  # pointer jumping: follow each pointer to where it points
            new = tf.gather(ext, new)
            ext = tf.concat([new, [total]], axis=0)
        new = tf.reshape(new, shape)
        return new, tf.reduce_any(tf.not_equal(new, par))

    par, _ = tf.while_loop(lambda _p, changed: changed, body, [par, tf.constant(True)],
                           parallel_iterations=1)
    return par


def component_labels(mask):
    """8-connected component labels of binary masks.

    Args:
        mask: (B, h, w) masks, any dtype (non-zero is foreground).

    Returns:
        int32 (B, h, w): 0 on the background; on a component, ``h*w - i`` with ``i`` the raster
        index of the component's first pixel (so components are numbered within each image, and a
        larger label means an earlier component in raster order).

    Example:

    >>> component_labels([[[1, 0, 1]]]).numpy().tolist()
    [[[3, 0, 1]]]
    """
    fg = _as_bool(mask)
    shape = tf.shape(fg)
    n = shape[1] * shape[2]
    root = _roots(fg, eight=True)
    first = root - (n * tf.range(shape[0], dtype=tf.int32))[:, tf.newaxis, tf.newaxis]
    return tf.where(fg, n - first, tf.zeros([], tf.int32))


def largest_component(mask):
    """Keep the largest 8-connected foreground component of each mask.

    Ties (several components of the largest size) keep the component whose first pixel comes
    first in raster order (the lowest ``scipy.ndimage.label`` number). An empty mask stays empty.

    Args:
        mask: (B, h, w) masks, any dtype (non-zero is foreground).

    Input shape:
        ``(batch, height, width)``, height and width may be unknown.

    Output shape:
        ``(batch, height, width)`` uint8 in {0, 1}.

    Example:

    >>> largest_component([[[1, 0, 1, 1]]]).numpy().tolist()
    [[[0, 0, 1, 1]]]
    """
    labels = component_labels(mask)
    shape = tf.shape(labels)
    b, n = shape[0], shape[1] * shape[2]
    flat = tf.reshape(labels, tf.stack([b, n]))
    segments = flat + (n + 1) * tf.range(b, dtype=tf.int32)[:, tf.newaxis]
    sizes = tf.math.unsorted_segment_sum(tf.ones_like(flat), segments, b * (n + 1))
    sizes = tf.reshape(sizes, tf.stack([b, n + 1]))
    sizes = tf.concat([tf.zeros_like(sizes[:, :1]), sizes[:, 1:]], axis=1)  # the background never wins
    # the largest size, then among equal sizes the largest label (= the earliest component)
    key = (tf.cast(sizes, tf.int64) * tf.cast(n + 1, tf.int64)
           + tf.range(n + 1, dtype=tf.int64)[tf.newaxis])
    best = tf.argmax(key, axis=1, output_type=tf.int32)
    keep = tf.logical_and(tf.equal(labels, best[:, tf.newaxis, tf.newaxis]), labels > 0)
    return tf.cast(keep, tf.uint8)


def fill_holes(mask):
    """Fill the holes of each mask, as ``scipy.ndimage.binary_fill_holes`` (default structure).

    A hole is a background region not 4-connected to the image border.

    Args:
        mask: (B, h, w) masks, any dtype (non-zero is foreground).

    Input shape:
        ``(batch, height, width)``, height and width may be unknown.

    Output shape:
        ``(batch, height, width)`` uint8 in {0, 1}.

    Example:

    >>> fill_holes([[[1, 1, 1], [1, 0, 1], [1, 1, 1]]]).numpy()[0].tolist()
    [[1, 1, 1], [1, 1, 1], [1, 1, 1]]
    """
    fg = _as_bool(mask)
    bg = tf.logical_not(fg)
    shape = tf.shape(fg)
    h, w = shape[1], shape[2]
    rows, cols = tf.range(h), tf.range(w)
    border = tf.logical_or(tf.logical_or(tf.equal(rows, 0), tf.equal(rows, h - 1))[:, tf.newaxis],
                           tf.logical_or(tf.equal(cols, 0), tf.equal(cols, w - 1))[tf.newaxis, :])
    root = tf.reshape(_roots(bg, eight=False), [-1])  # background regions, 4-connected
    total = tf.size(root)
    on_border = tf.reshape(tf.logical_and(bg, border[tf.newaxis]), [-1])
    # a background region is outside when one of its pixels lies on the border
    touches = tf.math.unsorted_segment_max(tf.cast(on_border, tf.int32), root, total + 1)
    outside = tf.reshape(tf.gather(touches, root) > 0, shape)
    return tf.cast(tf.logical_not(tf.logical_and(bg, outside)), tf.uint8)


def postprocess(mask, largest_component=False, fill_holes=False):
    """The post-processing a folds dir chose: largest component first, then hole filling.

    Args:
        mask: (B, h, w) masks, any dtype (non-zero is foreground).
        largest_component: keep only the largest 8-connected component (:func:`largest_component`).
        fill_holes: fill the holes (:func:`fill_holes`).

    Input shape:
        ``(batch, height, width)``.

    Output shape:
        ``(batch, height, width)`` uint8 in {0, 1} (the mask unchanged, as uint8, with both off).

    Example:

    >>> postprocess([[[1, 0, 1, 1]]], largest_component=True).numpy().tolist()
    [[[0, 0, 1, 1]]]
    """
    out = tf.cast(_as_bool(mask), tf.uint8)
    if largest_component:
        out = _largest_component(out)
    if fill_holes:
        out = _fill_holes(out)
    return out


_largest_component, _fill_holes = largest_component, fill_holes
