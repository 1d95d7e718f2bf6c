"""CRF-as-RNN: dense-CRF mean-field inference as a Keras 3 layer.

Mean-field inference for the fully connected pairwise CRF of Kraehenbuehl &
Koltun (2011), unrolled as a recurrent network as in Zheng et al. (2015) and
Zhu et al. (2018, eq. 2-5)::

    Q0 = softmax(U)                                   U: unary logits (= -psi_u)
    repeat n times:
        m_k[i, l] = sum_{j != i} k(f_i, f_j) Q[j, l]  one message per kernel k
        M[i, l]   = sum_k w_k m_k[i, l]               one trainable weight per kernel
        P[i, l]   = sum_l' mu[l, l'] M[i, l']         trainable C x C compatibility, Potts init
        Q         = softmax(U - P)

Kernels (each optional, positions in pixels, ``I`` = the image feature vector):

- ``"spatial"``   exp(-|p_i - p_j|^2 / 2 theta_spatial^2)                       (smoothness)
- ``"bilateral"`` exp(-|p_i - p_j|^2 / 2 theta_alpha^2 - |I_i - I_j|^2 / 2 theta_beta^2)  (appearance)
- ``"intensity"`` exp(-|I_i - I_j|^2 / 2 theta_intensity^2)  over all pixel pairs (Zhu eq. 4)

The ``"exact"`` mode builds the dense (B, P, P) float32 kernel matrices
(P = H*W) once per call and reuses them in every iteration; the spatial kernel
is a single (P, P) matrix shared by the batch. Its memory is
4 * P^2 bytes per image and per image-dependent kernel (9.8 MiB at 40x40,
64 MiB at 64x64), which is why inputs above ``max_dense_pixels`` are refused
with a :class:`~kerasseg.errors.KerassegError` pointing at ``mode="scalable"``.

Two faster forms compute the same messages. ``"lowrank"``
(``kerasseg.layers.crf_lowrank``) factorises the kernels into dense matrix
products (exact separable spatial factors, a Nystroem intensity factor): on
40x40 ROIs it agrees with the exact form to ~1e-4 in the marginals and is the
fastest form up to ~256x256. ``"scalable"`` (``kerasseg.layers.crf_filters``,
bilateral grid) costs O(pixels) and takes over above that. ``"auto"`` picks
between those two by size. A scalable backend plugs in through two module-level
functions::

    prepare(image, *, kernels, bandwidths) -> state      # once per call
    messages(q, state) -> list of (B, H, W, C) tensors   # one per kernel, in ``kernels`` order,
                                                          # self-message (i == j) excluded

where ``image`` is (B, H, W, F) float32, ``q`` (B, H, W, C) and ``bandwidths`` a
dict with float tensors ``spatial``, ``alpha``, ``beta``, ``intensity``. A backend
that also has ``map_messages(x, state)`` (messages of one (B, H, W) map) and
``ones_messages(state)`` gets the two-class fast path (:func:`_binary_mean_field`).
"""

from __future__ import annotations

import importlib
import math
import numbers

import keras
import tensorflow as tf

from kerasseg.errors import KerassegError
from kerasseg.layers import crf_lowrank

KERNELS = ("spatial", "bilateral", "intensity")
MODES = ("exact", "auto", "lowrank", "scalable")

# Bandwidth name per config argument (the dict keys handed to the backends).
_BANDWIDTHS = {
    "theta_spatial": "spatial",
    "theta_alpha": "alpha",
    "theta_beta": "beta",
    "theta_intensity": "intensity",
}


def _is_real(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)


def _load_filters(required: bool):
    """Import the scalable backend; raise a clear error if ``required`` and it is missing."""
    try:
        return importlib.import_module("kerasseg.layers.crf_filters")
    except ModuleNotFoundError as exc:
        if exc.name != "kerasseg.layers.crf_filters":
            raise
        if required:
            raise KerassegError(
                "CRFRNN: the scalable CRF backend kerasseg.layers.crf_filters is not available; "
                'use mode="exact" (inputs up to max_dense_pixels)'
            ) from None
        return None


@keras.saving.register_keras_serializable(package="kerasseg")
class CRFRNN(keras.layers.Layer):
    """Mean-field CRF-as-RNN layer: ``CRFRNN()([unary_logits, image]) -> probabilities``.

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
        trainable_bandwidths: learn the bandwidths (as log-bandwidth weights).
        trainable_compatibility: learn the C x C compatibility (initialised to Potts).
        mode: ``"exact"`` (dense), ``"lowrank"`` (kerasseg.layers.crf_lowrank),
            ``"scalable"`` (kerasseg.layers.crf_filters) or ``"auto"``: lowrank up to
            ``lowrank_max_pixels``, scalable above (exact for multi-channel images, whose
            features the two fast forms do not take).
        max_dense_pixels: largest H*W the exact form accepts.
        lowrank_max_pixels: largest H*W for which ``"auto"`` uses the low-rank form
            (the two fast forms cost the same near 256x256 on CPU).

    Defaults suit normalised (zero-mean, unit-std) intensities and 40x40 ROIs: the
    kernel row sums are about 55 (spatial, theta 3 px), 10-150 (bilateral) and up
    to ~900 (intensity, all 1600 pixels), so the small default weights give each
    kernel a pairwise term of a few logits, comparable to a confident unary.
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
        mode: str = "exact",
        max_dense_pixels: int = 4096,
        lowrank_max_pixels: int = 65536,
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
        for name, value in (
            ("theta_spatial", theta_spatial),
            ("theta_alpha", theta_alpha),
            ("theta_beta", theta_beta),
            ("theta_intensity", theta_intensity),
        ):
            if not _is_real(value) or value <= 0:
                raise KerassegError(f"CRFRNN: {name}={value!r} must be a positive number")
        for name, value in (
            ("spatial_weight", spatial_weight),
            ("bilateral_weight", bilateral_weight),
            ("intensity_weight", intensity_weight),
        ):
            if not _is_real(value):
                raise KerassegError(f"CRFRNN: {name}={value!r} must be a finite number")
        if mode not in MODES:
            raise KerassegError(f"CRFRNN: mode={mode!r} is unknown; use one of {list(MODES)}")
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
        self._filters = _load_filters(required=(mode == "scalable"))

    # ------------------------------------------------------------------ build
    def build(self, input_shape):
        unary_shape, image_shape = self._check_shapes(input_shape)
        self.num_classes = int(unary_shape[-1])
        init = {
            "spatial": self.spatial_weight,
            "bilateral": self.bilateral_weight,
            "intensity": self.intensity_weight,
        }
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
        return {
            "spatial": "spatial" in self.kernels,
            "alpha": "bilateral" in self.kernels,
            "beta": "bilateral" in self.kernels,
            "intensity": "intensity" in self.kernels,
        }[key]

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
            raise KerassegError(
                f"CRFRNN: unary {unary_shape} and image {image_shape} differ in height/width"
            )
        if c < 2:
            raise KerassegError(f"CRFRNN: unary logits need >= 2 classes, got shape {unary_shape}")
        backend = self._backend_for(h * w, image_shape[3])
        if backend == "exact" and h * w > self.max_dense_pixels:
            raise KerassegError(
                f"CRFRNN: a {h}x{w} input ({h * w} pixels) exceeds the exact CRF limit "
                f"max_dense_pixels={self.max_dense_pixels} ({4 * h * w * h * w / 2**20:.0f} MiB per image "
                f"and kernel); use mode=\"auto\" (or mode=\"lowrank\", mode=\"scalable\") with a one-channel "
                "image, or crop smaller ROIs"
            )
        if backend != "exact" and image_shape[3] != 1 and self._uses_image():
            raise KerassegError(
                f"CRFRNN: mode={self.mode!r} takes one-channel images for the {list(self.kernels)} kernels, "
                f"got image {image_shape}; use mode=\"exact\" for multi-channel features"
            )
        return unary_shape, image_shape

    def _uses_image(self):
        return any(k in ("bilateral", "intensity") for k in self.kernels)

    def _backend_for(self, pixels, channels=1):
        """The form that runs an input of ``pixels`` pixels and ``channels`` image channels."""
        if self.mode == "exact":
            return "exact"
        if self.mode != "auto":
            backend = self.mode
        elif channels > 1 and self._uses_image():
            return "exact"
        else:
            backend = "lowrank" if pixels <= self.lowrank_max_pixels else "scalable"
        if backend == "scalable" and self._filters is None:
            self._filters = _load_filters(required=True)
        return backend

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

    @staticmethod
    def _position_sqdist(h, w, dtype):
        """(P, P) squared pixel distances, P = h*w in row-major order."""
        rows = tf.cast(tf.repeat(tf.range(h), w), dtype)
        cols = tf.cast(tf.tile(tf.range(w), [h]), dtype)
        return tf.square(rows[:, None] - rows[None, :]) + tf.square(cols[:, None] - cols[None, :])

    @staticmethod
    def _feature_sqdist(feats):
        """(B, P, P) squared feature distances of (B, P, F) features (exact, no |a|^2+|b|^2-2ab)."""
        total = None
        for ch in range(feats.shape[-1]):
            f = feats[:, :, ch]
            d = tf.square(f[:, :, None] - f[:, None, :])
            total = d if total is None else total + d
        return total

    def _backend_module(self, backend):
        """The message module of a non-exact form: ``crf_lowrank`` or ``crf_filters``."""
        return crf_lowrank if backend == "lowrank" else self._filters

    def _prepare(self, image):
        """Per-call state for :meth:`_messages`: ``(form, state)``; the dense kernel matrices (exact)."""
        h, w, f = image.shape[1], image.shape[2], image.shape[3]
        dtype = image.dtype
        backend = self._backend_for(h * w, f)
        bw = self._bandwidths(dtype)
        if backend != "exact":
            module = self._backend_module(backend)
            return (backend, module.prepare(image, kernels=self.kernels, bandwidths=bw))
        p = h * w
        feats = tf.reshape(image, [-1, p, f])
        pos_d = None
        mats = []
        for k in self.kernels:
            if k in ("spatial", "bilateral") and pos_d is None:
                pos_d = self._position_sqdist(h, w, dtype)
            # The diagonal is kept (k(f_i, f_i) = exp(0) = 1 exactly) and the self-message is
            # subtracted in _messages: this saves a (B, P, P) pass per kernel and iteration.
            if k == "spatial":
                mat = tf.exp(-pos_d / (2.0 * tf.square(bw["spatial"])))  # (P, P), shared by the batch
            elif k == "bilateral":
                scaled = feats / (tf.sqrt(2.0 * tf.ones([], dtype)) * bw["beta"])
                mat = tf.exp(-(pos_d / (2.0 * tf.square(bw["alpha"])))[None] - self._feature_sqdist(scaled))
            else:  # intensity
                scaled = feats / (tf.sqrt(2.0 * tf.ones([], dtype)) * bw["intensity"])
                mat = tf.exp(-self._feature_sqdist(scaled))
            mats.append(mat)
        return ("exact", mats)

    def _messages(self, q, image, prepared=None):
        """Per-kernel messages m_k[i] = sum_{j != i} k(f_i, f_j) q[j], each shaped like ``q``.

        ``q`` is (B, H, W, C), ``image`` (B, H, W, F). ``prepared`` is the result of
        :meth:`_prepare` (computed here when None) so a loop can reuse the kernels.
        """
        if prepared is None:
            prepared = self._prepare(image)
        backend, state = prepared
        if backend != "exact":
            return list(self._backend_module(backend).messages(q, state))
        shape = tf.shape(q)
        p, c = q.shape[1] * q.shape[2], q.shape[3]
        qf = tf.reshape(q, [-1, p, c])
        return [tf.reshape(_dense_message(mat, qf), shape) for mat in state]

    # ------------------------------------------------------------------- call
    def _compute_dtype(self):
        return tf.float64 if self.compute_dtype == "float64" else tf.float32

    def _mean_field(self, unary, image, prepared, iterations):
        weights = tf.cast(self.kernel_weights, unary.dtype)
        compat = tf.cast(self.compatibility, unary.dtype)
        if prepared[0] == "exact":
            return _dense_mean_field(unary, weights, compat, prepared[1], iterations)
        module = self._backend_module(prepared[0])
        if unary.shape[-1] == 2 and hasattr(module, "map_messages"):
            return _binary_mean_field(unary, weights, compat, module, prepared[1], iterations)
        q = tf.nn.softmax(unary, axis=-1)
        for _ in range(iterations):
            msgs = self._messages(q, image, prepared)
            total = msgs[0] * weights[0]
            for k in range(1, len(msgs)):
                total = total + msgs[k] * weights[k]
            # P[..., l] = sum_l' mu[l, l'] M[..., l']
            pairwise = tf.einsum("bhwm,lm->bhwl", total, compat)
            q = tf.nn.softmax(unary - pairwise, axis=-1)
        return q

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
                lambda: self._mean_field(unary, image, prepared, self.iterations_train),
                lambda: self._mean_field(unary, image, prepared, self.iterations_test),
            )
        iterations = self.iterations_train if training else self.iterations_test
        return self._mean_field(unary, image, prepared, iterations)

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
        )
        return config


def _binary_mean_field(unary, weights, compat, module, state, iterations):
    """Two-class mean field on one map: the same fixed point, without a softmax over 2 channels.

    For two labels ``softmax(z)[1] = sigmoid(z_1 - z_0)``, and with messages ``m_0 = o - m_1``
    (``o`` the kernel's response to an all-ones map, as the backends compute it) the update
    ``Q = softmax(U - mu M)`` becomes ``q_1 = sigmoid(d - a - b * sum_k w_k m_k(q_1))`` with
    ``d = U_1 - U_0``, ``a = (mu_10 - mu_00) sum_k w_k o_k`` and
    ``b = (mu_11 - mu_01) - (mu_10 - mu_00)``. A backend provides ``map_messages(x, state)`` (the
    messages of one (B, H, W) map, self term excluded) and ``ones_messages(state)``. This halves
    the filtering (one map), and skips the per-iteration softmax, slices and concatenations over a
    2-wide last axis, each of which costs more than the filtering itself on CPU at 40x40.
    """
    z = unary[..., 1] - unary[..., 0]
    if iterations:
        w = tf.unstack(weights)
        ones = module.ones_messages(state)
        a = (compat[1, 0] - compat[0, 0]) * tf.add_n([wk * o for wk, o in zip(w, ones)])
        b = (compat[1, 1] - compat[0, 1]) - (compat[1, 0] - compat[0, 0])
        base = z - a
        for _ in range(iterations):
            msgs = module.map_messages(tf.sigmoid(z), state)
            z = base - b * tf.add_n([wk * m for wk, m in zip(w, msgs)])
    return tf.stack([tf.sigmoid(-z), tf.sigmoid(z)], axis=-1)


# ----------------------------------------------------------------------------
# Exact (dense) mean-field with a hand-written backward pass.
#
# Autodiff of the unrolled loop materialises one (B, P, P) outer product per
# iteration, class and kernel for the kernel-matrix gradient (needed whenever the
# gradient reaches the image, e.g. adversarial training, or trainable bandwidths).
# The backward below accumulates it in a single batched matmul per kernel instead:
# dK = sum_t dm_t q_{t-1}^T = [dm_1 .. dm_T] [q_0 .. q_{T-1}]^T.
# All kernel matrices are symmetric, so K^T g = K g.


def _dense_message(mat, qf):
    """sum_{j != i} K[i, j] q[j] for (P, P) or (B, P, P) ``mat`` (diagonal == 1) and (B, P, C) ``qf``."""
    if mat.shape.rank == 2:  # shared spatial kernel: one (P, P) x (P, B*C) product
        full = tf.einsum("pq,bqc->bpc", mat, qf)
    else:
        # per-class matrix-vector products: several times faster than a (P,P)x(P,C)
        # batched matmul on CPU (TF's BatchMatMul is slow for so few columns)
        full = tf.stack([tf.linalg.matvec(mat, qf[:, :, i]) for i in range(qf.shape[-1])], axis=-1)
    # every kernel is exp(0) = 1 exactly on the diagonal: remove the self-message q_i
    return full - qf


def _softmax_backward(q, g):
    return q * (g - tf.reduce_sum(g * q, axis=-1, keepdims=True))


def _dense_mean_field(unary, weights, compat, mats, iterations):
    """Mean-field on (B, H, W, C) ``unary`` with dense kernel matrices ``mats`` (list, diagonal 1)."""
    shape = tf.shape(unary)
    p, c = unary.shape[1] * unary.shape[2], unary.shape[3]
    n_k = len(mats)

    @tf.custom_gradient
    def run(u, w, mu, *ks):
        q = tf.nn.softmax(u, axis=-1)
        qs, msgs = [q], []
        for _ in range(iterations):
            m = [_dense_message(k, q) for k in ks]
            total = tf.add_n([m[i] * w[i] for i in range(n_k)])
            q = tf.nn.softmax(u - tf.einsum("bpm,lm->bpl", total, mu), axis=-1)
            qs.append(q)
            msgs.append((m, total))

        def grad(gq):
            du = tf.zeros_like(u)
            dw = tf.zeros_like(w)
            dmu = tf.zeros_like(mu)
            dms = [[] for _ in range(n_k)]
            for t in range(iterations, 0, -1):
                m, total = msgs[t - 1]
                dz = _softmax_backward(qs[t], gq)
                du += dz
                # P = M mu^T: dmu[l, m] = sum dP_l M_m, dM = dP mu, with dP = -dz
                dmu -= tf.einsum("bpl,bpm->lm", dz, total)
                dtotal = -tf.einsum("bpl,lm->bpm", dz, mu)
                dw += tf.stack([tf.reduce_sum(dtotal * m[i]) for i in range(n_k)])
                gq = tf.zeros_like(gq)
                for i in range(n_k):
                    dm = dtotal * w[i]
                    dms[i].append(dm)
                    gq += _dense_message(ks[i], dm)  # K symmetric: K^T dm - dm
            du += _softmax_backward(qs[0], gq)
            dks = []
            for i, k in enumerate(ks):
                if not dms[i]:
                    dks.append(tf.zeros_like(k))
                    continue
                g_all = tf.concat(dms[i][::-1], axis=-1)  # (B, P, T*C), t = 1..T
                q_all = tf.concat(qs[:-1], axis=-1)  # (B, P, T*C), q_0..q_{T-1}
                if k.shape.rank == 2:
                    dks.append(tf.einsum("bpx,bqx->pq", g_all, q_all))
                else:
                    dks.append(tf.matmul(g_all, q_all, transpose_b=True))
            return (du, dw, dmu, *dks)

        return q, grad

    out = run(tf.reshape(unary, [-1, p, c]), weights, compat, *mats)
    return tf.reshape(out, shape)
