"""``UnaryFusion``: learned fusion of several networks' class log-probabilities (Zhu et al. 2018, Sec. 3).

The CRF unary of ``multifcn``: ``psi_u = sum_u' w(u') psi_u'`` over the four FCNs.
"""

from __future__ import annotations

import keras
from keras import ops

from kerasseg.errors import KerassegError


@keras.saving.register_keras_serializable(package="kerasseg")
class UnaryFusion(keras.layers.Layer):
    """Learned fusion of several networks' class log-probabilities (Zhu Sec. 3).

    Returns ``sum_u w[u, c] * log_softmax(logits_u)[..., c]`` with one trainable weight per
    input and class, initialised to ``1 / n`` (so it starts as the log of the geometric mean of
    the inputs' probabilities). The weights are not L2-regularised (Zhu's eq. 8 is on kernels).

    Args:
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``, ...).

    Input shape:
        A list of ``n >= 1`` logits tensors, each ``(batch, H, W, C)``.

    Output shape:
        ``(batch, H, W, C)`` fused log-probabilities.

    Example:

    >>> import numpy as np
    >>> from kerasseg.layers.fusion import UnaryFusion
    >>> logits = [np.zeros((1, 4, 4, 2), "float32"), np.ones((1, 4, 4, 2), "float32")]
    >>> out = UnaryFusion()(logits)
    >>> tuple(out.shape), bool(np.allclose(out, np.log(0.5)))
    ((1, 4, 4, 2), True)
    """

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) < 1 or not isinstance(
            input_shape[0], (list, tuple)
        ):
            raise KerassegError("UnaryFusion expects a list of logits tensors")
        n = len(input_shape)
        classes = input_shape[0][-1]
        self.fusion_weights = self.add_weight(
            name="fusion_weights",
            shape=(n, classes),
            initializer=keras.initializers.Constant(1.0 / n),
            trainable=True,
        )

    def call(self, inputs):
        out = 0.0
        for u, logits in enumerate(inputs):
            logp = ops.log_softmax(logits, axis=-1)
            out = out + logp * ops.cast(self.fusion_weights[u], logp.dtype)
        return out

    def compute_output_shape(self, input_shape):
        return input_shape[0]
