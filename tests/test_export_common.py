"""Shared helpers for the export tests (no tests here): a small segmenter and float64 references."""

import numpy as np


def numpy_normalize(images):
    """Independent float64 reference of the per-image normalisation."""
    x = np.asarray(images, np.float64)
    mean = x.mean(axis=(-2, -1), keepdims=True)
    std = np.maximum(x.std(axis=(-2, -1), keepdims=True), 1e-6)
    return (x - mean) / std


def tiny_model(size=40, crf=True, seed=0):
    """Functional Contract-3 network: image (B,S,S,1) -> {"net", "crf"} probabilities (B,S,S,2).

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
    model = keras.Model(inp, outputs, name="tiny")
    model.get_layer("fixed").set_weights([np.array([[[[0.0, 3.0]]]], np.float32), np.array([0.0, -1.0], np.float32)])
    return model


def tiny_segmenter(size=40, crf=True, seed=0, normalization="image", enhancement="none", train_images=None):
    """:func:`tiny_model` behind an ImagePreprocessor (adapted on ``train_images`` when given)."""
    from kerasseg.layers import ImagePreprocessor
    from kerasseg.models import build_segmenter

    pre = ImagePreprocessor(size, enhancement=enhancement, normalization=normalization, name="preprocessor")
    if train_images is not None:
        pre.adapt(train_images)
    return build_segmenter(tiny_model(size, crf, seed), pre)


def keras_reference(network, images, final="crf"):
    """float64 per-image normalisation of S x S ROIs, the network in inference mode, final mass probability."""
    x = numpy_normalize(images).astype(np.float32)[..., None]
    out = network(x, training=False)
    return np.asarray(out[final])[..., 1]
