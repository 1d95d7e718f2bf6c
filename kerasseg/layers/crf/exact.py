"""The exact (dense) CRF form: (P, P) kernel matrices and a hand-written backward pass.

``mode="exact"`` builds the dense float32 kernel matrices (P = H*W) once per call and reuses them in
every iteration; the spatial kernel is a single (P, P) matrix shared by the batch. Memory is
4 * P^2 bytes per image and image-dependent kernel (9.8 MiB at 40x40, 64 MiB at 64x64), which is
why CRFRNN refuses inputs above ``max_dense_pixels`` in this form. It takes any number of image
feature channels and trainable bandwidths, and is the reference the other forms are tested against.

Kernels (positions in pixels, ``I`` the image feature vector):

- ``"spatial"``   exp(-|p_i - p_j|^2 / 2 theta_spatial^2)
- ``"bilateral"`` exp(-|p_i - p_j|^2 / 2 theta_alpha^2 - |I_i - I_j|^2 / 2 theta_beta^2)
- ``"intensity"`` exp(-|I_i - I_j|^2 / 2 theta_intensity^2) over all pixel pairs (Zhu eq. 4)
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from kerasseg.errors import KerassegError


def position_sqdist(h, w, dtype):
    """(P, P) squared pixel distances, P = h*w in row-major order."""
    rows = tf.cast(tf.repeat(tf.range(h), w), dtype)
    cols = tf.cast(tf.tile(tf.range(w), [h]), dtype)
    return tf.square(rows[:, None] - rows[None, :]) + tf.square(cols[:, None] - cols[None, :])


def feature_sqdist(feats):
    """(B, P, P) squared feature distances of (B, P, F) features (exact, no |a|^2+|b|^2-2ab)."""
    total = None
    for ch in range(feats.shape[-1]):
        f = feats[:, :, ch]
        d = tf.square(f[:, :, None] - f[:, None, :])
        total = d if total is None else total + d
    return total


def dense_message(mat, qf):
    """sum_{j != i} K[i, j] q[j] for (P, P) or (B, P, P) ``mat`` (diagonal == 1) and (B, P, C) ``qf``."""
    if mat.shape.rank == 2:  # shared spatial kernel: one (P, P) x (P, B*C) product
        full = tf.einsum("pq,bqc->bpc", mat, qf)
    else:
        # per-class matrix-vector products: several times faster than a (P,P)x(P,C)
        # batched matmul on CPU (TF's BatchMatMul is slow for so few columns)
        full = tf.stack([tf.linalg.matvec(mat, qf[:, :, i]) for i in range(qf.shape[-1])], axis=-1)
    # every kernel is exp(0) = 1 exactly on the diagonal: remove the self-message q_i
    return full - qf


class DenseState(NamedTuple):
    """:meth:`ExactBackend.prepare` output: one matrix per kernel (diagonal 1), and the map size."""

    mats: list
    height: int
    width: int


class ExactBackend:
    """The dense form (``mode="exact"``): a :class:`~kerasseg.layers.crf.backend.CRFBackend`.

    Args:
        options: unused (the exact form has no settings); accepted so every backend is built alike.

    Example:
        >>> import tensorflow as tf
        >>> from kerasseg.layers.crf.exact import ExactBackend
        >>> backend = ExactBackend()
        >>> bw = {"spatial": 3.0, "alpha": 5.0, "beta": 0.5, "intensity": 1.0}
        >>> state = backend.prepare(tf.zeros((1, 40, 40, 1)), kernels=("spatial", "bilateral"), bandwidths=bw)
        >>> unary, weights, compat = tf.zeros((1, 40, 40, 2)), tf.constant([0.1, 0.05]), 1.0 - tf.eye(2)
        >>> q = backend.mean_field(unary, weights, compat, state, 10)
        >>> tuple(q.shape)
        (1, 40, 40, 2)
    """

    name = "exact"

    def __init__(self, options=None):
        self.options = None

    def prepare(self, image, *, kernels, bandwidths):
        """A :class:`DenseState`: (P, P) spatial and (B, P, P) bilateral / intensity matrices."""
        h, w, f = image.shape[1], image.shape[2], image.shape[3]
        dtype = image.dtype
        p = h * w
        feats = tf.reshape(image, [-1, p, f])
        pos_d = None
        mats = []
        for k in kernels:
            if k in ("spatial", "bilateral") and pos_d is None:
                pos_d = position_sqdist(h, w, dtype)
            # The diagonal is kept (k(f_i, f_i) = exp(0) = 1 exactly) and the self-message is
            # subtracted in dense_message: this saves a (B, P, P) pass per kernel and iteration.
            if k == "spatial":
                mat = tf.exp(-pos_d / (2.0 * tf.square(bandwidths["spatial"])))  # (P, P), shared
            elif k == "bilateral":
                scaled = feats / (tf.sqrt(2.0 * tf.ones([], dtype)) * bandwidths["beta"])
                mat = tf.exp(-(pos_d / (2.0 * tf.square(bandwidths["alpha"])))[None] - feature_sqdist(scaled))
            elif k == "intensity":
                scaled = feats / (tf.sqrt(2.0 * tf.ones([], dtype)) * bandwidths["intensity"])
                mat = tf.exp(-feature_sqdist(scaled))
            else:
                raise KerassegError(f"CRFRNN: unknown CRF kernel {k!r}")
            mats.append(mat)
        return DenseState(mats, h, w)

    def messages(self, q, state):
        shape = tf.shape(q)
        p, c = q.shape[1] * q.shape[2], q.shape[3]
        qf = tf.reshape(q, [-1, p, c])
        return [tf.reshape(dense_message(mat, qf), shape) for mat in state.mats]

    def map_messages(self, x, state):
        return [m[..., 0] for m in self.messages(x[..., None], state)]

    def ones_messages(self, state):
        # the messages of an all-ones map are the kernel row sums minus the diagonal (1)
        hw = [-1, state.height, state.width]
        return [tf.reshape(tf.reduce_sum(m, axis=-1) - 1.0, hw) for m in state.mats]

    def mean_field(self, unary, weights, compat, state, iterations):
        return dense_mean_field(unary, weights, compat, state.mats, iterations)


# ----------------------------------------------------------------------------------------
# Exact mean field with a hand-written backward pass.
#
# Autodiff of the unrolled loop materialises one (B, P, P) outer product per iteration, class
# and kernel for the kernel-matrix gradient (needed whenever the gradient reaches the image,
# e.g. adversarial training, or trainable bandwidths). The backward below accumulates it in a
# single batched matmul per kernel instead: dK = sum_t dm_t q_{t-1}^T = [dm_1 .. dm_T] [q_0 ..
# q_{T-1}]^T. All kernel matrices are symmetric, so K^T g = K g.


def _softmax_backward(q, g):
    return q * (g - tf.reduce_sum(g * q, axis=-1, keepdims=True))


def dense_mean_field(unary, weights, compat, mats, iterations):
    """Mean field on (B, H, W, C) ``unary`` with dense kernel matrices ``mats`` (list, diagonal 1).

    Args:
        unary: (B, H, W, C) logits.
        weights: (K,) kernel weights.
        compat: (C, C) compatibility ``mu``.
        mats: ``ExactBackend.prepare(...).mats``, one matrix per kernel.
        iterations: number of updates.

    Returns:
        (B, H, W, C) marginals; the gradient with respect to every argument is hand-written.

    Example:
        >>> import tensorflow as tf
        >>> from kerasseg.layers.crf.exact import ExactBackend, dense_mean_field
        >>> backend = ExactBackend()
        >>> bw = {"spatial": 3.0, "alpha": 5.0, "beta": 0.5, "intensity": 1.0}
        >>> state = backend.prepare(tf.zeros((1, 40, 40, 1)), kernels=("spatial", "bilateral"), bandwidths=bw)
        >>> unary, weights, compat = tf.zeros((1, 40, 40, 2)), tf.constant([0.1, 0.05]), 1.0 - tf.eye(2)
        >>> q = dense_mean_field(unary, weights, compat, state.mats, 5)
        >>> tuple(q.shape)
        (1, 40, 40, 2)
    """
    shape = tf.shape(unary)
    p, c = unary.shape[1] * unary.shape[2], unary.shape[3]
    n_k = len(mats)

    @tf.custom_gradient
    def run(u, w, mu, *ks):
        q = tf.nn.softmax(u, axis=-1)
        qs, msgs = [q], []
        for _ in range(iterations):
            m = [dense_message(k, q) for k in ks]
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
                    gq += dense_message(ks[i], dm)  # K symmetric: K^T dm - dm
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
