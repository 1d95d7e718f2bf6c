"""The one mask threshold and the one Dice of kerasseg, and the Keras metric that tracks it.

:data:`THRESHOLD` and :func:`binarize` decide what is mass everywhere (training metrics, model
selection, run.json, evaluation, predict and the exported serving graph): ``probability >= 0.5``.
:func:`dice_per_image` is the Dice used by all of them; it is written with ``keras.ops``, so it
takes NumPy arrays or tensors alike.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

# the one threshold is defined with the mask post-processing (the inference graph in models uses it)
from kerasseg.layers.postprocessing import THRESHOLD, binarize  # noqa: E402,F401


def dice_per_image(pred, true):
    """Per-image Dice ``2|P & T| / (|P| + |T|)`` of binary masks (B, H, W) -> (B,) float32.

    Any non-zero value is foreground. An image whose prediction and ground truth are both empty
    scores 1 (the prediction is right), exactly one empty scores 0.
    """
    p = ops.cast(ops.not_equal(pred, 0), "float32")
    t = ops.cast(ops.not_equal(true, 0), "float32")
    axes = tuple(range(1, len(p.shape)))
    inter = ops.sum(p * t, axis=axes)
    denom = ops.sum(p, axis=axes) + ops.sum(t, axis=axes)
    return ops.where(denom > 0, 2.0 * inter / ops.maximum(denom, 1.0), ops.ones_like(denom))


def dice_array(pred, true) -> np.ndarray:
    """:func:`dice_per_image` as a float64 NumPy array (N,) (empty for N = 0): per-ROI Dice for
    statistics, reports and the out-of-fold tables."""
    pred, true = np.asarray(pred), np.asarray(true)
    if len(pred) == 0:
        return np.zeros(0, np.float64)
    return np.asarray(dice_per_image(pred, true), np.float64)


def mean_dice(pred, true) -> float:
    """Mean of :func:`dice_per_image` over a stack of binary masks (a Python float)."""
    return float(np.mean(np.asarray(dice_per_image(np.asarray(pred), np.asarray(true)))))


@keras.saving.register_keras_serializable(package="kerasseg")
class DiceScore(keras.metrics.Metric):
    """Mean per-image Dice of ``binarize(y_pred[..., 1])`` against ``y_true[..., 1]``."""

    def __init__(self, name="dice", **kwargs):
        kwargs.pop("threshold", None)  # older configs stored it; there is one threshold now
        super().__init__(name=name, **kwargs)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        d = dice_per_image(binarize(ops.cast(y_pred, "float32")[..., 1]),
                           ops.greater(ops.cast(y_true, "float32")[..., 1], 0.5))
        self.total.assign_add(ops.sum(d))
        self.count.assign_add(ops.cast(ops.shape(d)[0], "float32"))

    def result(self):
        return ops.divide_no_nan(self.total, self.count)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}
