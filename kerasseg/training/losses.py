"""Losses of both papers, per example so that they stay correct under distribution.

- ``f``: pixel-wise categorical cross-entropy of ``outputs["net"]`` (CRU-Net eq. 3);
- ``g``: negative log-likelihood of the CRF's mean-field marginals ``outputs["crf"]``;
- ``(1 - lam) * f + lam * g`` (CRU-Net eq. 5). Zhu's models use the CE of the final output
  (``lam = 1`` with a CRF, ``lam = 0`` without) plus ``l2/2 * ||theta||^2`` (Zhu eq. 8).

Zhu's eq. (8) sums the log-likelihood over the pixels of an image; our data term is the
per-pixel *mean*, so the L2 term is divided by the number of pixels ``H*W`` to keep the
paper's balance (``l2 = 0.5`` of the paper is ``0.5 / 1600`` per mean-pixel loss at 40x40).
``theta`` is the convolution / dense / transposed-convolution KERNELS only: the L2 is a
``keras.regularizers.L2`` set as their ``kernel_regularizer`` (:func:`attach_kernel_l2`, saved in
the network's config); biases, the position prior, the CRF and the fusion weights are free.

Distribution: each replica returns ``sum(per_example) / global_batch`` (the global batch
is all-reduced, so an uneven last batch is exact) and ``regularisation / num_replicas``; Keras
sums replica gradients, which then equal the single-device gradient.
"""

from __future__ import annotations

import keras
import tensorflow as tf

EPS = 1e-7


def pixel_nll(y_true, prob):
    """Per-example mean over pixels of ``-sum_c y_c log p_c``: shape (B,)."""
    prob = tf.clip_by_value(tf.cast(prob, tf.float32), EPS, 1.0)
    y_true = tf.cast(y_true, tf.float32)
    nll = -tf.reduce_sum(y_true * tf.math.log(prob), axis=-1)
    return tf.reduce_mean(nll, axis=[1, 2])


def per_example_loss(outputs: dict, y_true, lam: float = 0.0):
    """``(1-lam) f + lam g`` per example (B,); ``f`` only when there is no ``"crf"`` output."""
    f = pixel_nll(y_true, outputs["net"])
    if "crf" not in outputs or outputs["crf"] is None:
        return f
    g = pixel_nll(y_true, outputs["crf"])
    return (1.0 - lam) * f + lam * g


def l2_penalty(weights, l2: float, pixels: int):
    """``l2/2 * sum ||w||^2 / pixels`` (Zhu eq. 8 rescaled to a per-pixel mean data term)."""
    if not l2 or not weights:
        return tf.constant(0.0)
    total = tf.add_n([tf.reduce_sum(tf.square(tf.cast(w, tf.float32))) for w in weights])
    return l2_scale(l2, pixels) * total


def l2_scale(l2: float, pixels: int) -> float:
    """The ``keras.regularizers.L2`` factor of Zhu's ``l2``: ``l2 / 2 / pixels`` (see :func:`l2_penalty`)."""
    return 0.5 * float(l2) / float(pixels)


def regularized_layers(model) -> list:
    """Every layer of ``model`` (nested models included) with a ``kernel`` and a ``kernel_regularizer``.

    These are Keras's convolutions, transposed convolutions and dense layers; biases, the
    PositionPrior, the CRF and UnaryFusion weights have no such attribute and are never regularised.
    """
    found, stack = [], list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop(0)
        if hasattr(layer, "layers") and isinstance(layer, keras.Model):
            stack[:0] = list(layer.layers)
            continue
        if hasattr(layer, "kernel_regularizer") and getattr(layer, "kernel", None) is not None:
            found.append(layer)
    return found


def attach_kernel_l2(model, l2: float, pixels: int) -> list:
    """Set ``kernel_regularizer = L2(l2_scale(l2, pixels))`` on every kernel of a built ``model``.

    Zhu eq. (8) on the kernels only: the regulariser is set both on the layer (so it is in the
    layer's config and travels with a saved network) and on the built kernel variable (so that
    ``model.losses`` includes it now). ``l2 = 0`` leaves the model unchanged. Returns the layers.

    Args:
        model: a built Keras model.
        l2: Zhu's lambda, relative to the per-image pixel-summed NLL (>= 0).
        pixels: pixels per image (``H * W``) of the per-pixel mean data term.

    Example:

    >>> import keras
    >>> from kerasseg.training.losses import attach_kernel_l2
    >>> x = keras.Input((4, 4, 1))
    >>> net = keras.Model(x, keras.layers.Conv2D(2, 3)(x))
    >>> [layer.name for layer in attach_kernel_l2(net, 0.5, 16)] == [net.layers[1].name]
    True
    >>> len(net.losses)
    1
    """
    if not l2:
        return []
    found = regularized_layers(model)
    for layer in found:
        reg = keras.regularizers.L2(l2_scale(l2, pixels))
        layer.kernel_regularizer = reg
        layer.kernel.regularizer = reg
    return found


def global_batch_size(local_batch):
    """The number of examples in this step over all replicas (exact for uneven batches)."""
    local = tf.cast(local_batch, tf.float32)
    ctx = tf.distribute.get_replica_context()
    if ctx is None or tf.distribute.get_strategy().num_replicas_in_sync == 1:
        return local
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, local)


def scale_for_replicas(per_example, global_batch):
    """``sum(per_example) / global_batch``: summing this over replicas gives the batch mean."""
    return tf.reduce_sum(per_example) / tf.maximum(global_batch, 1.0)
