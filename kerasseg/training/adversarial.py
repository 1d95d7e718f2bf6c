"""The fast gradient method of Zhu et al. 2018 (eq. 7): the adversarial input perturbation.

``r = epsilon * g / ||g||_2`` with ``g = dL(x, y)/dx`` and the norm taken per example.
:class:`kerasseg.training.segmentation_model.SegmentationModel` adds the loss at
``x + stop_gradient(r)`` to its training step when ``adversarial=True``.
"""

from __future__ import annotations

import tensorflow as tf


def fgm_perturbation(grad, epsilon):
    """``epsilon * g / ||g||_2`` with the norm taken per example (over all but axis 0).

    A zero gradient gives a zero perturbation (no NaN). The gradient is first divided by its
    per-example max-abs value so tiny gradients do not underflow when squared.

    Args:
        grad: input gradient ``dL/dx``, shape ``(batch, ...)``.
        epsilon: L2 norm of each example's perturbation.

    Returns:
        float32 tensor of ``grad``'s shape.

    Example:

    >>> import numpy as np
    >>> r = fgm_perturbation(np.array([[3.0, 4.0], [0.0, 0.0]], "float32"), 0.5)
    >>> bool(np.allclose(r, [[0.3, 0.4], [0.0, 0.0]]))
    True
    """
    grad = tf.cast(grad, tf.float32)
    axes = list(range(1, len(grad.shape)))
    scale = tf.reduce_max(tf.abs(grad), axis=axes, keepdims=True)
    g = tf.math.divide_no_nan(grad, scale)
    norm = tf.sqrt(tf.reduce_sum(tf.square(g), axis=axes, keepdims=True))
    return float(epsilon) * tf.math.divide_no_nan(g, norm)

