"""The splat-blur-slice machinery of the grid CRF form (:mod:`kerasseg.layers.crf.grid`).

A *plan* holds the image-dependent part of one kernel's filter (cell indices, interpolation weights,
blur matrices, the grid's response to a lone pixel), computed once per layer call and applied to a
label map in every mean-field iteration: :func:`intensity_plan` (1-D intensity histogram) and
:func:`bilateral_plan` (bilateral grid over position and intensity). Core TF ops only.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from kerasseg.errors import KerassegError

__all__ = ["bilateral_grid_shape", "bilateral_plan", "intensity_plan"]


def check_theta(name, value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise KerassegError(f"{name} must be a positive number, got {value!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise KerassegError(f"{name} must be a positive number, got {value!r}")
    return value


def static_hw(q):
    shape = q.shape
    if shape.rank != 4 or shape[1] is None or shape[2] is None or shape[3] is None:
        raise KerassegError(
            f"CRF messages need a (batch, height, width, labels) tensor with static height, width and labels, got {shape}"
        )
    return int(shape[1]), int(shape[2]), int(shape[3])


def _grey(image, q=None):
    image = tf.convert_to_tensor(image)
    if image.shape.rank == 3:
        image = image[..., None]
    if image.shape.rank != 4 or image.shape[-1] != 1 or image.shape[1] is None or image.shape[2] is None:
        raise KerassegError(
            f"grid CRF filtering needs a one-channel image (B, H, W, 1) with static H, W, got {image.shape}"
        )
    return tf.cast(image[..., 0], tf.float32)


def _banded(n, taps):
    """(n, n) matrix applying the centred 1-D filter ``taps`` with zero padding."""
    r = len(taps) // 2
    idx = np.arange(n)
    d = idx[None, :] - idx[:, None]  # column - row
    mat = np.zeros((n, n), np.float64)
    band = np.abs(d) <= r
    mat[band] = np.asarray(taps, np.float64)[d[band] + r]
    return mat.astype(np.float32)


def depthwise_1d(x, taps, axis):
    """Zero-padded 1-D filtering of every channel of a (B, H, W, C) tensor along axis 1 or 2.

    Few channels and an axis at most 16 kernel widths long: a banded matmul (CPU matmuls are
    ~10x faster per useful FLOP than depthwise convolutions here); otherwise a depthwise
    convolution, so the cost stays O(N * taps) for any image size.
    """
    c = x.shape[-1]
    n = x.shape[axis]
    k = np.asarray(taps, np.float32)
    if c <= 8 and n <= 16 * len(k):
        mat = tf.constant(_banded(n, k), x.dtype)
        eq = "ij,bjwc->biwc" if axis == 1 else "ij,bhjc->bhic"
        return tf.einsum(eq, mat, x)
    if axis == 1:
        filt = np.tile(k[:, None, None, None], (1, 1, c, 1))
    else:
        filt = np.tile(k[None, :, None, None], (1, 1, c, 1))
    return tf.nn.depthwise_conv2d(x, tf.constant(filt, x.dtype), strides=[1, 1, 1, 1], padding="SAME")


def _blur_sigma(theta, spacing_var):
    """Std of the grid blur so that blur (+) linear splat (+) linear slice has variance theta^2."""
    return math.sqrt(max(theta**2 - spacing_var, (0.5 * theta) ** 2))


def _lone_pixel_axis(f, k0, k1):
    """Grid response along one axis to a lone pixel at fractional position f (linear splat+slice)."""
    return ((1.0 - f) ** 2 + f**2) * k0 + 2.0 * f * (1.0 - f) * k1


def _range_coords(img, theta, oversample, bins):
    """Per-image bin coordinates of the intensities (B, H, W) on a ``bins``-cell axis.

    Returns (z0 int32, fz float32, spacing (B,)). The spacing is ``theta/oversample``
    or wider when the image's range would not fit in ``bins - 1`` cells.
    """
    lo = tf.reduce_min(img, axis=[1, 2])
    hi = tf.reduce_max(img, axis=[1, 2])
    spacing = tf.maximum(tf.cast(theta / oversample, tf.float32), (hi - lo) / float(bins - 1) * (1.0 + 1e-6))
    z = (img - lo[:, None, None]) / spacing[:, None, None]
    z0 = tf.clip_by_value(tf.floor(z), 0.0, float(bins - 2))
    fz = tf.clip_by_value(z - z0, 0.0, 1.0)
    return tf.cast(z0, tf.int32), fz, spacing


def _range_blur_matrix(spacing, theta, bins):
    """Per-image (B, bins, bins) Gaussian blur along the intensity axis, amplitude corrected.

    Returns (matrix, k0, k1) with k0/k1 (B,) the blur weights at distance 0 and 1 bin.
    """
    var = tf.maximum(theta**2 - spacing**2 / 3.0, (0.5 * theta) ** 2)
    amp = theta / tf.sqrt(var)
    d = tf.range(bins, dtype=tf.float32)
    dist2 = tf.square(d[:, None] - d[None, :])  # (bins, bins)
    mat = amp[:, None, None] * tf.exp(-dist2[None] * tf.square(spacing)[:, None, None] / (2.0 * var[:, None, None]))
    k0 = amp
    k1 = amp * tf.exp(-tf.square(spacing) / (2.0 * var))
    return mat, k0, k1


class _Splat:
    """Image-dependent part of a splat-blur-slice filter, computed once and reused per iteration.

    ids/wts: (B, n, K) flat cell index (batch offset included) and linear weight of
    the K cells each pixel is read from (slice); splat_ids/splat_wts the same for
    the cells it is written to (defaults: the slice cells); self_w: (B, n) the
    grid's response to a lone pixel.
    """

    def __init__(self, h, w, batch, cells, ids, wts, self_w, blur, splat_ids=None, splat_wts=None):
        self.h, self.w, self.batch, self.cells = h, w, batch, cells
        self.ids, self.wts, self.self_w, self.blur = ids, wts, self_w, blur
        self.splat_ids = ids if splat_ids is None else splat_ids
        self.splat_wts = wts if splat_wts is None else splat_wts

    def __call__(self, q):
        q = tf.convert_to_tensor(q)
        h, w, c = static_hw(q)
        if (h, w) != (self.h, self.w):
            raise KerassegError(f"label map {(h, w)} does not match the prepared image {(self.h, self.w)}")
        dtype = q.dtype
        n = h * w
        xf = tf.reshape(tf.cast(q, tf.float32), [self.batch, n, c])
        data = self.splat_wts[..., None] * xf[:, :, None, :]  # (B, n, K, C)
        grid = tf.math.unsorted_segment_sum(
            tf.reshape(data, [-1, c]), tf.reshape(self.splat_ids, [-1]), self.batch * self.cells
        )
        blurred = tf.reshape(self.blur(grid, c), [self.batch * self.cells, c])
        sliced = tf.reduce_sum(tf.gather(blurred, self.ids) * self.wts[..., None], axis=2)  # (B, n, C)
        out = sliced - self.self_w[..., None] * xf
        return tf.cast(tf.reshape(out, [self.batch, h, w, c]), dtype)


def intensity_plan(image, theta, *, oversample=4.0, bins=128):
    """Prepare :func:`~kerasseg.layers.crf.grid.intensity_message` for ``image``: a callable q -> messages.

    Args:
        image: (B, H, W, 1) intensities (static H, W).
        theta: intensity bandwidth (> 0).
        oversample: bins per bandwidth.
        bins: histogram bins (>= 4).

    Returns:
        A callable mapping (B, H, W, C) maps to their (B, H, W, C) messages, self term excluded.

    Example:
        >>> import tensorflow as tf
        >>> from kerasseg.layers.crf.grid_plans import intensity_plan
        >>> plan = intensity_plan(tf.zeros((1, 40, 40, 1)), 1.0)
        >>> tuple(plan(tf.ones((1, 40, 40, 2))).shape)
        (1, 40, 40, 2)
    """
    theta = check_theta("intensity theta", theta)
    bins = int(bins)
    if bins < 4:
        raise KerassegError(f"intensity bins must be >= 4, got {bins}")
    img = _grey(image, None)
    h, w = int(img.shape[1]), int(img.shape[2])
    batch = tf.shape(img)[0]
    n = h * w
    z0, fz, spacing = _range_coords(img, theta, oversample, bins)
    z0 = tf.reshape(z0, [batch, n])
    fz = tf.reshape(fz, [batch, n])
    base = tf.range(batch)[:, None] * bins + z0  # (B, n)
    ids = tf.stack([base, base + 1], axis=-1)  # (B, n, 2)
    wts = tf.stack([1.0 - fz, fz], axis=-1)
    mat, k0, k1 = _range_blur_matrix(spacing, theta, bins)
    self_w = _lone_pixel_axis(fz, k0[:, None], k1[:, None])

    def blur(grid, c):
        return tf.linalg.matmul(mat, tf.reshape(grid, [batch, bins, c]))

    return _Splat(h, w, batch, bins, ids, wts, self_w, blur)


def _spatial_step(theta_alpha, oversample):
    """Grid spacing in pixels: the odd integer nearest theta_alpha / oversample (odd, so the
    nearest-node splat has no ties and no shift)."""
    return max(1, 2 * int(math.floor((theta_alpha / oversample - 1) / 2 + 0.5)) + 1)


def bilateral_grid_shape(height, width, theta_alpha, *, spatial_oversample=2.0, range_bins=32):
    """(Gy, Gx, Gz) cells of the bilateral grid for an (height, width) image: O(N / step^2) cells.

    Args:
        height, width: image size in pixels.
        theta_alpha: position bandwidth, pixels (> 0).
        spatial_oversample: grid nodes per bandwidth.
        range_bins: intensity bins (Gz).

    Example:
        >>> from kerasseg.layers.crf.grid_plans import bilateral_grid_shape
        >>> bilateral_grid_shape(40, 40, 5.0)
        (15, 15, 32)
    """
    theta_alpha = check_theta("bilateral spatial theta", theta_alpha)
    step = _spatial_step(theta_alpha, spatial_oversample)
    return ((height - 1) // step + 2, (width - 1) // step + 2, int(range_bins))


def bilateral_plan(image, theta_alpha, theta_beta, *, spatial_oversample=2.0, range_oversample=2.0,
                   range_bins=32, truncate=4.0):
    """Prepare :func:`~kerasseg.layers.crf.grid.bilateral_message` for ``image``: a callable q -> messages.

    Args:
        image: (B, H, W, 1) intensities (static H, W).
        theta_alpha, theta_beta: position (pixels) and intensity bandwidths (> 0).
        spatial_oversample, range_oversample: grid nodes per bandwidth along space and intensity.
        range_bins: intensity bins (>= 4).
        truncate: cut-off of the spatial blur, in blur standard deviations.

    Returns:
        A callable mapping (B, H, W, C) maps to their (B, H, W, C) messages, self term excluded.

    Example:
        >>> import tensorflow as tf
        >>> from kerasseg.layers.crf.grid_plans import bilateral_plan
        >>> plan = bilateral_plan(tf.zeros((1, 40, 40, 1)), 5.0, 0.5)
        >>> tuple(plan(tf.ones((1, 40, 40, 2))).shape)
        (1, 40, 40, 2)
    """
    ta = check_theta("bilateral spatial theta", theta_alpha)
    tb = check_theta("bilateral intensity theta", theta_beta)
    gz = int(range_bins)
    if gz < 4:
        raise KerassegError(f"bilateral range_bins must be >= 4, got {gz}")
    img = _grey(image, None)
    h, w = int(img.shape[1]), int(img.shape[2])
    batch = tf.shape(img)[0]
    n = h * w
    step = _spatial_step(ta, spatial_oversample)
    gy, gx, _ = bilateral_grid_shape(h, w, ta, spatial_oversample=spatial_oversample, range_bins=gz)
    cells = gy * gx * gz

    # Static spatial coordinates (integer step: fractions k/step). Pixels are splatted to
    # their nearest spatial node (2 grid rows per pixel: linear in intensity only, the
    # scatter being the costly part) and sliced back with bilinear weights (8 corners).
    yy = np.arange(h) / step
    xx = np.arange(w) / step
    y0 = np.floor(yy).astype(np.int64)
    x0 = np.floor(xx).astype(np.int64)
    fy = yy - y0
    fx = xx - x0
    ym = np.floor(yy + 0.5).astype(np.int64)  # nearest node
    xm = np.floor(xx + 0.5).astype(np.int64)
    Y0, X0 = np.meshgrid(y0, x0, indexing="ij")
    FY, FX = np.meshgrid(fy, fx, indexing="ij")
    YM, XM = np.meshgrid(ym, xm, indexing="ij")
    sp_base = (Y0 * gx + X0).reshape(-1) * gz  # (n,)
    offs, cw = [], []
    for dy in (0, 1):
        for dx in (0, 1):
            offs.append((dy * gx + dx) * gz)
            cw.append(((FY if dy else 1 - FY) * (FX if dx else 1 - FX)).reshape(-1))
    sp_ids = tf.constant(np.stack([sp_base + o for o in offs], -1).astype(np.int32))  # (n, 4)
    sp_w = tf.constant(np.stack(cw, -1).astype(np.float32))  # (n, 4)
    sp_near = tf.constant(((YM * gx + XM).reshape(-1) * gz).astype(np.int32))  # (n,)

    z0, fz, spacing = _range_coords(img, tb, range_oversample, gz)
    z0 = tf.reshape(z0, [batch, n])
    fz = tf.reshape(fz, [batch, n])
    boff = tf.range(batch)[:, None] * cells
    base = boff[:, :, None] + sp_ids[None] + z0[:, :, None]  # (B, n, 4)
    ids = tf.concat([base, base + 1], axis=-1)  # (B, n, 8)
    wts = tf.concat([sp_w[None] * (1.0 - fz)[:, :, None], sp_w[None] * fz[:, :, None]], axis=-1)
    near = boff + sp_near[None] + z0  # (B, n)
    splat_ids = tf.stack([near, near + 1], axis=-1)  # (B, n, 2)
    splat_wts = tf.stack([1.0 - fz, fz], axis=-1)

    # blur along space: separable Gaussian in grid cells (static taps), narrowed and
    # rescaled for the nearest splat (variance (s^2-1)/12) and linear slice ((s^2-1)/6)
    sig_p = _blur_sigma(ta, (step**2 - 1) / 4.0)
    amp_p = ta / sig_p
    radius = max(1, int(math.ceil(truncate * sig_p / step)))
    d = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = amp_p * np.exp(-((d * step) ** 2) / (2 * sig_p**2))
    # blur along intensity: per-image (gz x gz) Gaussian matrix
    mat, k0z, k1z = _range_blur_matrix(spacing, tb, gz)

    k1p = amp_p * math.exp(-(step**2) / (2 * sig_p**2))

    def lone(f, near_is_upper):  # slice weights (1-f, f) read from nodes (y0, y0+1); splat at the nearest
        return np.where(near_is_upper, (1 - f) * k1p + f * amp_p, (1 - f) * amp_p + f * k1p)

    self_sp = (lone(FY, YM > Y0) * lone(FX, XM > X0)).reshape(-1)
    self_w = tf.constant(self_sp.astype(np.float32))[None] * _lone_pixel_axis(fz, k0z[:, None], k1z[:, None])

    def blur(grid, c):
        g = tf.reshape(grid, [batch, gy, gx, gz * c])
        g = depthwise_1d(depthwise_1d(g, taps, 1), taps, 2)
        g = tf.reshape(g, [batch, gy * gx, gz, c])
        return tf.einsum("bzk,bnkc->bnzc", mat, g)

    return _Splat(h, w, batch, cells, ids, wts, self_w, blur, splat_ids, splat_wts)
