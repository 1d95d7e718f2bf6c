"""Mask post-processing as core TensorFlow ops: largest connected component and hole filling.

nnU-Net picks these two steps on the cross-validation; kerasseg applies the choice of a folds dir
(``cv.json`` ``"postprocessing"``) inside the ensemble graph (:mod:`kerasseg.models.ensemble`), so
an exported SavedModel carries it. Everything here is plain TF (``tf.while_loop``, pads, slices,
``unsorted_segment_sum``): no ``py_function``, works in eager mode, in a ``tf.function`` with
unknown height and width, and inside a SavedModel served by a stock ``tensorflow_model_server``.

Connected components are found by iterative label propagation: every foreground pixel starts with
its own label (``h*w - raster index``, so every label is >= 1 and the largest label of a component
belongs to its first pixel in raster order), then each step replaces a foreground pixel's label by
the maximum over its 3 x 3 neighbourhood (8-connectivity) and zeroes the background, until no label
changes. The number of steps is the longest geodesic distance inside a component (about its
diameter for a mass; a long snake costs more).

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


#: propagation steps between two convergence checks of the while loops
_STEPS_PER_CHECK = 4


def _as_bool(mask):
    """(B, h, w) any dtype -> bool (non-zero is foreground)."""
    mask = tf.convert_to_tensor(mask)
    if mask.shape.rank is not None and mask.shape.rank != 3:
        raise ValueError(f"mask must be (batch, height, width), got shape {mask.shape}")
    return tf.not_equal(mask, tf.zeros([], mask.dtype)) if mask.dtype != tf.bool else mask


def _max3x3(x):
    """Maximum over the 3 x 3 neighbourhood of each pixel (zero padding; x >= 0), separably."""
    p = tf.pad(x, [[0, 0], [0, 0], [1, 1]])
    x = tf.maximum(tf.maximum(p[:, :, :-2], p[:, :, 1:-1]), p[:, :, 2:])
    p = tf.pad(x, [[0, 0], [1, 1], [0, 0]])
    return tf.maximum(tf.maximum(p[:, :-2], p[:, 1:-1]), p[:, 2:])


def _cross4(x):
    """Logical OR over each pixel and its 4 edge neighbours (False outside the image)."""
    p = tf.pad(x, [[0, 0], [1, 1], [1, 1]])
    return (p[:, 1:-1, 1:-1] | p[:, :-2, 1:-1] | p[:, 2:, 1:-1] | p[:, 1:-1, :-2] | p[:, 1:-1, 2:])


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
    index = tf.reshape(tf.range(n, dtype=tf.int32), shape[1:3])
    labels = tf.where(fg, (n - index)[tf.newaxis], tf.zeros([], tf.int32))

    def step(lab):
        for _ in range(_STEPS_PER_CHECK):
            lab = tf.where(fg, _max3x3(lab), tf.zeros([], tf.int32))
        return lab

    def body(lab, _changed):
        new = step(lab)
        return new, tf.reduce_any(tf.not_equal(new, lab))

    labels, _ = tf.while_loop(lambda _lab, changed: changed, body,
                              [labels, tf.constant(True)], parallel_iterations=1)
    return labels


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
    h, w = tf.shape(fg)[1], tf.shape(fg)[2]
    rows, cols = tf.range(h), tf.range(w)
    border = tf.logical_or(tf.logical_or(tf.equal(rows, 0), tf.equal(rows, h - 1))[:, tf.newaxis],
                           tf.logical_or(tf.equal(cols, 0), tf.equal(cols, w - 1))[tf.newaxis, :])
    outside = tf.logical_and(bg, border[tf.newaxis])

    def body(out, _changed):
        new = out
        for _ in range(_STEPS_PER_CHECK):
            new = tf.logical_and(bg, _cross4(new))
        return new, tf.reduce_any(tf.not_equal(new, out))

    outside, _ = tf.while_loop(lambda _o, changed: changed, body, [outside, tf.constant(True)],
                               parallel_iterations=1)
    return tf.cast(tf.logical_not(outside), tf.uint8)


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
