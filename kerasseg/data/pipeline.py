"""The tf.data input pipeline used by training and evaluation.

Images arrive already preprocessed (by the model's own
:class:`~kerasseg.layers.ImagePreprocessor`, fitted on the training split). For training, every ROI appears in all four orientations of
the papers' flip augmentation (identity, horizontal, vertical, both) in every epoch, and the 4N
examples are shuffled with the seed (a new, deterministic order each epoch).
"""

from __future__ import annotations

import numpy as np

from kerasseg.errors import KerassegError

__all__ = ["make_tf_dataset", "flip_augment", "ORIENTATIONS"]

#: order of the four orientations produced by :func:`flip_augment` and the training pipeline
ORIENTATIONS = ("identity", "hflip", "vflip", "hvflip")


def _check_pair(images, masks):
    x = np.asarray(images)
    y = np.asarray(masks)
    if x.ndim != 3:
        raise KerassegError(f"images must have shape (N, H, W), got {x.shape}")
    if y.shape != x.shape:
        raise KerassegError(f"masks shape {y.shape} differs from images shape {x.shape}")
    if len(x) == 0:
        raise KerassegError("no images given (N = 0)")
    if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
        raise KerassegError("images must be finite numbers")
    if not np.isin(y, (0, 1)).all():
        raise KerassegError("masks must contain only 0 and 1")
    return x.astype(np.float32), y.astype(np.uint8)


def flip_augment(images, masks):
    """The 4x flip augmentation in NumPy: returns (4N, H, W) images and masks, in blocks of N
    ordered as :data:`ORIENTATIONS` (identity, horizontal = left-right, vertical = up-down, both)."""
    x, y = _check_pair(images, masks)

    def four(a):
        return np.concatenate([a, a[:, :, ::-1], a[:, ::-1, :], a[:, ::-1, ::-1]], axis=0)

    return four(x), four(y)


def make_tf_dataset(images, masks, batch_size, *, training, seed=0, flips=True,
                    drop_remainder=False):
    """A ``tf.data.Dataset`` of ``(x, y)`` batches.

    ``x`` float32 (B, H, W, 1) from the (already normalised) ``images`` (N, H, W); ``y`` float32
    one-hot (B, H, W, 2) from ``masks`` in {0, 1} (channel 1 = mass).

    ``training=True``: with ``flips`` each ROI is present in all four orientations every epoch
    (4N examples), shuffled with ``seed`` (reshuffled each epoch, deterministic for a seed).
    ``training=False``: the N examples in their order, no flips, no shuffling.
    The examples are cached after the first pass and batches are prefetched.
    """
    import tensorflow as tf

    x, y = _check_pair(images, masks)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise KerassegError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise KerassegError(f"seed must be an integer, got {seed!r}")
    n = len(x)

    def encode(img, msk):
        return img[..., None], tf.one_hot(tf.cast(msk, tf.int32), 2, dtype=tf.float32)

    ds = tf.data.Dataset.from_tensor_slices((x, y)).map(encode).cache()
    if training:
        if flips:
            def four(img, lab):
                imgs = tf.stack([img, tf.reverse(img, [1]), tf.reverse(img, [0]),
                                 tf.reverse(img, [0, 1])])
                labs = tf.stack([lab, tf.reverse(lab, [1]), tf.reverse(lab, [0]),
                                 tf.reverse(lab, [0, 1])])
                return tf.data.Dataset.from_tensor_slices((imgs, labs))

            n *= 4
            # flat_map hides the length; state it so Keras shows a full progress bar in the
            # first epoch (and does not warn that the input "ran out of data")
            ds = ds.flat_map(four).apply(tf.data.experimental.assert_cardinality(n))
        ds = ds.shuffle(n, seed=int(seed), reshuffle_each_iteration=True)
    ds = ds.batch(int(batch_size), drop_remainder=bool(drop_remainder))
    return ds.prefetch(tf.data.AUTOTUNE)
