"""The tf.data input pipeline used by training and evaluation.

Images arrive already preprocessed (by the model's own
:class:`~kerasseg.layers.ImagePreprocessor`, fitted on the training split). For training, every ROI appears in all four orientations of
the papers' flip augmentation (identity, horizontal, vertical, both) in every epoch, and the 4N
examples are shuffled in an order that depends only on ``(seed, epoch)`` (a new, deterministic
order each epoch, the same after a resume).
"""

from __future__ import annotations

import numpy as np

from kerasseg.errors import KerassegError

__all__ = ["make_tf_dataset", "make_box_jitter_dataset", "flip_augment", "epoch_steps", "ORIENTATIONS"]

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


def epoch_steps(n_rois: int, batch_size: int, *, flips: bool = True,
                drop_remainder: bool = False) -> int:
    """Batches per training epoch of :func:`make_tf_dataset` for ``n_rois`` ROIs."""
    n = int(n_rois) * (4 if flips else 1)
    return n // int(batch_size) if drop_remainder else -(-n // int(batch_size))


def make_tf_dataset(images, masks, batch_size, *, training, seed=0, flips=True,
                    drop_remainder=False, epoch=0, repeat=False):
    """A ``tf.data.Dataset`` of ``(x, y)`` batches.

    ``x`` float32 (B, H, W, 1) from the (already normalised) ``images`` (N, H, W); ``y`` float32
    one-hot (B, H, W, 2) from ``masks`` in {0, 1} (channel 1 = mass).

    ``training=True``: with ``flips`` each ROI is present in all four orientations every epoch
    (4N examples, :func:`flip_augment`), in the order of training epoch ``epoch`` (0-based): a
    permutation drawn by a stateless RNG keyed by ``(seed, epoch)`` only (Philox), so
    epoch ``e`` has the same order however the run got there (a resumed run is bit-identical to
    an uninterrupted one). The dataset is that one epoch (iterating it again gives the same
    order); ``repeat=True`` makes it endless: epoch ``epoch``, then ``epoch + 1``, ... (each a
    new order; ``fit`` passes ``steps_per_epoch=``:func:`epoch_steps`).
    ``training=False``: the N examples in their order, no flips, no shuffling (cached).
    Batches are prefetched.
    """
    import tensorflow as tf

    x, y = _check_pair(images, masks)
    _check_args(batch_size, seed, epoch)
    bs, drop = int(batch_size), bool(drop_remainder)

    if not training:
        ds = tf.data.Dataset.from_tensor_slices((x, y)).map(_encode).cache()
        return ds.batch(bs, drop_remainder=drop).prefetch(tf.data.AUTOTUNE)

    if flips:
        x, y = flip_augment(x, y)
    xt, yt = tf.constant(x), tf.constant(y)
    return _epochs(lambda e: (xt, yt), bs, seed, epoch, repeat, drop)


def make_box_jitter_dataset(ds, preprocess, jitter, batch_size, *, seed=0, flips=True,
                            drop_remainder=False, epoch=0, repeat=False):
    """The training pipeline with box jitter (config ``data.box_jitter``, :mod:`kerasseg.data.boxes`).

    Every epoch ``e`` draws one box per ROI of ``ds`` (an :class:`~kerasseg.data.dataset.ROIDataset`
    with context windows) from ``(seed, e)``, crops image and mask from the windows, resizes both to
    the ROI size with the one resize, runs ``preprocess`` (the model's own preprocessing layer: raw
    (N, S, S, 1) -> network input (N, S, S, 1)) over the epoch's crops, then applies the flips and the
    ``(seed, e)`` order of :func:`make_tf_dataset`. The batches are as :func:`make_tf_dataset`'s; a
    resumed run sees the same boxes and order.
    """
    import tensorflow as tf

    from kerasseg.data.boxes import epoch_views

    _check_args(batch_size, seed, epoch)

    def views(e):
        x, m = epoch_views(ds, jitter, seed, e)
        x = tf.cast(preprocess(x[..., tf.newaxis]), tf.float32)[..., 0]
        if flips:
            x = tf.concat([x, x[:, :, ::-1], x[:, ::-1, :], x[:, ::-1, ::-1]], axis=0)
            m = tf.concat([m, m[:, :, ::-1], m[:, ::-1, :], m[:, ::-1, ::-1]], axis=0)
        return x, tf.cast(m, tf.uint8)

    return _epochs(views, int(batch_size), seed, epoch, repeat, bool(drop_remainder))


def _check_args(batch_size, seed, epoch):
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise KerassegError(f"batch_size must be a positive integer, got {batch_size!r}")
    for name, value in (("seed", seed), ("epoch", epoch)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise KerassegError(f"{name} must be a non-negative integer, got {value!r}")


def _encode(img, msk):
    import tensorflow as tf

    return img[..., None], tf.one_hot(tf.cast(msk, tf.int32), 2, dtype=tf.float32)


def _epochs(examples, bs, seed, epoch, repeat, drop):
    """Batches of epoch ``epoch`` (then ``epoch + 1``, ... with ``repeat``): ``examples(e)`` gives the
    epoch's (images, masks) tensors, shuffled by a permutation keyed by ``(seed, e)`` only."""
    import tensorflow as tf

    def one_epoch(e):
        xt, yt = examples(e)
        n = tf.shape(xt)[0]
        key = tf.stack([tf.constant(int(seed), tf.int64), tf.cast(e, tf.int64)])
        order = tf.argsort(tf.random.stateless_uniform([n], seed=key, dtype=tf.float32),
                           stable=True)
        idx = tf.data.Dataset.from_tensor_slices(order).batch(bs, drop_remainder=drop)
        return idx.map(lambda i: _encode(tf.gather(xt, i), tf.gather(yt, i)))

    if repeat:
        ds = tf.data.Dataset.counter(start=int(epoch)).flat_map(one_epoch)
    else:
        ds = one_epoch(tf.constant(int(epoch), tf.int64))
    return ds.prefetch(tf.data.AUTOTUNE)
