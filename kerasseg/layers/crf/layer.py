"""CRFRNN: dense-CRF mean-field inference as a Keras 3 layer (arguments, weights, mode -> backend)."""

from __future__ import annotations

import math
import numbers

import keras
import tensorflow as tf

from kerasseg.errors import KerassegError
from kerasseg.layers.crf.backend import KERNELS, GridOptions, LowRankOptions
from kerasseg.layers.crf.exact import ExactBackend
from kerasseg.layers.crf.grid import GridBackend
from kerasseg.layers.crf.lowrank import LowRankBackend

#: One name per form. ``"auto"``: lowrank up to ``lowrank_max_pixels``, grid above.
MODES = ("exact", "lowrank", "grid", "auto")

#: Old names of the grid form, still accepted (saved ``.keras`` files and configs); the layer
#: stores and writes ``"grid"``.
ALIASES = {"scalable": "grid", "filters": "grid"}

#: The backend factory of each form: called with the form's options (None for exact).
BACKENDS = {"exact": ExactBackend, "lowrank": LowRankBackend, "grid": GridBackend}

# Bandwidth key (handed to the backends) per layer argument.
_BANDWIDTHS = {"theta_spatial": "spatial", "theta_alpha": "alpha", "theta_beta": "beta",
               "theta_intensity": "intensity"}


def _is_real(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)


def resolve_mode(mode) -> str:
    """The form's one name for ``mode``: an alias (``"scalable"``, ``"filters"``) gives ``"grid"``.

    Raises:
        KerassegError: for anything else than :data:`MODES` and :data:`ALIASES`.

    Example:
        >>> from kerasseg.layers.crf.layer import resolve_mode
        >>> resolve_mode("scalable")
        'grid'
    """
    if isinstance(mode, str) and mode in ALIASES:
        return ALIASES[mode]
    if not isinstance(mode, str) or mode not in MODES:
        raise KerassegError(
            f"CRFRNN: mode={mode!r} is unknown; use one of {list(MODES)} "
            f"({' and '.join(repr(a) for a in ALIASES)} are old names of 'grid')"
        )
    return mode


def _backend_factory(name: str):
    factory = BACKENDS.get(name)
    if factory is None:
        raise KerassegError(
            f"CRFRNN: the {name!r} CRF backend is not available; "
            'use mode="exact" (inputs up to max_dense_pixels)'
        )
    return factory


@keras.saving.register_keras_serializable(package="kerasseg")
class CRFRNN(keras.layers.Layer):
    """Mean-field CRF-as-RNN layer: ``CRFRNN()([unary_logits, image]) -> probabilities``.

    Fully connected pairwise CRF (Kraehenbuehl & Koltun 2011) with mean-field inference unrolled as
    a recurrent network (Zheng et al. 2015; Zhu et al. 2018 eq. 2-5): ``Q <- softmax(U - mu .
    sum_k w_k m_k(Q))`` with one trainable weight ``w_k`` per kernel and a trainable C x C
    compatibility ``mu`` (Potts initialisation). The messages ``m_k`` are computed by one of three
    forms of the same mean field (the backends, :mod:`kerasseg.layers.crf.backend`).

    Defaults suit normalised (zero-mean, unit-std) intensities and 40x40 ROIs: the
    kernel row sums are about 55 (spatial, theta 3 px), 10-150 (bilateral) and up
    to ~900 (intensity, all 1600 pixels), so the small default weights give each
    kernel a pairwise term of a few logits, comparable to a confident unary.

    Args:
        iterations_train: mean-field iterations when called with ``training=True`` (Zhu: 5).
        iterations_test: iterations for inference (``training`` False or None; Zhu: 10).
        kernels: any non-empty subset of ``("spatial", "bilateral", "intensity")``.
        theta_spatial: smoothness-kernel bandwidth in pixels.
        theta_alpha: position bandwidth of the bilateral kernel, pixels.
        theta_beta: intensity bandwidth of the bilateral kernel (units of the image features).
        theta_intensity: bandwidth of the all-pairs intensity kernel (Zhu eq. 4: 1).
        spatial_weight, bilateral_weight, intensity_weight: initial kernel weights w_k
            (one trainable scalar per kernel, shared by all class pairs; the class
            dependence is carried by the compatibility matrix).
        trainable_bandwidths: learn the bandwidths (as log-bandwidth weights; ``mode="exact"`` only).
        trainable_compatibility: learn the C x C compatibility (initialised to Potts).
        mode: ``"auto"`` (default; low-rank up to ``lowrank_max_pixels``, grid above, exact for
            multi-channel images, whose features the two fast forms do not take), ``"exact"`` (dense
            (P, P) kernels, the reference), ``"lowrank"`` (factorised kernels) or ``"grid"``
            (linear-cost filtering). ``"scalable"`` and ``"filters"`` are old names of ``"grid"``.
        max_dense_pixels: largest H*W the exact form accepts.
        lowrank_max_pixels: largest H*W for which ``"auto"`` uses the low-rank form
            (the two fast forms cost the same near 256x256 on CPU).
        lowrank_options: :class:`~kerasseg.layers.crf.backend.LowRankOptions` or a mapping of its
            fields (``spatial_rtol``, ``range_anchors``, ``range_spacing``); None: the defaults.
        grid_options: :class:`~kerasseg.layers.crf.backend.GridOptions` or a mapping of its fields
            (``truncate``, ``bilateral_*``, ``intensity_*``); None: the defaults.

    Input shape:
        A list ``[unary_logits, image]``: ``(batch, H, W, C)`` logits with C >= 2 and a
        ``(batch, H, W, F)`` image (F = 1 for the low-rank and grid forms). H, W, C and F must be
        known when the layer is built; the batch may be unknown.

    Output shape:
        ``(batch, H, W, C)`` per-pixel class probabilities.

    Example:
        >>> import keras
        >>> from kerasseg.layers import CRFRNN
        >>> x = keras.Input((40, 40, 1))
        >>> logits = keras.layers.Conv2D(2, 3, padding="same")(x)
        >>> probs = CRFRNN(kernels=("spatial", "bilateral"),
        ...                lowrank_options={"range_anchors": 24})([logits, x])
        >>> tuple(probs.shape)
        (None, 40, 40, 2)
        >>> CRFRNN(mode="scalable").mode  # an old name of the grid form
        'grid'
    """

    def __init__(
        self,
        iterations_train: int = 5,
        iterations_test: int = 10,
        kernels=("spatial", "bilateral"),
        theta_spatial: float = 3.0,
        theta_alpha: float = 5.0,
        theta_beta: float = 0.5,
        theta_intensity: float = 1.0,
        spatial_weight: float = 0.1,
        bilateral_weight: float = 0.05,
        intensity_weight: float = 0.002,
        trainable_bandwidths: bool = False,
        trainable_compatibility: bool = True,
        mode: str = "auto",
        max_dense_pixels: int = 4096,
        lowrank_max_pixels: int = 65536,
        lowrank_options=None,
        grid_options=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(kernels, str):
            kernels = (kernels,)
        kernels = tuple(str(k) for k in kernels)
        bad = [k for k in kernels if k not in KERNELS]
        if bad or not kernels or len(set(kernels)) != len(kernels):
            raise KerassegError(
                f"CRFRNN: kernels={list(kernels)!r} is invalid; "
                f"use a non-empty subset of {list(KERNELS)} without repeats"
            )
        for name, value in (("iterations_train", iterations_train), ("iterations_test", iterations_test)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise KerassegError(f"CRFRNN: {name}={value!r} must be an integer >= 0")
        for name in _BANDWIDTHS:
            value = locals()[name]
            if not _is_real(value) or value <= 0:
                raise KerassegError(f"CRFRNN: {name}={value!r} must be a positive number")
        for name, value in (
            ("spatial_weight", spatial_weight),
            ("bilateral_weight", bilateral_weight),
            ("intensity_weight", intensity_weight),
        ):
            if not _is_real(value):
                raise KerassegError(f"CRFRNN: {name}={value!r} must be a finite number")
        mode = resolve_mode(mode)
        for name, value in (("max_dense_pixels", max_dense_pixels), ("lowrank_max_pixels", lowrank_max_pixels)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise KerassegError(f"CRFRNN: {name}={value!r} must be a positive integer")
        if trainable_bandwidths and mode != "exact":
            raise KerassegError(
                f"CRFRNN: trainable_bandwidths=True needs mode='exact' (the {mode!r} form sizes its "
                "filtering grids from fixed bandwidths)"
            )
        self.iterations_train = int(iterations_train)
        self.iterations_test = int(iterations_test)
        self.kernels = kernels
        self.theta_spatial = float(theta_spatial)
        self.theta_alpha = float(theta_alpha)
        self.theta_beta = float(theta_beta)
        self.theta_intensity = float(theta_intensity)
        self.spatial_weight = float(spatial_weight)
        self.bilateral_weight = float(bilateral_weight)
        self.intensity_weight = float(intensity_weight)
        self.trainable_bandwidths = bool(trainable_bandwidths)
        self.trainable_compatibility = bool(trainable_compatibility)
        self.mode = mode
        self.max_dense_pixels = int(max_dense_pixels)
        self.lowrank_max_pixels = int(lowrank_max_pixels)
        self.lowrank_options = LowRankOptions.coerce(lowrank_options)
        self.grid_options = GridOptions.coerce(grid_options)
        if mode != "auto":
            _backend_factory(mode)  # a form that is not there fails here, not at the first call

    # ------------------------------------------------------------------ build
    def build(self, input_shape):
        unary_shape, image_shape = self._check_shapes(input_shape)
        self.num_classes = int(unary_shape[-1])
        init = {"spatial": self.spatial_weight, "bilateral": self.bilateral_weight,
                "intensity": self.intensity_weight}
        self.kernel_weights = self.add_weight(
            name="kernel_weights",
            shape=(len(self.kernels),),
            initializer=keras.initializers.Constant([init[k] for k in self.kernels]),
            trainable=True,
            dtype=self._var_dtype(),
        )
        c = self.num_classes
        potts = [[0.0 if a == b else 1.0 for b in range(c)] for a in range(c)]
        self.compatibility = self.add_weight(
            name="compatibility",
            shape=(c, c),
            initializer=keras.initializers.Constant(potts),
            trainable=self.trainable_compatibility,
            dtype=self._var_dtype(),
        )
        if self.trainable_bandwidths:
            self.log_bandwidths = {}
            for arg, key in _BANDWIDTHS.items():
                if self._uses_bandwidth(key):
                    self.log_bandwidths[key] = self.add_weight(
                        name=f"log_{arg}",
                        shape=(),
                        initializer=keras.initializers.Constant(math.log(getattr(self, arg))),
                        trainable=True,
                        dtype=self._var_dtype(),
                    )
        self._image_channels = int(image_shape[-1])

    def _var_dtype(self):
        return "float64" if self.variable_dtype == "float64" else "float32"

    def _uses_bandwidth(self, key):
        return {"spatial": "spatial" in self.kernels, "alpha": "bilateral" in self.kernels,
                "beta": "bilateral" in self.kernels, "intensity": "intensity" in self.kernels}[key]

    def _uses_image(self):
        return any(k in ("bilateral", "intensity") for k in self.kernels)

    def _check_shapes(self, input_shape):
        """Validate ``[unary_shape, image_shape]``; returns them (tuples)."""
        try:
            unary_shape, image_shape = input_shape
            unary_shape, image_shape = tuple(unary_shape), tuple(image_shape)
        except (TypeError, ValueError):
            raise KerassegError(
                f"CRFRNN: expected inputs [unary_logits, image], got shapes {input_shape!r}"
            ) from None
        if len(unary_shape) != 4 or len(image_shape) != 4:
            raise KerassegError(
                f"CRFRNN: unary {unary_shape} and image {image_shape} must both be 4-D (B, H, W, channels)"
            )
        h, w, c = unary_shape[1:]
        if h is None or w is None or c is None or image_shape[3] is None:
            raise KerassegError(
                f"CRFRNN: height, width and channels must be known when the layer is built, "
                f"got unary {unary_shape} and image {image_shape}"
            )
        if tuple(image_shape[1:3]) != (h, w):
            raise KerassegError(f"CRFRNN: unary {unary_shape} and image {image_shape} differ in height/width")
        if c < 2:
            raise KerassegError(f"CRFRNN: unary logits need >= 2 classes, got shape {unary_shape}")
        backend = self._backend_for(h * w, image_shape[3])
        if backend == "exact" and h * w > self.max_dense_pixels:
            raise KerassegError(
                f"CRFRNN: a {h}x{w} input ({h * w} pixels) exceeds the exact CRF limit "
                f"max_dense_pixels={self.max_dense_pixels} ({4 * h * w * h * w / 2**20:.0f} MiB per image "
                f"and kernel); use mode=\"auto\" (or mode=\"lowrank\", mode=\"grid\") with a one-channel "
                "image, or crop smaller ROIs"
            )
        if backend != "exact" and image_shape[3] != 1 and self._uses_image():
            raise KerassegError(
                f"CRFRNN: mode={self.mode!r} takes one-channel images for the {list(self.kernels)} kernels, "
                f"got image {image_shape}; use mode=\"exact\" for multi-channel features"
            )
        return unary_shape, image_shape

    def _backend_for(self, pixels, channels=1) -> str:
        """The form (``"exact"``, ``"lowrank"`` or ``"grid"``) that runs ``pixels`` pixels, ``channels`` channels."""
        if self.mode != "auto":
            return self.mode
        if channels > 1 and self._uses_image():
            return "exact"
        name = "lowrank" if pixels <= self.lowrank_max_pixels else "grid"
        _backend_factory(name)
        return name

    def backend(self, name: str):
        """The :class:`~kerasseg.layers.crf.backend.CRFBackend` of form ``name``, with this layer's options."""
        options = {"lowrank": self.lowrank_options, "grid": self.grid_options}.get(name)
        return _backend_factory(name)(options)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    # ------------------------------------------------------------- the kernels
    def _bandwidths(self, dtype):
        """Current bandwidths as scalar tensors (from the weights when trainable)."""
        out = {}
        for arg, key in _BANDWIDTHS.items():
            if self.trainable_bandwidths and key in getattr(self, "log_bandwidths", {}):
                out[key] = tf.exp(tf.cast(self.log_bandwidths[key], dtype))
            else:
                out[key] = tf.constant(getattr(self, arg), dtype)
        return out

    def _prepare(self, image):
        """Per-call state: ``(backend, state)`` with ``state = backend.prepare(image, ...)``."""
        h, w, f = image.shape[1], image.shape[2], image.shape[3]
        backend = self.backend(self._backend_for(h * w, f))
        return backend, backend.prepare(image, kernels=self.kernels, bandwidths=self._bandwidths(image.dtype))

    def _messages(self, q, image, prepared=None):
        """Per-kernel messages m_k[i] = sum_{j != i} k(f_i, f_j) q[j], each shaped like ``q``.

        ``q`` is (B, H, W, C), ``image`` (B, H, W, F). ``prepared`` is the result of
        :meth:`_prepare` (computed here when None) so a loop can reuse the kernels.
        """
        backend, state = self._prepare(image) if prepared is None else prepared
        return list(backend.messages(q, state))

    # ------------------------------------------------------------------- call
    def _compute_dtype(self):
        return tf.float64 if self.compute_dtype == "float64" else tf.float32

    def _mean_field(self, unary, prepared, iterations):
        backend, state = prepared
        weights = tf.cast(self.kernel_weights, unary.dtype)
        compat = tf.cast(self.compatibility, unary.dtype)
        return backend.mean_field(unary, weights, compat, state, iterations)

    def call(self, inputs, training=None):
        unary, image = inputs
        self._check_shapes([unary.shape, image.shape])
        dtype = self._compute_dtype()
        unary = tf.cast(unary, dtype)
        image = tf.cast(image, dtype)
        prepared = self._prepare(image)
        if isinstance(training, (tf.Tensor, tf.Variable)):
            return tf.cond(
                tf.cast(training, tf.bool),
                lambda: self._mean_field(unary, prepared, self.iterations_train),
                lambda: self._mean_field(unary, prepared, self.iterations_test),
            )
        iterations = self.iterations_train if training else self.iterations_test
        return self._mean_field(unary, prepared, iterations)

    def get_config(self):
        config = super().get_config()
        config.update(
            iterations_train=self.iterations_train,
            iterations_test=self.iterations_test,
            kernels=list(self.kernels),
            theta_spatial=self.theta_spatial,
            theta_alpha=self.theta_alpha,
            theta_beta=self.theta_beta,
            theta_intensity=self.theta_intensity,
            spatial_weight=self.spatial_weight,
            bilateral_weight=self.bilateral_weight,
            intensity_weight=self.intensity_weight,
            trainable_bandwidths=self.trainable_bandwidths,
            trainable_compatibility=self.trainable_compatibility,
            mode=self.mode,
            max_dense_pixels=self.max_dense_pixels,
            lowrank_max_pixels=self.lowrank_max_pixels,
            lowrank_options=self.lowrank_options.to_dict(),
            grid_options=self.grid_options.to_dict(),
        )
        return config
