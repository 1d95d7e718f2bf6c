"""The mean-field loop on a backend's messages, and its two-label path.

Mean-field inference for the fully connected pairwise CRF of Kraehenbuehl & Koltun (2011),
unrolled as in Zheng et al. (2015) and Zhu et al. (2018, eq. 2-5)::

    Q0 = softmax(U)                                   U: unary logits (= -psi_u)
    repeat n times:
        m_k[i, l] = sum_{j != i} k(f_i, f_j) Q[j, l]  one message per kernel k
        M[i, l]   = sum_k w_k m_k[i, l]               one trainable weight per kernel
        P[i, l]   = sum_l' mu[l, l'] M[i, l']         trainable C x C compatibility
        Q         = softmax(U - P)

:func:`mean_field` runs this on any :class:`~kerasseg.layers.crf.backend.CRFBackend`, through
:func:`binary_mean_field` for two labels. The exact form has its own loop with a hand-written
backward pass (:func:`kerasseg.layers.crf.exact.dense_mean_field`).
"""

from __future__ import annotations

import tensorflow as tf


def softmax_mean_field(backend, unary, weights, compat, state, iterations):
    """The C-label loop ``Q <- softmax(U - mu . sum_k w_k m_k(Q))`` on ``backend.messages``.

    Args:
        backend: a :class:`~kerasseg.layers.crf.backend.CRFBackend`.
        unary: (B, H, W, C) logits.
        weights: (K,) kernel weights, in the kernel order of ``state``.
        compat: (C, C) compatibility ``mu``.
        state: ``backend.prepare(...)`` of the image.
        iterations: number of updates (0 gives ``softmax(unary)``).

    Returns:
        (B, H, W, C) marginals.

    Example:
        >>> import tensorflow as tf
        >>> from kerasseg.layers.crf.lowrank import LowRankBackend
        >>> from kerasseg.layers.crf.mean_field import softmax_mean_field
        >>> backend = LowRankBackend()
        >>> bw = {"spatial": 3.0, "alpha": 5.0, "beta": 0.5, "intensity": 1.0}
        >>> state = backend.prepare(tf.zeros((1, 40, 40, 1)), kernels=("spatial", "bilateral"), bandwidths=bw)
        >>> unary, weights, compat = tf.zeros((1, 40, 40, 2)), tf.constant([0.1, 0.05]), 1.0 - tf.eye(2)
        >>> q = softmax_mean_field(backend, unary, weights, compat, state, 5)
        >>> tuple(q.shape)
        (1, 40, 40, 2)
    """
    q = tf.nn.softmax(unary, axis=-1)
    for _ in range(iterations):
        msgs = backend.messages(q, state)
        total = msgs[0] * weights[0]
        for k in range(1, len(msgs)):
            total = total + msgs[k] * weights[k]
        # P[..., l] = sum_l' mu[l, l'] M[..., l']
        pairwise = tf.einsum("bhwm,lm->bhwl", total, compat)
        q = tf.nn.softmax(unary - pairwise, axis=-1)
    return q


def binary_mean_field(backend, unary, weights, compat, state, iterations):
    """Two-label mean field on one map: the same fixed point, without a softmax over 2 channels.

    For two labels ``softmax(z)[1] = sigmoid(z_1 - z_0)``, and with messages ``m_0 = o - m_1``
    (``o`` the kernel's response to an all-ones map, ``backend.ones_messages``) the update
    ``Q = softmax(U - mu M)`` becomes ``q_1 = sigmoid(d - a - b * sum_k w_k m_k(q_1))`` with
    ``d = U_1 - U_0``, ``a = (mu_10 - mu_00) sum_k w_k o_k`` and
    ``b = (mu_11 - mu_01) - (mu_10 - mu_00)``. This halves the filtering (one map, through
    ``backend.map_messages``) and skips the per-iteration softmax, slices and concatenations over
    a 2-wide last axis, each of which costs more than the filtering itself on CPU at 40x40.

    Args and Returns: as :func:`softmax_mean_field`, with ``unary`` (B, H, W, 2).

    Example:
        >>> import tensorflow as tf
        >>> from kerasseg.layers.crf.lowrank import LowRankBackend
        >>> from kerasseg.layers.crf.mean_field import binary_mean_field
        >>> backend = LowRankBackend()
        >>> bw = {"spatial": 3.0, "alpha": 5.0, "beta": 0.5, "intensity": 1.0}
        >>> state = backend.prepare(tf.zeros((1, 40, 40, 1)), kernels=("spatial", "bilateral"), bandwidths=bw)
        >>> unary, weights, compat = tf.zeros((1, 40, 40, 2)), tf.constant([0.1, 0.05]), 1.0 - tf.eye(2)
        >>> q = binary_mean_field(backend, unary, weights, compat, state, 5)
        >>> tuple(q.shape)
        (1, 40, 40, 2)
    """
    z = unary[..., 1] - unary[..., 0]
    if iterations:
        w = tf.unstack(weights)
        ones = backend.ones_messages(state)
        a = (compat[1, 0] - compat[0, 0]) * tf.add_n([wk * tf.cast(o, z.dtype) for wk, o in zip(w, ones)])
        b = (compat[1, 1] - compat[0, 1]) - (compat[1, 0] - compat[0, 0])
        base = z - a
        for _ in range(iterations):
            msgs = backend.map_messages(tf.sigmoid(z), state)
            z = base - b * tf.add_n([wk * tf.cast(m, z.dtype) for wk, m in zip(w, msgs)])
    return tf.stack([tf.sigmoid(-z), tf.sigmoid(z)], axis=-1)


def mean_field(backend, unary, weights, compat, state, iterations):
    """:func:`binary_mean_field` for two labels, :func:`softmax_mean_field` otherwise.

    Args and Returns: as :func:`softmax_mean_field`.

    Example:
        >>> import tensorflow as tf
        >>> from kerasseg.layers.crf.lowrank import LowRankBackend
        >>> from kerasseg.layers.crf.mean_field import mean_field
        >>> backend = LowRankBackend()
        >>> bw = {"spatial": 3.0, "alpha": 5.0, "beta": 0.5, "intensity": 1.0}
        >>> state = backend.prepare(tf.zeros((1, 40, 40, 1)), kernels=("spatial", "bilateral"), bandwidths=bw)
        >>> unary, weights, compat = tf.zeros((1, 40, 40, 2)), tf.constant([0.1, 0.05]), 1.0 - tf.eye(2)
        >>> q = mean_field(backend, unary, weights, compat, state, 5)
        >>> tuple(q.shape)
        (1, 40, 40, 2)
    """
    if unary.shape[-1] == 2:
        return binary_mean_field(backend, unary, weights, compat, state, iterations)
    return softmax_mean_field(backend, unary, weights, compat, state, iterations)


class MeanFieldMixin:
    """``mean_field`` of the message backends (low-rank, grid): :func:`mean_field` on ``self``."""

    def mean_field(self, unary, weights, compat, state, iterations):
        return mean_field(self, unary, weights, compat, state, iterations)
