"""The linear-cost grid CRF form (``CRFRNN(mode="grid")``; old names ``"scalable"``, ``"filters"``).

The exact CRF-as-RNN computes, for every pixel ``i`` and label ``l``, the
unnormalised Gaussian-weighted sum over every *other* pixel ``j``::

    m_i(l) = sum_{j != i} k(f_i, f_j) q_j(l)

which costs O(N^2) for N pixels. The functions here compute the same sums in
O(N) with core TensorFlow ops only (depthwise convolutions, segment sums,
gathers and small batched matmuls), so a layer using them exports to a stock
TF Serving SavedModel, runs on GPU, and accepts an unknown batch size with a
static (H, W):

* :func:`spatial_message` -- ``k = exp(-|p_i - p_j|^2 / 2 theta^2)``: separable
  Gaussian filtering (two 1-D depthwise convolutions, truncated at
  ``truncate * theta`` pixels; exact up to that truncation) minus the centre
  weight times ``q``.
* :func:`bilateral_message` -- ``k = exp(-|p_i - p_j|^2 / 2 ta^2 - |I_i - I_j|^2 / 2 tb^2)``:
  splat-blur-slice on a bilateral grid (space sampled every ``~ta/2`` pixels,
  intensity every ``~tb/2``), trilinear splat and slice, Gaussian blur along the
  three axes, the grid's own response to a lone pixel subtracted as the self term.
* :func:`intensity_message` -- ``k = exp(-|I_i - I_j|^2 / 2 t^2)`` over all pairs
  of pixels: a 1-D intensity histogram (linear splat, Gaussian blur along the
  bins, linear slice), self term subtracted.

Accuracy of the grid forms: splatting and slicing with linear weights widens the
kernel (variance ``+s^2/3`` per axis for a grid spacing ``s``) and lowers its
peak; the blur kernel is narrowed and rescaled to compensate, so the effective
kernel matches the exact Gaussian in width and height. Measured against the
dense form on 40x40 images the messages differ by about 1% of their range
(see tests/layers/crf/test_crf_filters.py for the asserted tolerances).

Thetas are in pixels (spatial) and in the units of the ``image`` tensor
(intensity), as in the exact layer. ``image`` is (B, H, W, 1) (grey mammogram
ROIs). The intensity axis of the grids adapts per image to that image's range
with a fixed number of bins; when the range needs more bins than given, the bin
spacing grows and the approximation degrades gracefully (the cost does not). The layer's settings
(truncation, oversampling, bin counts) are a :class:`~kerasseg.layers.crf.backend.GridOptions` held
by each layer and saved in its config.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from kerasseg.errors import KerassegError
from kerasseg.layers.crf.backend import GridOptions, last_label_messages, static_bandwidth
from kerasseg.layers.crf.grid_plans import (
    check_theta, depthwise_1d, static_hw, bilateral_grid_shape, bilateral_plan, intensity_plan,
)
from kerasseg.layers.crf.mean_field import MeanFieldMixin

__all__ = [
    "GridBackend", "spatial_message", "bilateral_message", "intensity_message", "spatial_kernel_radius",
    "bilateral_grid_shape", "intensity_bins", "bilateral_plan", "intensity_plan", "DEFAULT_TRUNCATE",
]

# exp(-x^2/2) < 1e-6 beyond x = 5.26: the spatial filter is exact to ~1e-5 absolute
DEFAULT_TRUNCATE = GridOptions().truncate


# ---------------------------------------------------------------------------- public filters


def spatial_kernel_radius(theta, size, truncate=DEFAULT_TRUNCATE):
    """Radius (taps each side) of the 1-D spatial filter along an axis of ``size`` pixels.

    Args:
        theta: spatial bandwidth, pixels (> 0).
        size: pixels along the axis.
        truncate: the kernel is cut at ``truncate * theta`` pixels.

    Returns:
        ``min(ceil(truncate * theta), size - 1)``: the whole axis when that is shorter (exact).

    Example:
        >>> from kerasseg.layers.crf.grid import spatial_kernel_radius
        >>> spatial_kernel_radius(3.0, 512), spatial_kernel_radius(3.0, 10)
        (16, 9)
    """
    theta = check_theta("spatial theta", theta)
    return int(min(math.ceil(truncate * theta), max(size - 1, 0)))


def spatial_message(q, theta, truncate=DEFAULT_TRUNCATE):
    """``sum_{j != i} exp(-|p_i - p_j|^2 / 2 theta^2) q_j``: separable Gaussian filtering minus the centre.

    Cost O(N * theta). Exact up to the truncation of the kernel at
    ``truncate * theta`` pixels (or the whole image when that is smaller).

    Args:
        q: (B, H, W, C) maps with static H, W, C.
        theta: spatial bandwidth in pixels (> 0).
        truncate: kernel cut-off in bandwidths.

    Input shape:
        ``q``: (batch, H, W, C).

    Output shape:
        (batch, H, W, C), the dtype of ``q``.

    Example:
        >>> import tensorflow as tf
        >>> from kerasseg.layers.crf.grid import spatial_message
        >>> m = spatial_message(tf.ones((1, 40, 40, 2)), 3.0)
        >>> tuple(m.shape)
        (1, 40, 40, 2)
    """
    q = tf.convert_to_tensor(q)
    h, w, _ = static_hw(q)
    theta = check_theta("spatial theta", theta)
    dtype = q.dtype
    x = tf.cast(q, tf.float32)
    ry = spatial_kernel_radius(theta, h, truncate)
    rx = spatial_kernel_radius(theta, w, truncate)
    ky = np.exp(-np.arange(-ry, ry + 1, dtype=np.float64) ** 2 / (2 * theta**2))
    kx = np.exp(-np.arange(-rx, rx + 1, dtype=np.float64) ** 2 / (2 * theta**2))
    out = depthwise_1d(depthwise_1d(x, ky, 1), kx, 2)
    return tf.cast(out - x, dtype)  # centre weight exp(0) * exp(0) = 1


def intensity_bins(bins=128):
    """Number of histogram bins of :func:`intensity_message` (independent of the image size).

    Args:
        bins: the requested bin count.

    Example:
        >>> from kerasseg.layers.crf.grid import intensity_bins
        >>> intensity_bins(128)
        128
    """
    return int(bins)


def intensity_message(q, image, theta, *, oversample=4.0, bins=128):
    """``sum_{j != i} exp(-|I_i - I_j|^2 / 2 theta^2) q_j`` over all pixel pairs, in O(N + bins^2).

    The intensities of each image are splatted into ``bins`` bins spaced ``theta/oversample``
    apart (wider if the image's range needs it), blurred with a Gaussian along the bins, and read
    back by linear interpolation; the value a lone pixel would receive is subtracted.

    Args:
        q: (B, H, W, C) maps.
        image: (B, H, W, 1) intensities.
        theta: intensity bandwidth (> 0).
        oversample: bins per bandwidth.
        bins: histogram bins (>= 4).

    Input shape:
        ``q`` (batch, H, W, C), ``image`` (batch, H, W, 1).

    Output shape:
        (batch, H, W, C), the dtype of ``q``.

    Example:
        >>> import tensorflow as tf
        >>> from kerasseg.layers.crf.grid import intensity_message
        >>> m = intensity_message(tf.ones((1, 40, 40, 2)), tf.zeros((1, 40, 40, 1)), 1.0)
        >>> tuple(m.shape)
        (1, 40, 40, 2)
    """
    q = tf.convert_to_tensor(q)
    static_hw(q)
    return intensity_plan(image, theta, oversample=oversample, bins=bins)(q)


def bilateral_message(q, image, theta_alpha, theta_beta, *, spatial_oversample=2.0, range_oversample=2.0,
                      range_bins=32, truncate=4.0):
    """``sum_{j != i} exp(-|p_i-p_j|^2/2 ta^2 - |I_i-I_j|^2/2 tb^2) q_j`` on a bilateral grid.

    Cost O(N + grid cells * (taps + range_bins)), with grid cells ~ N / step^2
    (step = round(ta / spatial_oversample) pixels).

    Args:
        q: (B, H, W, C) maps.
        image: (B, H, W, 1) intensities.
        theta_alpha: position bandwidth ``ta``, pixels (> 0).
        theta_beta: intensity bandwidth ``tb`` (> 0).
        spatial_oversample: grid nodes per ``ta``.
        range_oversample: intensity bins per ``tb``.
        range_bins: intensity bins of the grid (>= 4).
        truncate: cut-off of the spatial blur, in blur standard deviations.

    Input shape:
        ``q`` (batch, H, W, C), ``image`` (batch, H, W, 1).

    Output shape:
        (batch, H, W, C), the dtype of ``q``.

    Example:
        >>> import tensorflow as tf
        >>> from kerasseg.layers.crf.grid import bilateral_message
        >>> m = bilateral_message(tf.ones((1, 40, 40, 2)), tf.zeros((1, 40, 40, 1)), 5.0, 0.5)
        >>> tuple(m.shape)
        (1, 40, 40, 2)
    """
    q = tf.convert_to_tensor(q)
    static_hw(q)
    plan = bilateral_plan(image, theta_alpha, theta_beta, spatial_oversample=spatial_oversample,
                          range_oversample=range_oversample, range_bins=range_bins, truncate=truncate)
    return plan(q)


# ---------------------------------------------------------------------------- CRFRNN backend


def _static(name, value):
    return static_bandwidth(name, value, "grid")


class GridBackend(MeanFieldMixin):
    """The linear-cost grid form: a :class:`~kerasseg.layers.crf.backend.CRFBackend`.

    Args:
        options: a :class:`~kerasseg.layers.crf.backend.GridOptions`, a mapping of its fields, or
            None (the defaults).

    Example:
        >>> import tensorflow as tf
        >>> from kerasseg.layers.crf.grid import GridBackend
        >>> backend = GridBackend({"intensity_bins": 64})
        >>> bw = {"spatial": 3.0, "alpha": 5.0, "beta": 0.5, "intensity": 1.0}
        >>> state = backend.prepare(tf.zeros((1, 40, 40, 1)), kernels=("spatial", "bilateral"), bandwidths=bw)
        >>> unary, weights, compat = tf.zeros((1, 40, 40, 2)), tf.constant([0.1, 0.05]), 1.0 - tf.eye(2)
        >>> q = backend.mean_field(unary, weights, compat, state, 10)
        >>> tuple(q.shape)
        (1, 40, 40, 2)
    """

    name = "grid"

    def __init__(self, options=None):
        self.options = GridOptions.coerce(options)

    def prepare(self, image, *, kernels, bandwidths):
        """One filter per kernel (image-dependent parts precomputed) and its response to an all-ones map.

        image: (B, H, W, 1); bandwidths: mapping of scalars ``spatial``, ``alpha``, ``beta``, ``intensity``.
        """
        image = tf.convert_to_tensor(image)
        if image.shape.rank != 4 or image.shape[-1] != 1:
            raise KerassegError(f"CRFRNN grid mode needs a one-channel image (B, H, W, 1), got {image.shape}")
        o = self.options
        plans = []
        for k in kernels:
            if k == "spatial":
                theta = _static("theta_spatial", bandwidths["spatial"])
                plans.append(lambda q, t=theta: spatial_message(q, t, o.truncate))
            elif k == "bilateral":
                plans.append(bilateral_plan(
                    image, _static("theta_alpha", bandwidths["alpha"]), _static("theta_beta", bandwidths["beta"]),
                    spatial_oversample=o.bilateral_spatial_oversample,
                    range_oversample=o.bilateral_range_oversample, range_bins=o.bilateral_range_bins,
                ))
            elif k == "intensity":
                plans.append(intensity_plan(
                    image, _static("theta_intensity", bandwidths["intensity"]),
                    oversample=o.intensity_oversample, bins=o.intensity_bins,
                ))
            else:
                raise KerassegError(f"CRFRNN: unknown CRF kernel {k!r}")
        ones = tf.ones_like(image[..., :1], dtype=tf.float32)
        return tuple((plan, plan(ones)[..., 0]) for plan in plans)

    def messages(self, q, state):
        """Per-kernel messages (B, H, W, C): the first C-1 labels filtered, the last from the all-ones
        response (:func:`~kerasseg.layers.crf.backend.last_label_messages`)."""
        q = tf.convert_to_tensor(q)
        return [last_label_messages(plan, q, ones) for plan, ones in state]

    def map_messages(self, x, state):
        """Per-kernel messages of one map ``x`` (B, H, W), self term excluded."""
        return [plan(x[..., None])[..., 0] for plan, _ in state]

    def ones_messages(self, state):
        """Per-kernel messages of the all-ones map, (B, H, W) each, computed once by :meth:`prepare`."""
        return [ones for _, ones in state]
