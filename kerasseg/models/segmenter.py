"""The segmenter: one Keras model from a raw ROI crop to the class probabilities.

``build_segmenter(network, preprocessor)`` puts an :class:`~kerasseg.layers.ImagePreprocessor`
in front of a Contract-3 network (whose input is the normalised S x S ROI). This is the model that
training saves (``model.keras``), evaluation and predict run, and export wraps for TF Serving, so
every path computes the same graph from the same raw pixels.

Input ``image`` float32 ``(batch, height, width, 1)`` of raw intensities, any height and width;
outputs the network's dict ``{"net": ...}`` or ``{"net": ..., "crf": ...}`` of (batch, S, S, 2)
probabilities.
"""

from __future__ import annotations

import keras

from kerasseg.errors import KerassegError
from kerasseg.layers.preprocessing import ImagePreprocessor

PREPROCESSOR = "preprocessor"


def network_size(network) -> int:
    """The square input side S of a Contract-3 network ``(batch, S, S, 1)``."""
    shape = network.inputs[0].shape
    if len(shape) != 4 or shape[3] != 1 or shape[1] is None or shape[1] != shape[2]:
        raise KerassegError(f"model '{network.name}' input must be (batch, S, S, 1), got {tuple(shape)}")
    return int(shape[1])


def build_segmenter(network, preprocessor: ImagePreprocessor | None = None, name=None) -> keras.Model:
    """``raw crop -> preprocessor -> network`` as one functional model (weights shared with ``network``).

    Args:
        network: a Contract-3 model (:func:`kerasseg.models.build_model`).
        preprocessor: the fitted preprocessing; ``None`` resizes only (the network's input is
            then taken as already normalised).
        name: model name (default ``"<network name>_segmenter"``).

    Input shape:
        ``image``: ``(batch, height, width, 1)`` float32 raw intensities, any height and width.

    Output shape:
        the network's dict of ``(batch, S, S, 2)`` class probabilities.

    Example:

    >>> import numpy as np
    >>> from kerasseg.models import build_model
    >>> seg = build_segmenter(build_model("unet", filters=(4, 8)))
    >>> out = seg(np.random.rand(2, 57, 71, 1).astype("float32"))
    >>> tuple(out["net"].shape)
    (2, 40, 40, 2)
    """
    size = network_size(network)
    if preprocessor is None:
        preprocessor = ImagePreprocessor(size, enhancement="none", normalization="none",
                                         name=PREPROCESSOR)
    if preprocessor.size != size:
        raise KerassegError(f"preprocessor size {preprocessor.size} differs from the network input {size}")
    image = keras.Input(shape=(None, None, 1), dtype="float32", name="image")
    outputs = network(preprocessor(image))
    return keras.Model(image, outputs, name=name or f"{network.name}_segmenter")


def get_preprocessor(model) -> ImagePreprocessor | None:
    """The :class:`ImagePreprocessor` of a segmenter, ``None`` for a bare network."""
    for layer in model.layers:
        if isinstance(layer, ImagePreprocessor):
            return layer
    return None


def get_network(model) -> keras.Model:
    """The Contract-3 network inside a segmenter (the model itself for a bare network)."""
    if get_preprocessor(model) is None:
        return model
    nets = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(nets) != 1:
        raise KerassegError(f"model '{model.name}' is not a kerasseg segmenter")
    return nets[0]


def as_segmenter(model) -> keras.Model:
    """``model`` if it is a segmenter, else a bare network wrapped with the resize-only preprocessor."""
    return model if get_preprocessor(model) is not None else build_segmenter(model)


def model_size(model) -> int:
    """The ROI side S a segmenter (or a bare network) computes at."""
    pre = get_preprocessor(model)
    return pre.size if pre is not None else network_size(model)


def quiet_own_retracing() -> None:
    """Drop TensorFlow's "N out of the last M calls to <function ...> triggered tf.function
    retracing" warning for kerasseg's own inference graphs.

    Every :func:`segment_function` / ensemble graph is a new ``tf.function`` with a fixed input
    signature, built once per model and traced once; TensorFlow groups closures by their code, so
    scoring several models in a row (the folds of ``fit --folds``, ``reproduce``) looks to it like
    one function retraced, and it warns about a cost that is not there. The same holds for Keras's
    train/test step functions when one process trains several models (each model builds its own,
    from tf.data pipelines of fixed shapes). Other functions' warnings are kept. Idempotent.
    """
    import logging

    logger = logging.getLogger("tensorflow")
    if any(isinstance(f, _OwnRetracingFilter) for f in logger.filters):
        return
    logger.addFilter(_OwnRetracingFilter())


class _OwnRetracingFilter:
    """A ``logging`` filter (see :func:`quiet_own_retracing`)."""

    from kerasseg.keras_private import RETRACING_CLOSURES

    NAMES = ("segment_function.<locals>", "ensemble_function.<locals>", "boxes_function.<locals>",
             *RETRACING_CLOSURES)

    def filter(self, record) -> bool:
        msg = record.getMessage()
        return not ("triggered tf.function retracing" in msg and any(n in msg for n in self.NAMES))


def segment_function(model):
    """The one inference graph of kerasseg, as a ``tf.function`` of raw crops.

    ``fn(image float32 (B, h, w)) -> {"probability": float32 (B, h, w), "mask": uint8 (B, h, w)}``:
    the segmenter in inference mode (its preprocessing, the network, the CRF), the final output's
    mass probability resized back to the crop size (bilinear, :func:`kerasseg.data.transforms.resize`;
    identity at the model size), clipped to [0, 1], and the one threshold
    (:func:`kerasseg.layers.postprocessing.binarize`). Evaluation, ``predict`` and every signature of the
    exported SavedModel run this function, so they compute the same numbers.
    """
    import tensorflow as tf

    from kerasseg.data import transforms
    from kerasseg.models.registry import final_key
    from kerasseg.layers.postprocessing import binarize

    model = as_segmenter(model)
    key = final_key(model)
    quiet_own_retracing()

    @tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.float32, name="image")])
    def segment(image):
        hw = tf.shape(image)[1:3]
        out = model(image[..., tf.newaxis], training=False)
        prob = tf.cast(out[key], tf.float32)[..., 1]
        prob = tf.clip_by_value(transforms.resize(prob, hw, method="bilinear"), 0.0, 1.0)
        return {"probability": prob, "mask": binarize(prob)}

    segment.model = model
    segment.final_key = key
    return segment


def predict_probability(model, images, batch_size=32, progress=False):
    """Mass probabilities (N, h, w) float32 of raw crops (N, h, w) through :func:`segment_function`."""
    import numpy as np

    fn = model if hasattr(model, "final_key") and hasattr(model, "model") else segment_function(model)
    x = np.asarray(images, np.float32)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3:
        raise KerassegError(f"images must be (N, H, W), got shape {x.shape}")
    starts = range(0, len(x), batch_size)
    if progress and len(x) > batch_size:
        from tqdm import tqdm

        starts = tqdm(starts, desc="predict", unit="batch")
    probs = [fn(x[i:i + batch_size])["probability"].numpy() for i in starts]
    return np.concatenate(probs) if probs else np.zeros(x.shape, np.float32)
