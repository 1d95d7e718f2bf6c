"""Preprocessing layers: raw ROI crop -> the network's input, inside the saved model.

Every kerasseg model that is saved, evaluated, exported or served starts with an
:class:`ImagePreprocessor` (the role keras-hub's image converters play): a raw crop of any size
goes in, the network's normalised ``size x size`` input comes out. Training runs the same layer
once over the training ROIs (:meth:`ImagePreprocessor.adapt` + a call), so fit, evaluate, predict
and TF Serving see the same pixels. The ops are the ones of :mod:`kerasseg.data.transforms`
(core TensorFlow only; ``data prepare`` resizes with the same function).

The three steps:

1. :class:`Resize` - bicubic with anti-aliasing to the model size (identity at that size).
2. :class:`Enhance` - ``"none"``, ``"clahe"`` (contrast-limited adaptive histogram equalisation,
   as ``skimage.exposure.equalize_adapthist``) or ``"histeq"`` (``equalize_hist``), each on the
   ROI scaled to [0, 1].
3. :class:`Normalize` - ``"image"`` (zero mean, unit std per image), ``"position"`` (Zhu et al.
   2018: per pixel position, the mean/std maps of the training ROIs stored as non-trainable
   weights) or ``"none"``.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from kerasseg.data import transforms
from kerasseg.errors import KerassegError

ENHANCEMENTS = ("none", "clahe", "histeq")
NORMALIZATIONS = ("image", "position", "none")
EPS = 1e-6  # floor of every standard deviation (constant images normalise to 0)


def _grey4(x):
    """(B, H, W) or (B, H, W, 1) -> float32 (B, H, W)."""
    x = tf.cast(x, tf.float32)
    if x.shape.rank == 4:
        x = x[..., 0]
    return x


@keras.saving.register_keras_serializable(package="kerasseg")
class Resize(keras.layers.Layer):
    """Resize grey ROI crops to ``size x size`` (bicubic, anti-aliased when shrinking).

    Args:
        size: the model's ROI side S.
        interpolation: ``"bicubic"`` (images) or ``"bilinear"``.

    Input shape:
        ``(batch, height, width, 1)``, any height and width.

    Output shape:
        ``(batch, size, size, 1)`` float32; unchanged values when the input is already S x S.

    Example:

    >>> Resize(40)(np.zeros((2, 57, 71, 1), "float32")).shape
    TensorShape([2, 40, 40, 1])
    """

    def __init__(self, size=40, interpolation="bicubic", **kwargs):
        super().__init__(**kwargs)
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 8:
            raise KerassegError(f"Resize size must be an integer >= 8, got {size!r}")
        if interpolation not in ("bicubic", "bilinear"):
            raise KerassegError(f"Resize interpolation must be 'bicubic' or 'bilinear', got {interpolation!r}")
        self.size = int(size)
        self.interpolation = interpolation

    def call(self, x):
        out = transforms.resize(_grey4(x), self.size, method=self.interpolation)
        # with an unknown input size the resize is a tf.cond; its result is always S x S
        return tf.ensure_shape(out, [None, self.size, self.size])[..., None]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size, self.size, 1)

    def get_config(self):
        return {**super().get_config(), "size": self.size, "interpolation": self.interpolation}


@keras.saving.register_keras_serializable(package="kerasseg")
class Enhance(keras.layers.Layer):
    """Contrast enhancement of S x S grey ROIs.

    Args:
        method: ``"none"`` (values unchanged), ``"clahe"`` or ``"histeq"`` (both on the ROI
            scaled to [0, 1]; output in [0, 1]).
        clip_limit: CLAHE clip limit (fraction of a region's pixels), in (0, 1].
        kernel_size: CLAHE region side in pixels (``None``: 1/8 of the ROI side, as scikit-image).
        nbins: histogram bins of both equalisers.

    Input shape:
        ``(batch, S, S, 1)`` with S known when the model is built.

    Output shape:
        Same as the input, float32.

    Example:

    >>> x = np.random.default_rng(0).random((1, 40, 40, 1)).astype("float32")
    >>> y = Enhance("clahe")(x)
    >>> float(y.numpy().min()) >= 0.0 and float(y.numpy().max()) <= 1.0
    True
    """

    def __init__(self, method="none", clip_limit=0.01, kernel_size=None, nbins=256, **kwargs):
        super().__init__(**kwargs)
        if method not in ENHANCEMENTS:
            raise KerassegError(f"unknown enhancement {method!r}; choose one of {list(ENHANCEMENTS)}")
        try:
            clip = float(clip_limit)
        except (TypeError, ValueError):
            clip = float("nan")
        if not (0.0 < clip <= 1.0):
            raise KerassegError(f"clahe clip_limit must be in (0, 1], got {clip_limit!r}")
        if kernel_size is not None and (isinstance(kernel_size, bool)
                                        or not isinstance(kernel_size, (int, np.integer)) or kernel_size < 2):
            raise KerassegError(f"clahe kernel_size must be an integer >= 2, got {kernel_size!r}")
        if isinstance(nbins, bool) or not isinstance(nbins, (int, np.integer)) or nbins < 2:
            raise KerassegError(f"nbins must be an integer >= 2, got {nbins!r}")
        self.method = method
        self.clip_limit = clip
        self.kernel_size = None if kernel_size is None else int(kernel_size)
        self.nbins = int(nbins)

    def call(self, x):
        g = _grey4(x)
        if self.method == "none":
            return g[..., None]
        g = transforms.scale01(g)
        if self.method == "clahe":
            out = transforms.clahe(g, clip_limit=self.clip_limit, kernel_size=self.kernel_size,
                                   nbins=self.nbins)
        else:
            out = transforms.equalize_hist(g, nbins=self.nbins)
        return tf.cast(out, tf.float32)[..., None]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "method": self.method, "clip_limit": self.clip_limit,
                "kernel_size": self.kernel_size, "nbins": self.nbins}


@keras.saving.register_keras_serializable(package="kerasseg")
class Normalize(keras.layers.Layer):
    """Intensity normalisation of S x S grey ROIs.

    Args:
        mode: ``"image"`` (per image: zero mean, unit population std floored at 1e-6 times the
            image's largest absolute value; independent of the intensity scale, finite for any
            finite input),
            ``"position"`` (subtract the per-pixel mean map, divide by the std map; both from
            :meth:`adapt` on the TRAIN ROIs and stored as non-trainable weights) or ``"none"``.

    Input shape:
        ``(batch, S, S, 1)``.

    Output shape:
        Same as the input, float32.

    Example:

    >>> norm = Normalize("position")
    >>> norm.adapt(np.random.default_rng(0).random((8, 40, 40, 1)).astype("float32"))
    >>> tuple(norm.mean.shape)
    (40, 40)
    """

    def __init__(self, mode="image", **kwargs):
        super().__init__(**kwargs)
        if mode not in NORMALIZATIONS:
            raise KerassegError(f"unknown normalisation mode {mode!r}; choose one of {list(NORMALIZATIONS)}")
        self.mode = mode
        self.mean = self.std = None
        self.adapted = mode != "position"

    def build(self, input_shape):
        if self.mode == "position":
            h, w = input_shape[1], input_shape[2]
            if h is None or w is None:
                raise KerassegError("position normalisation needs a fixed ROI size (resize first)")
            self.mean = self.add_weight(name="mean", shape=(h, w), initializer="zeros", trainable=False)
            self.std = self.add_weight(name="std", shape=(h, w), initializer="ones", trainable=False)

    def adapt(self, images):
        """Fit the position mean/std maps on ``images`` (N, S, S, 1), the training ROIs after
        enhancement (float64 statistics, population std floored at 1e-6). Other modes need none."""
        x = np.asarray(images, dtype=np.float64)
        if x.ndim == 3:
            x = x[..., None]
        if len(x) == 0:
            raise KerassegError("cannot fit the normalisation on an empty training set")
        if self.mode != "position":
            return
        if not self.built:
            self.build(x.shape)
        self.mean.assign(x[..., 0].mean(axis=0).astype(np.float32))
        self.std.assign(np.maximum(x[..., 0].std(axis=0), EPS).astype(np.float32))
        self.adapted = True

    def call(self, x):
        g = _grey4(x)
        if self.mode == "image":
            # computed on the image divided by its largest |value|: the squares cannot overflow
            # (ROIs scaled by 1e17 and more) nor vanish (1e-20 and less), and the result does not
            # depend on the intensity scale; the std floor is EPS of that scale
            scale = tf.reduce_max(tf.abs(g), axis=[1, 2], keepdims=True)
            g = g / tf.where(scale > 0, scale, tf.ones_like(scale))
            mean = tf.reduce_mean(g, axis=[1, 2], keepdims=True)
            var = tf.reduce_mean(tf.square(g - mean), axis=[1, 2], keepdims=True)
            g = (g - mean) / tf.maximum(tf.sqrt(var), EPS)
        elif self.mode == "position":
            g = (g - tf.cast(self.mean, tf.float32)) / tf.cast(self.std, tf.float32)
        return g[..., None]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="kerasseg")
class ImagePreprocessor(keras.layers.Layer):
    """Raw ROI crop -> the network input: :class:`Resize`, :class:`Enhance`, :class:`Normalize`.

    Args:
        size: the model's ROI side S.
        enhancement: ``"none"``, ``"clahe"`` or ``"histeq"``.
        normalization: ``"image"``, ``"position"`` or ``"none"``.
        clahe_clip_limit: CLAHE clip limit.
        clahe_kernel_size: CLAHE region side (``None``: S // 8).

    Input shape:
        ``(batch, height, width, 1)`` raw intensities, any height and width.

    Output shape:
        ``(batch, S, S, 1)`` float32.

    Example:

    >>> pre = ImagePreprocessor(40, enhancement="clahe", normalization="position")
    >>> rois = np.random.default_rng(0).random((8, 40, 40)).astype("float32") * 4000
    >>> pre.adapt(rois)
    >>> pre(np.ones((1, 73, 90, 1), "float32")).shape
    TensorShape([1, 40, 40, 1])
    """

    def __init__(self, size=40, enhancement="none", normalization="image", clahe_clip_limit=0.01,
                 clahe_kernel_size=None, **kwargs):
        super().__init__(**kwargs)
        self.resize = Resize(size, name="resize")  # validates size
        self.size = self.resize.size
        self.enhance = Enhance(enhancement, clip_limit=clahe_clip_limit, kernel_size=clahe_kernel_size,
                               name="enhance")
        self.normalize = Normalize(normalization, name="normalize")

    def build(self, input_shape):
        shape = (input_shape[0], self.size, self.size, 1)
        self.resize.build(input_shape)
        self.enhance.build(shape)
        if not self.normalize.built:
            self.normalize.build(shape)

    def enhanced(self, x):
        """Resize + enhancement (no normalisation)."""
        return self.enhance(self.resize(x))

    def enhanced_numpy(self, images, batch_size=256) -> np.ndarray:
        """Resize + enhancement of raw ROIs (N, H, W) -> (N, S, S, 1) float32 (batched calls)."""
        return _batched(self.enhanced, images, batch_size, self.size)

    def adapt(self, images, batch_size=256):
        """Fit the normalisation statistics on the TRAIN ROIs ``images`` (N, H, W) or (N, H, W, 1)."""
        self.adapt_transform(images, batch_size)

    def adapt_transform(self, images, batch_size=256) -> np.ndarray:
        """:meth:`adapt` on ``images`` and return their network inputs (N, S, S, 1), with the
        enhancement computed once (what :meth:`transform` would give after :meth:`adapt`)."""
        e = self.enhanced_numpy(images, batch_size)
        if not self.built:
            self.build((None, None, None, 1))
        self.normalize.adapt(e)
        return _batched(self.normalize, e, batch_size, self.size)

    def transform(self, images, batch_size=256) -> np.ndarray:
        """The network inputs (N, S, S, 1) float32 of raw ROIs (N, H, W) (batched calls)."""
        return _batched(self, images, batch_size, self.size)

    def call(self, x):
        return self.normalize(self.enhance(self.resize(x)))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size, self.size, 1)

    @property
    def mode(self):
        return self.normalize.mode

    @property
    def enhancement(self):
        return self.enhance.method

    def get_config(self):
        return {**super().get_config(), "size": self.size, "enhancement": self.enhance.method,
                "normalization": self.normalize.mode, "clahe_clip_limit": self.enhance.clip_limit,
                "clahe_kernel_size": self.enhance.kernel_size}


def _batched(fn, images, batch_size, size) -> np.ndarray:
    """``fn`` over ``images`` in batches of ``batch_size``; (N, size, size, 1) float32."""
    x = _as_batch(images)
    if len(x) == 0:
        return np.zeros((0, size, size, 1), np.float32)
    return np.concatenate([np.asarray(fn(x[i:i + batch_size])) for i in range(0, len(x), batch_size)])


def _as_batch(images) -> np.ndarray:
    """(N, H, W) or (N, H, W, 1) finite numbers -> float32 (N, H, W, 1)."""
    try:
        x = np.asarray(images, dtype=np.float32)
    except (TypeError, ValueError):
        raise KerassegError("images must be a numeric array") from None
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] != 1:
        raise KerassegError(f"images must have shape (N, H, W) or (N, H, W, 1), got {x.shape}")
    if x.size and not np.all(np.isfinite(x)):
        raise KerassegError("images contain NaN or infinite values")
    return x
