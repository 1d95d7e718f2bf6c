"""Position prior of Zhu et al. 2018, eq. (6).

``P(y_i | I) ∝ w_i P_fcn(y_i | I)``: the empirical, position-dependent mass
frequency ``w_i`` multiplies the network's class probability. In logit space
this is an image-sized bias added before the softmax::

    logits[..., 1] += log(rate)        # mass
    logits[..., 0] += log(1 - rate)    # background

``rate`` is the per-pixel mass frequency of the TRAIN masks, smoothed with a
Gaussian and clipped away from 0 and 1 (:func:`prior_from_masks`). The bias is
a trainable weight initialised from that map.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops
from scipy import ndimage

from kerasseg.errors import KerassegError

#: rates are clipped to [RATE_EPS, 1 - RATE_EPS] so both logs stay finite
RATE_EPS = 1e-3


def prior_from_masks(masks, sigma: float = 1.0, eps: float = RATE_EPS) -> np.ndarray:
    """Per-pixel mass frequency of binary masks ``(N, H, W)``.

    The mean over images is smoothed with ``scipy.ndimage.gaussian_filter``
    (``sigma`` pixels, ``mode="nearest"``; ``sigma=0`` disables smoothing) and
    clipped to ``[eps, 1 - eps]``. Returns a float32 ``(H, W)`` map.
    Use the TRAIN split only.

    Example:

    >>> import numpy as np
    >>> masks = np.zeros((4, 8, 8), np.uint8)
    >>> masks[:, 2:6, 2:6] = 1
    >>> rate = prior_from_masks(masks, sigma=0)
    >>> float(rate[3, 3]), float(rate[0, 0])
    (0.9990000128746033, 0.0010000000474974513)
    """
    m = np.asarray(masks)
    if m.ndim != 3 or m.shape[0] < 1 or m.shape[1] < 1 or m.shape[2] < 1:
        raise KerassegError(f"prior masks must have shape (N, H, W) with N >= 1; got {m.shape}")
    if not np.isin(m, (0, 1)).all():
        raise KerassegError("prior masks must be binary (values 0/1)")
    if not (np.isfinite(sigma) and sigma >= 0):
        raise KerassegError(f"prior sigma must be a finite number >= 0; got {sigma}")
    if not (0 < eps < 0.5):
        raise KerassegError(f"prior eps must be in (0, 0.5); got {eps}")
    rate = m.astype(np.float64).mean(axis=0)
    if sigma > 0:
        rate = ndimage.gaussian_filter(rate, sigma=sigma, mode="nearest")
    return np.clip(rate, eps, 1.0 - eps).astype(np.float32)


def check_rate(rate) -> np.ndarray:
    r = np.asarray(rate, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] < 1 or r.shape[1] < 1:
        raise KerassegError(f"position prior must be an (H, W) map; got shape {r.shape}")
    if not np.isfinite(r).all() or r.min() <= 0.0 or r.max() >= 1.0:
        raise KerassegError(
            "position prior values must be mass rates strictly between 0 and 1 "
            f"(got min {r.min():.3g}, max {r.max():.3g}); build it with prior_from_masks()"
        )
    return r


@keras.saving.register_keras_serializable(package="kerasseg")
class PositionPrior(keras.layers.Layer):
    """Adds a trainable image-sized log-prior to 2-class logits (B, H, W, 2).

    Args:
        rate: (H, W) mass frequency in (0, 1), e.g. from :func:`prior_from_masks`.
            Initial bias: channel 0 = log(1 - rate), channel 1 = log(rate).
        trainable: whether the bias is learned (default True, as in Zhu et al.).

    The initial map is part of ``get_config`` (a nested list), so a layer rebuilt
    from its config starts from the same bias; saved weights then restore the
    trained values.

    Input shape:
        ``(batch, H, W, 2)`` logits.

    Output shape:
        ``(batch, H, W, 2)``: the logits plus the (trainable) log-prior bias.

    Example:

    >>> import numpy as np
    >>> layer = PositionPrior(np.full((4, 4), 0.25, np.float32))
    >>> out = layer(np.zeros((1, 4, 4, 2), np.float32))
    >>> np.allclose(out[0, 0, 0], [np.log(0.75), np.log(0.25)])
    True
    """

    def __init__(self, rate, trainable: bool = True, **kwargs):
        super().__init__(trainable=trainable, **kwargs)
        r = check_rate(rate)
        self._rate = r.astype(np.float32)
        self.bias = None

    @property
    def rate(self) -> np.ndarray:
        """The initial (H, W) mass rate map."""
        return self._rate

    def initial_bias(self) -> np.ndarray:
        """(H, W, 2) float32: [log(1 - rate), log(rate)]."""
        r = self._rate.astype(np.float64)
        return np.stack([np.log1p(-r), np.log(r)], axis=-1).astype(np.float32)

    def build(self, input_shape):
        h, w = self._rate.shape
        if len(input_shape) != 4 or tuple(input_shape[1:]) != (h, w, 2):
            raise KerassegError(
                f"position prior of size {h}x{w} needs logits of shape (B, {h}, {w}, 2); "
                f"got {tuple(input_shape)}"
            )
        self.bias = self.add_weight(
            name="bias",
            shape=(h, w, 2),
            initializer=keras.initializers.Constant(self.initial_bias()),
            trainable=True,
        )

    def call(self, logits):
        return logits + ops.cast(self.bias, logits.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        cfg = super().get_config()
        cfg["rate"] = self._rate.tolist()
        return cfg
