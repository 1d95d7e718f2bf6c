"""Training-time metrics, tracked with Keras metric objects so ``fit`` prints true values."""

from __future__ import annotations

import keras
import tensorflow as tf


def dice_per_image(y_true, prob, threshold: float = 0.5):
    """Per-image Dice of ``prob[..., 1] > threshold`` against ``y_true[..., 1]``; (B,).

    An image with an empty mask and an empty prediction scores 1.
    """
    pred = tf.cast(tf.cast(prob, tf.float32)[..., 1] > threshold, tf.float32)
    true = tf.cast(tf.cast(y_true, tf.float32)[..., 1] > 0.5, tf.float32)
    inter = tf.reduce_sum(pred * true, axis=[1, 2])
    denom = tf.reduce_sum(pred, axis=[1, 2]) + tf.reduce_sum(true, axis=[1, 2])
    return tf.where(denom > 0, 2.0 * inter / tf.maximum(denom, 1.0), tf.ones_like(denom))


@keras.saving.register_keras_serializable(package="kerasseg")
class DiceScore(keras.metrics.Metric):
    """Mean per-image Dice over everything seen since the last reset."""

    def __init__(self, name="dice", threshold=0.5, **kwargs):
        super().__init__(name=name, **kwargs)
        self.threshold = float(threshold)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        d = dice_per_image(y_true, y_pred, self.threshold)
        self.total.assign_add(tf.reduce_sum(d))
        self.count.assign_add(tf.cast(tf.shape(d)[0], tf.float32))

    def result(self):
        return tf.math.divide_no_nan(self.total, self.count)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {"name": self.name, "threshold": self.threshold, "dtype": self.dtype}
