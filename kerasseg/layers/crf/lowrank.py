"""The low-rank CRF form (``CRFRNN(mode="lowrank")``): messages as dense products of factorised kernels.

The mean-field messages ``m_i = sum_{j != i} k(f_i, f_j) q_j`` of the three CRF kernels are
computed with dense matrix products only (no gathers, no scatters), which is what a CPU or a
GPU runs fastest on the papers' 40x40 ROIs, and stays ahead of the grid form up to ~256x256:

* **Positions.** ``exp(-|p_i - p_j|^2 / 2 theta^2)`` is separable: the product of a row and a
  column kernel, each an (n, n) Gaussian matrix ``G``. ``G`` is symmetric positive definite
  with fast-decaying eigenvalues, so ``G ~= U U^T`` with ``U = V sqrt(L)`` keeping the
  eigenvalues above ``rtol * max`` (11 of 40 for theta = 5 px at rtol = 1e-3; by Eckart-Young no
  entry of ``G - U U^T`` exceeds ``rtol * max``, and the dropped directions are the
  high-frequency ones a smooth label map hardly excites). Filtering a map
  ``X`` is then ``Uy (Uy^T X Ux) Ux^T``; where the rank is above half the axis the full ``G``
  is applied instead. No truncation at a radius: every pixel pair is counted.
* **Intensities.** ``exp(-(a - b)^2 / 2 theta^2)`` is approximated by a Nystroem factorisation
  on ``K`` anchor intensities ``c_k`` spread evenly over each image's range:
  ``k(a, b) ~= phi(a)^T M phi(b)`` with ``phi_k(a) = exp(-(a - c_k)^2 / 2 theta^2)`` and
  ``M = Gram(c)^-1``. With anchors ``0.8 theta`` apart the kernel is off by at most 2.5e-3 of
  its peak (K = 16 anchors cover 12 theta: a normalised ROI's range at theta = 0.5), 1.4e-2 at
  ``1.0 theta`` (15 theta); an image with a still wider range gets a proportionally wider
  bandwidth (a smoother kernel rather than a wrong one).

So the bilateral message is ``(M phi_i)^T [Uy (Uy^T (phi q) Ux) Ux^T]_i``, the all-pairs intensity
message (Zhu eq. 4) ``phi_i^T M sum_j phi_j q_j``, and the spatial message the separable filter.
Each message subtracts the approximated kernel's own diagonal, so ``i == j`` is excluded from the
sum that is actually computed. Every operation is differentiable (the gradient reaches the image
through ``phi``; anchor placement is treated as a constant), core TF, and the batch may be unknown.

Cost per image and iteration for an n x n ROI: O(K * n^2 * r) with r ~ n / theta -- O(N^1.5) in
the pixel count N, against O(N^2) for the exact form and O(N) for the grid form
(:mod:`kerasseg.layers.crf.grid`), which wins for large images. The settings (eigenvalue cut,
anchor count and spacing) are a :class:`~kerasseg.layers.crf.backend.LowRankOptions` held by each
layer and saved in its config.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import tensorflow as tf

from kerasseg.errors import KerassegError
from kerasseg.layers.crf.backend import LowRankOptions, last_label_messages, static_bandwidth
from kerasseg.layers.crf.mean_field import MeanFieldMixin

__all__ = ["LowRankBackend", "axis_factor", "range_features", "spatial_rank", "MAX_RANGE_SPACING"]

_DEFAULTS = LowRankOptions()


@functools.lru_cache(maxsize=64)
def _axis_factor_cached(n: int, theta: float, rtol: float):
    d = np.arange(n, dtype=np.float64)
    g = np.exp(-((d[:, None] - d[None, :]) ** 2) / (2.0 * theta * theta))
    lam, vec = np.linalg.eigh(g)
    keep = lam > rtol * lam.max()
    if 2 * int(keep.sum()) > n:  # a full-rank product is cheaper than compress + expand
        return g.astype(np.float32), True
    u = vec[:, keep] * np.sqrt(lam[keep])[None, :]
    return u.astype(np.float32), False


def axis_factor(n: int, theta: float, rtol: float | None = None):
    """``(F, full)``: the 1-D Gaussian (n, n) matrix ``G`` (``full=True``) or ``U`` (n, r), ``G ~= U U^T``.

    Args:
        n: pixels along the axis.
        theta: the Gaussian's bandwidth in pixels.
        rtol: eigenvalues kept above ``rtol`` times the largest (default
            ``LowRankOptions().spatial_rtol``).

    Returns:
        ``(F, full)``, F float32.

    Example:
        >>> from kerasseg.layers.crf.lowrank import axis_factor
        >>> f, full = axis_factor(40, 5.0)
        >>> f.shape, full
        ((40, 11), False)
    """
    theta = float(theta)
    if not math.isfinite(theta) or theta <= 0:
        raise KerassegError(f"CRF spatial bandwidth must be a positive number, got {theta!r}")
    rtol = float(_DEFAULTS.spatial_rtol if rtol is None else rtol)
    return _axis_factor_cached(int(n), theta, rtol)


def spatial_rank(n: int, theta: float, rtol: float | None = None) -> int:
    """Columns of the factor used along an axis of ``n`` pixels (``n`` when the full matrix is used).

    Example:
        >>> from kerasseg.layers.crf.lowrank import spatial_rank
        >>> spatial_rank(40, 5.0)
        11
    """
    f, _ = axis_factor(n, theta, rtol)
    return int(f.shape[1])


#: anchors further apart than this many bandwidths widen the bandwidth instead (error 1.4e-2 here)
MAX_RANGE_SPACING = 1.0


def range_features(image, theta, anchors=None, spacing=None):
    """Nystroem features of the intensities: ``(phi (B, K, H, W), M (B, K, K))``.

    ``exp(-(I_i - I_j)^2 / 2 t^2) ~= sum_kl phi[k, i] M[k, l] phi[l, j]``. The K anchors are
    centred on each image's intensity range, ``max(spacing * theta, range / (K - 1))`` apart, and
    ``t = theta`` while that is at most ``MAX_RANGE_SPACING * theta`` (kernel error 2.5e-3 of its
    peak at 0.8 theta, 1.4e-2 at 1.0). An image with a still wider range gets a proportionally
    wider bandwidth ``t = range / (K - 1)``: a smoother kernel rather than a wrong one.

    Args:
        image: (B, H, W, 1) intensities.
        theta: intensity bandwidth.
        anchors: K (default ``LowRankOptions().range_anchors``).
        spacing: minimum anchor spacing in bandwidths (default ``LowRankOptions().range_spacing``).

    Example:
        >>> import tensorflow as tf
        >>> from kerasseg.layers.crf.lowrank import range_features
        >>> phi, m = range_features(tf.zeros((1, 4, 4, 1)), 0.5)
        >>> tuple(phi.shape), tuple(m.shape)
        ((1, 16, 4, 4), (1, 16, 16))
    """
    anchors = int(_DEFAULTS.range_anchors if anchors is None else anchors)
    spacing = float(_DEFAULTS.range_spacing if spacing is None else spacing)
    if anchors < 2:
        raise KerassegError(f"CRF range anchors must be >= 2, got {anchors}")
    if not 0.7 <= spacing <= MAX_RANGE_SPACING:
        raise KerassegError(
            f"CRF range anchor spacing must be in [0.7, {MAX_RANGE_SPACING}] bandwidths, got {spacing}"
        )
    img = tf.convert_to_tensor(image)[..., 0]  # (B, H, W)
    theta = tf.cast(theta, img.dtype)
    flat = tf.stop_gradient(tf.reshape(img, [tf.shape(img)[0], -1]))
    lo, hi = tf.reduce_min(flat, axis=1), tf.reduce_max(flat, axis=1)
    step = tf.maximum(spacing * theta, (hi - lo) / float(anchors - 1))  # (B,)
    width = tf.maximum(theta, step / MAX_RANGE_SPACING)  # the bandwidth t actually used, (B,)
    offsets = tf.range(anchors, dtype=img.dtype) - 0.5 * (anchors - 1)
    centres = 0.5 * (lo + hi)[:, None] + step[:, None] * offsets[None, :]  # (B, K)
    scale = 1.0 / (2.0 * tf.square(width))  # (B,)
    phi = tf.exp(-tf.square(img[:, None] - centres[:, :, None, None]) * scale[:, None, None, None])
    # Gram of the anchors: a function of (k - l) * step / t in [0.7, 1] * (k - l): condition
    # number < 1e4, inverted in float64 through its Cholesky factor
    dk = offsets[:, None] - offsets[None, :]
    gram = tf.cast(tf.exp(-tf.square(dk)[None] * (tf.square(step) * scale)[:, None, None]), tf.float64)
    eye = tf.eye(anchors, batch_shape=tf.shape(gram)[:1], dtype=tf.float64)
    inv = tf.linalg.cholesky_solve(tf.linalg.cholesky(gram), eye)
    return phi, tf.cast(inv, img.dtype)


# ------------------------------------------------------------------------------- filtering


def _apply_axis(x, f):
    """x (..., n) @ f (n, m) on the last axis."""
    shape = tf.shape(x)
    out = tf.matmul(tf.reshape(x, [-1, x.shape[-1]]), f)
    return tf.reshape(out, tf.concat([shape[:-1], [f.shape[-1]]], 0))


class _Spatial:
    """Separable Gaussian filter of (..., H, W) maps (compress, then expand), with its diagonal."""

    def __init__(self, h, w, theta, dtype, rtol):
        fy, self.full_y = axis_factor(h, theta, rtol)
        fx, self.full_x = axis_factor(w, theta, rtol)
        self.fy, self.fx = tf.constant(fy, dtype), tf.constant(fx, dtype)
        self.fy_t, self.fx_t = tf.constant(fy.T, dtype), tf.constant(fx.T, dtype)
        dy = np.ones(h) if self.full_y else (fy.astype(np.float64) ** 2).sum(1)
        dx = np.ones(w) if self.full_x else (fx.astype(np.float64) ** 2).sum(1)
        self.diag = tf.constant(dy[:, None] * dx[None, :], dtype)  # (H, W)

    def compress(self, x):
        """(..., H, W) -> (..., rx, ry) (the full filter along an axis whose ``full`` is True)."""
        x = _apply_axis(x, self.fx)  # (..., H, rx)
        x = tf.linalg.matrix_transpose(x)  # (..., rx, H)
        x = _apply_axis(x, self.fy)  # (..., rx, ry)
        return x

    def expand(self, x):
        """(..., rx, ry) -> (..., H, W); identity on an axis whose filter was applied in full."""
        if not self.full_y:
            x = _apply_axis(x, self.fy_t)  # (..., rx, H)
        x = tf.linalg.matrix_transpose(x)  # (..., H, rx)
        if not self.full_x:
            x = _apply_axis(x, self.fx_t)  # (..., H, W)
        return x


class _Plan:
    """One kernel's filter of one label map per image; ``self_w`` (B or 1, H, W) its own diagonal.

    Every product works on 4-D tensors ((B, K, H, W) at most): several label channels are filtered
    one after the other, never broadcast into a 5-D tensor, whose gradient (the image gradient of
    the adversarial step) reduces over broadcast axes slowly on CPU.
    """

    def __init__(self, kind, spatial=None, phi=None, mix=None):
        self.kind, self.spatial, self.phi = kind, spatial, phi
        if kind == "spatial":
            self.self_w = spatial.diag[None]
            return
        shape = tf.shape(phi)
        self.phi_flat = tf.reshape(phi, [shape[0], shape[1], -1])  # (B, K, P)
        self.psi_flat = tf.matmul(mix, self.phi_flat)  # M phi: (B, K, P)
        self.psi = tf.reshape(self.psi_flat, shape)  # (B, K, H, W)
        # the approximated kernel's diagonal phi_i^T M phi_i, times the spatial one (bilateral)
        diag = tf.reduce_sum(phi * self.psi, axis=1)  # (B, H, W)
        self.self_w = diag * spatial.diag[None] if kind == "bilateral" else diag

    def map(self, x):
        """x: (B, H, W) -> its messages (B, H, W), self term excluded."""
        if self.kind == "spatial":
            full = self.spatial.expand(self.spatial.compress(x))
        elif self.kind == "bilateral":  # psi_i^T [Uy (Uy^T (phi x) Ux) Ux^T]_i
            e = self.spatial.expand(self.spatial.compress(self.phi * x[:, None]))  # (B, K, H, W)
            full = tf.reduce_sum(self.psi * e, axis=1)
        else:  # intensity, all pixel pairs: psi_i^T sum_j phi_j x_j as two batched products
            shape = tf.shape(x)
            xf = tf.reshape(x, [shape[0], 1, -1])  # (B, 1, P)
            sums = tf.matmul(xf, self.phi_flat, transpose_b=True)  # (B, 1, K)
            full = tf.reshape(tf.matmul(sums, self.psi_flat), shape)
        return full - self.self_w * x


def _static(name, value):
    return static_bandwidth(name, value, "lowrank")


class LowRankBackend(MeanFieldMixin):
    """The low-rank form: a :class:`~kerasseg.layers.crf.backend.CRFBackend`.

    Args:
        options: a :class:`~kerasseg.layers.crf.backend.LowRankOptions`, a mapping of its fields,
            or None (the defaults).

    Example:
        >>> import tensorflow as tf
        >>> from kerasseg.layers.crf.lowrank import LowRankBackend
        >>> backend = LowRankBackend({"range_anchors": 24})
        >>> bw = {"spatial": 3.0, "alpha": 5.0, "beta": 0.5, "intensity": 1.0}
        >>> state = backend.prepare(tf.zeros((1, 40, 40, 1)), kernels=("spatial", "bilateral"), bandwidths=bw)
        >>> unary, weights, compat = tf.zeros((1, 40, 40, 2)), tf.constant([0.1, 0.05]), 1.0 - tf.eye(2)
        >>> q = backend.mean_field(unary, weights, compat, state, 10)
        >>> tuple(q.shape)
        (1, 40, 40, 2)
    """

    name = "lowrank"

    def __init__(self, options=None):
        self.options = LowRankOptions.coerce(options)

    def prepare(self, image, *, kernels, bandwidths):
        """One plan per kernel plus its response to an all-ones map.

        image: (B, H, W, 1); bandwidths: mapping of scalars ``spatial``, ``alpha``, ``beta``, ``intensity``.
        """
        image = tf.convert_to_tensor(image)
        grey = image.shape.rank == 4 and image.shape[-1] == 1
        if image.shape.rank != 4 or image.shape[1] is None or image.shape[2] is None or (
            not grey and any(k != "spatial" for k in kernels)
        ):
            raise KerassegError(f"CRFRNN lowrank mode needs a one-channel image (B, H, W, 1), got {image.shape}")
        h, w = int(image.shape[1]), int(image.shape[2])
        dtype = image.dtype
        o = self.options
        plans = []
        for k in kernels:
            if k == "spatial":
                sp = _Spatial(h, w, _static("theta_spatial", bandwidths["spatial"]), dtype, o.spatial_rtol)
                plans.append(_Plan("spatial", spatial=sp))
            elif k in ("bilateral", "intensity"):
                theta = bandwidths["beta" if k == "bilateral" else "intensity"]
                phi, mix = range_features(image, _static(f"theta_{'beta' if k == 'bilateral' else k}", theta),
                                          anchors=o.range_anchors, spacing=o.range_spacing)
                sp = None
                if k == "bilateral":
                    sp = _Spatial(h, w, _static("theta_alpha", bandwidths["alpha"]), dtype, o.spatial_rtol)
                plans.append(_Plan(k, spatial=sp, phi=phi, mix=mix))
            else:
                raise KerassegError(f"CRFRNN: unknown CRF kernel {k!r}")
        ones = tf.ones_like(image[..., 0])  # (B, H, W)
        return tuple((plan, plan.map(ones)) for plan in plans)

    def messages(self, q, state):
        """Per-kernel messages (B, H, W, C), the last label's from the all-ones response
        (:func:`~kerasseg.layers.crf.backend.last_label_messages`)."""
        q = tf.convert_to_tensor(q)
        out = []
        for plan, ones in state:
            def head(x, plan=plan):
                return tf.stack([plan.map(tf.cast(x[..., i], ones.dtype)) for i in range(x.shape[-1])], axis=-1)

            out.append(tf.cast(last_label_messages(head, q, ones), q.dtype))
        return out

    def map_messages(self, x, state):
        """Per-kernel messages of one map ``x`` (B, H, W), self term excluded."""
        return [plan.map(x) for plan, _ in state]

    def ones_messages(self, state):
        """Per-kernel messages of the all-ones map, (B, H, W) each, computed once by :meth:`prepare`."""
        return [ones for _, ones in state]
