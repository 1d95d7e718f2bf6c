"""Shared helpers for the export tests (no tests here): a small Contract-3 model and a reference normaliser."""

import numpy as np


class ImageNormalizer:
    """Per-image zero-mean/unit-std normaliser with a TF form (stand-in with the Normalizer's interface)."""

    mode = "image"
    enhancement = "none"

    def get_config(self):
        return {"mode": self.mode, "enhancement": self.enhancement}

    def tf_normalize(self, x):
        import tensorflow as tf

        mean = tf.reduce_mean(x, axis=[-2, -1], keepdims=True)
        std = tf.math.reduce_std(x, axis=[-2, -1], keepdims=True)
        return (x - mean) / tf.maximum(std, 1e-6)


def numpy_normalize(images):
    """Independent float64 reference of ImageNormalizer."""
    x = np.asarray(images, np.float64)
    mean = x.mean(axis=(-2, -1), keepdims=True)
    std = np.maximum(x.std(axis=(-2, -1), keepdims=True), 1e-6)
    return (x - mean) / std


def tiny_model(size=40, crf=True, seed=0):
    """Functional model: image (B,S,S,1) -> {"net", "crf"} probabilities (B,S,S,2).

    A fixed 1x1 path makes bright pixels 'mass' (so masks are non-trivial); a random 3x3 path with
    dropout makes inference mode matter.
    """
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 1), name="image")
    fixed = keras.layers.Conv2D(2, 1, name="fixed")(inp)
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    h = keras.layers.Dropout(0.5)(h)
    h = keras.layers.Conv2D(2, 3, padding="same")(h)
    logits = keras.layers.Add()([fixed, h])
    outputs = {"net": keras.layers.Softmax(name="net")(logits)}
    if crf:
        outputs["crf"] = keras.layers.Softmax(name="crf")(keras.layers.Rescaling(2.0)(logits))
    model = keras.Model(inp, outputs)
    model.get_layer("fixed").set_weights([np.array([[[[0.0, 3.0]]]], np.float32), np.array([0.0, -1.0], np.float32)])
    return model


def keras_reference(model, images, final="crf"):
    """Keras pipeline: float64 normalisation, model in inference mode, final mass probability."""
    x = numpy_normalize(images).astype(np.float32)[..., None]
    out = model(x, training=False)
    return np.asarray(out[final])[..., 1]
