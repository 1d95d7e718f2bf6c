"""Image transforms as pure TensorFlow core ops (the one definition used by training and serving).

Every function works eagerly and inside ``tf.function`` with an unknown batch dimension, uses only
core TF ops (no ``tf.py_function``, no XLA-only ops; NumPy only builds constants at trace time), so
Keras preprocessing layers built on them export to SavedModels that a stock
``tensorflow_model_server`` loads. Inputs are (B, H, W) batches of grey images (tensors or arrays);
float32/float64 inputs are computed in their own precision, other dtypes as float32; results are
float32 unless stated.

* :func:`resize` / :func:`resize_mask` - ROI resizing. Both papers: "ROIs extracted with rectangular
  bounding boxes and then resized into 40x40 using bicubic interpolation".
* :func:`scale01` - per image linear scaling to [0, 1].
* :func:`equalize_hist` - ``skimage.exposure.equalize_hist`` (exact on float32/float64 input).
* :func:`clahe` - ``skimage.exposure.equalize_adapthist`` for 2-D grey images, including the
  residual redistribution loop of ``clip_histogram`` (exact on float32 input).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kerasseg.errors import KerassegError

NR_OF_GRAY = 2**14  # grey levels of skimage's CLAHE
RESIZE_METHODS = ("bicubic", "bilinear")


def _as_images(images, what="images"):
    """(B, H, W) float tensor: float32/float64 kept, anything else cast to float32."""
    x = tf.convert_to_tensor(images)
    if x.dtype not in (tf.float32, tf.float64):
        x = tf.cast(x, tf.float32)
    if x.shape.rank != 3:
        raise KerassegError(f"{what} must have shape (B, H, W), got {x.shape}")
    return x


def _size_pair(size):
    """(h, w) from an int, a pair, or a scalar / length-2 int32 tensor; python ints where static."""
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    if (tf.is_tensor(size) and size.shape.rank == 0) or (isinstance(size, np.ndarray) and size.ndim == 0):
        s = tf.get_static_value(size)
        return (int(s), int(s)) if s is not None else (size, size)
    if tf.is_tensor(size) or isinstance(size, np.ndarray):
        s = tf.get_static_value(size)
        if s is not None:
            return int(s[0]), int(s[1])
        return size[0], size[1]
    if isinstance(size, (tuple, list)) and len(size) == 2:
        out = []
        for s in size:
            v = tf.get_static_value(s) if tf.is_tensor(s) else s
            out.append(int(v) if v is not None else s)
        return tuple(out)
    raise KerassegError(f"resize size must be an int or an (h, w) pair, got {size!r}")


def resize(images, size, method="bicubic"):
    """Resize each image of a batch with anti-aliasing.

    ``tf.image.resize(x[..., None], (h, w), method, antialias=True)``: TF's ScaleAndTranslate with
    the Keys cubic kernel (a = -0.5, "bicubic", for images) or the triangle kernel ("bilinear", for
    masks as float before thresholding and for probability maps). When shrinking, the kernel is
    widened by the scale factor, which low-pass filters the 73-934 px crops before they become
    40 px (plain bicubic would alias their texture). When enlarging, TF's anti-aliased kernels equal
    the plain kernels (``antialias=False``; checked by the tests up to float rounding), so one code
    path serves both directions. scikit-image's ``transform.resize(order=3, anti_aliasing=True)`` is a
    different filter (a cubic B-spline interpolation after a Gaussian pre-smoothing): the two agree
    closely on smooth images (correlation > 0.99 in the tests), not pixel for pixel. Bicubic output
    can overshoot the input range slightly (it is not clipped).

    Args:
        images: (B, H, W) batch of grey images.
        size: target size: a python int, an (h, w) pair of python ints, or int32 tensors (a scalar,
            a length-2 vector or a pair), e.g. the crop size to map a probability map back to.
        method: "bicubic" or "bilinear".

    Returns:
        float32 (B, h, w); the input (as float32) unchanged when it already has the target size
        (a python check for static shapes, ``tf.cond`` otherwise).
    """
    if method not in RESIZE_METHODS:
        raise KerassegError(f"unknown resize method {method!r}; choose one of {list(RESIZE_METHODS)}")
    x = tf.cast(_as_images(images), tf.float32)
    h, w = _size_pair(size)

    def do_resize():
        target = tf.stack([tf.cast(h, tf.int32), tf.cast(w, tf.int32)])
        return tf.image.resize(x[..., None], target, method=method, antialias=True)[..., 0]

    if isinstance(h, int) and isinstance(w, int):
        if (x.shape[1], x.shape[2]) == (h, w):
            return x
        if x.shape[1] is not None and x.shape[2] is not None:
            return do_resize()
    same = tf.logical_and(tf.equal(tf.shape(x)[1], tf.cast(h, tf.int32)),
                          tf.equal(tf.shape(x)[2], tf.cast(w, tf.int32)))
    return tf.cond(same, lambda: tf.identity(x), do_resize)


def resize_mask(mask, size):
    """Resize {0, 1} masks: bilinear (anti-aliased) resize of the mask as float, then ``>= 0.5``.

    Args:
        mask: (B, H, W) masks with values in {0, 1} (any numeric dtype).
        size: as for :func:`resize`.

    Returns:
        uint8 (B, h, w) in {0, 1}.
    """
    prob = resize(tf.cast(tf.convert_to_tensor(mask), tf.float32), size, method="bilinear")
    return tf.cast(prob >= 0.5, tf.uint8)


def scale01(images):
    """Scale each image linearly to [0, 1]; a constant image becomes all zeros.

    Args:
        images: (B, H, W) batch of grey images.

    Returns:
        float32 (B, H, W) in [0, 1].
    """
    x = _as_images(images)
    lo = tf.reduce_min(x, axis=(1, 2), keepdims=True)
    hi = tf.reduce_max(x, axis=(1, 2), keepdims=True)
    rng = hi - lo
    safe = tf.where(rng > 0, rng, tf.ones_like(rng))
    return tf.cast(tf.where(rng > 0, (x - lo) / safe, tf.zeros_like(x)), tf.float32)


def _count(ids, n_groups, n_bins):
    """(n_groups, n_bins) int32 counts of flat ``group * n_bins + bin`` ids (float32 sums: exact)."""
    ones = tf.ones_like(ids, dtype=tf.float32)
    counts = tf.math.unsorted_segment_sum(ones, ids, n_groups * n_bins)
    return tf.reshape(tf.cast(tf.round(counts), tf.int32), tf.stack([n_groups, n_bins]))


def equalize_hist(images, nbins=256):
    """Global histogram equalisation of each image, exactly as ``skimage.exposure.equalize_hist``.

    NumPy's algorithm is reproduced in the input precision: ``nbins`` equal bins over [min, max] of
    each image (edges as ``np.linspace``; the last bin includes the right edge; a constant image
    gets the range [v - 0.5, v + 0.5]), the cumulative histogram divided by the pixel count, and
    ``np.interp`` between the bin centres in float64 (values below the first / above the last centre
    take the first / last cdf value). A constant image therefore maps to 0.5 everywhere, as in
    scikit-image. Integer inputs are binned as float32 values (scikit-image gives integer images one
    bin per value instead). Tests: max abs difference to scikit-image <= 1e-5 (float32 input;
    measured 0 on 12/16-bit and [0, 1] ROIs).

    Args:
        images: (B, H, W) batch of grey images (any range).
        nbins: number of histogram bins.

    Returns:
        float32 (B, H, W) in [0, 1].
    """
    x = _as_images(images)
    ft = x.dtype
    b = tf.shape(x)[0]
    flat = tf.reshape(x, tf.stack([b, -1]))
    lo = tf.reduce_min(flat, axis=1)
    hi = tf.reduce_max(flat, axis=1)
    const = tf.equal(lo, hi)
    lo = tf.where(const, lo - 0.5, lo)
    hi = tf.where(const, hi + 0.5, hi)
    delta = hi - lo
    # np.linspace(lo, hi, nbins + 1) in the input precision: i * step + lo, last edge = hi
    step = delta / tf.cast(nbins, ft)
    edges = tf.range(nbins + 1, dtype=ft)[None, :] * step[:, None] + lo[:, None]
    edges = tf.concat([edges[:, :nbins], hi[:, None]], axis=1)
    # np.histogram's bin index with its one-ulp corrections
    idx = tf.cast(((flat - lo[:, None]) / delta[:, None]) * tf.cast(nbins, ft), tf.int32)
    idx = tf.where(idx == nbins, nbins - 1, idx)
    idx = tf.where(flat < tf.gather(edges, idx, batch_dims=1), idx - 1, idx)
    inc = (flat >= tf.gather(edges, idx + 1, batch_dims=1)) & (idx != nbins - 1)
    idx = tf.where(inc, idx + 1, idx)
    ids = idx + tf.range(b)[:, None] * nbins
    hist = _count(ids, b, nbins)
    cum = tf.cast(tf.cumsum(hist, axis=1), tf.float64)
    cdf = tf.cast(cum / cum[:, -1:], ft)
    centers = (edges[:, :-1] + edges[:, 1:]) / 2.0
    # np.interp in float64
    xp, fp, xv = tf.cast(centers, tf.float64), tf.cast(cdf, tf.float64), tf.cast(flat, tf.float64)
    j = tf.searchsorted(xp, xv, side="right") - 1
    jc = tf.clip_by_value(j, 0, nbins - 2) if nbins > 1 else tf.zeros_like(j)
    x0, f0 = tf.gather(xp, jc, batch_dims=1), tf.gather(fp, jc, batch_dims=1)
    if nbins > 1:
        x1, f1 = tf.gather(xp, jc + 1, batch_dims=1), tf.gather(fp, jc + 1, batch_dims=1)
        inner = (f1 - f0) / (x1 - x0) * (xv - x0) + f0
    else:
        inner = f0
    out = tf.where(j < 0, fp[:, :1], tf.where(j >= nbins - 1, fp[:, -1:], inner))
    out = tf.cast(tf.cast(out, ft), tf.float32)
    return tf.reshape(out, tf.shape(x))


def _reflect_index(n, before, after):
    """Source indices of ``np.pad(mode="reflect")`` (mirror without repeating the edge), any width."""
    i = np.arange(-before, n + after)
    if n == 1:
        return np.zeros_like(i)
    period = 2 * (n - 1)
    m = np.mod(i, period)
    return np.where(m < n, m, period - m)


def _clip_histograms(hist, clim, max_passes):
    """skimage's ``clip_histogram`` on every row of an (N, nbins) int32 tensor at once.

    The residual redistribution is the same loop: passes over ``index`` in 0..nbins-1, each adding
    one to the under-limit bins at ``index::step`` (step = max(1, n_under // n_excess)); a row stops
    when its excess is used up or a whole pass changes nothing. Each pass that changes a row lowers
    its excess by at least one, so ``max_passes`` = pixels per region + 1 is never reached.
    """
    nb = hist.shape[-1]
    over = hist > clim
    n_excess = tf.reduce_sum(tf.where(over, hist - clim, 0), axis=1)
    hist = tf.minimum(hist, clim)
    bin_incr = n_excess // nb
    upper = (clim - bin_incr)[:, None]
    low = hist < upper
    n_excess -= tf.reduce_sum(tf.cast(low, tf.int32), axis=1) * bin_incr
    hist = tf.where(low, hist + bin_incr[:, None], hist)
    mid = (hist >= upper) & (hist < clim)
    n_excess += tf.reduce_sum(tf.where(mid, hist - clim, 0), axis=1)
    hist = tf.where(mid, clim, hist)
    pos = tf.range(nb)[None, :]

    def one_pass(it, hist, n_excess, active):
        def inner_cond(index, hist, n_excess, live):
            return tf.logical_and(index < nb, tf.reduce_any(live))

        def inner_body(index, hist, n_excess, live):
            under = hist < clim
            n_under = tf.reduce_sum(tf.cast(under, tf.int32), axis=1)
            step = tf.maximum(1, n_under // tf.maximum(n_excess, 1))[:, None]
            sel = under & (pos >= index) & (tf.math.floormod(pos - index, step) == 0) & live[:, None]
            sel = tf.cast(sel, tf.int32)
            n_excess = n_excess - tf.reduce_sum(sel, axis=1)
            return index + 1, hist + sel, n_excess, live & (n_excess > 0)

        prev = n_excess
        _, hist, n_excess, live = tf.while_loop(
            inner_cond, inner_body, (tf.constant(0), hist, n_excess, active))
        return it + 1, hist, n_excess, live & (n_excess != prev)

    def outer_cond(it, hist, n_excess, active):
        return tf.logical_and(it < max_passes, tf.reduce_any(active))

    _, hist, _, _ = tf.while_loop(outer_cond, one_pass, (tf.constant(0), hist, n_excess, n_excess > 0))
    return hist


def clahe(images, clip_limit=0.01, kernel_size=None, nbins=256):
    """Contrast-limited adaptive histogram equalisation: ``skimage.exposure.equalize_adapthist``.

    The steps of scikit-image (``equalize_adapthist``, ``_clahe``, ``clip_histogram``,
    ``map_histogram``) for 2-D grey images, vectorised over the batch: ``img_as_uint`` (rint of
    x * 65535 in the input precision), rescale to [0, 2**14 - 1] by the image's min/max and round,
    reflect padding to whole regions plus half a region, grey bins ``v // (1 + 2**14 // nbins)``,
    one histogram per contextual region, clipping at ``clim = int(max(clip_limit * region_pixels, 1))``
    (no clipping for ``clip_limit <= 0``) with the residual redistribution loop (at 40x40 the default
    region is 5x5 = 25 px and clim = 1, so this loop dominates the result), the mapping
    ``int(min(cumsum * (2**14 - 1) / region_pixels, 2**14 - 1))``, the bilinear interpolation between
    the four neighbouring region mappings (float64 terms summed in float32 in scikit-image's order),
    truncation to integers and the final rescale to [0, 1] (a constant result is clipped to [0, 1]).
    The integer stages are exact and the float stages follow scikit-image's precision, so float32
    input gives scikit-image's float32 result (tests: max abs difference <= 1e-3 on >= 99.9% of
    pixels, mean < 1e-4; measured 0 on mammogram-like ROIs). Float64 input to scikit-image can differ
    where x * 65535 rounds differently in float64 than in float32.

    Args:
        images: (B, H, W) batch of grey images in [0, 1] (e.g. :func:`scale01` output; values outside
            are clipped, where scikit-image raises for values outside [-1, 1]). H and W must be
            static (known when tracing); B may be dynamic.
        clip_limit: normalised clipping limit (higher gives more contrast).
        kernel_size: contextual region size, an int or an (h, w) pair; None = max(s // 8, 1) per side.
        nbins: number of grey bins of the histograms.

    Returns:
        float32 (B, H, W) in [0, 1].
    """
    x = _as_images(images)
    ft = x.dtype
    H, W = x.shape[1], x.shape[2]
    if H is None or W is None:
        raise KerassegError(f"clahe needs a static image height and width, got shape {x.shape}")
    if kernel_size is None:
        ks = (max(H // 8, 1), max(W // 8, 1))
    elif isinstance(kernel_size, (int, np.integer)):
        ks = (int(kernel_size),) * 2
    elif len(kernel_size) == 2:
        ks = tuple(int(k) for k in kernel_size)
    else:
        raise KerassegError(f"clahe kernel_size must be an int or an (h, w) pair, got {kernel_size!r}")
    if min(ks) < 1 or nbins < 1:
        raise KerassegError(f"clahe kernel_size and nbins must be positive, got {kernel_size!r}, {nbins!r}")
    (k0, k1), ke = ks, ks[0] * ks[1]
    clim = int(np.clip(clip_limit * ke, 1, None)) if clip_limit > 0.0 else ke
    b = tf.shape(x)[0]

    # img_as_uint, then rescale_intensity(out_range=(0, NR_OF_GRAY - 1)) in float64 and np.round
    u = tf.cast(tf.clip_by_value(tf.math.rint(x * 65535.0), 0.0, 65535.0), tf.float64)
    mn = tf.reduce_min(u, axis=(1, 2), keepdims=True)
    mx = tf.reduce_max(u, axis=(1, 2), keepdims=True)
    span = tf.where(mx > mn, mx - mn, tf.ones_like(mx))
    v = tf.where(mx > mn, (u - mn) / span * float(NR_OF_GRAY - 1), tf.minimum(u, NR_OF_GRAY - 1.0))
    v = tf.cast(tf.round(v), tf.int32) // (1 + NR_OF_GRAY // nbins)  # grey bins (the lut)

    # reflect padding to whole regions plus half a region on each side
    p0, p1 = k0 // 2, k1 // 2
    e0 = (k0 - H % k0) % k0 + int(np.ceil(k0 / 2.0))
    e1 = (k1 - W % k1) % k1 + int(np.ceil(k1 / 2.0))
    img = tf.gather(tf.gather(v, _reflect_index(H, p0, e0), axis=1), _reflect_index(W, p1, e1), axis=2)
    Hp, Wp = H + p0 + e0, W + p1 + e1
    n0, n1 = Hp // k0 - 1, Wp // k1 - 1  # contextual regions per axis

    # one histogram per contextual region, clipped and mapped
    reg = img[:, p0:p0 + n0 * k0, p1:p1 + n1 * k1]
    reg = tf.transpose(tf.reshape(reg, tf.stack([b, n0, k0, n1, k1])), (0, 1, 3, 2, 4))
    reg = tf.reshape(reg, tf.stack([b * n0 * n1, ke]))
    hist = _count(reg + tf.range(b * n0 * n1)[:, None] * nbins, b * n0 * n1, nbins)
    hist = _clip_histograms(hist, clim, max_passes=ke + 1)
    cum = tf.cast(tf.cumsum(hist, axis=1), tf.float64) * ((NR_OF_GRAY - 1) / ke)
    maps = tf.cast(tf.minimum(cum, NR_OF_GRAY - 1.0), tf.int32)
    maps = tf.reshape(maps, tf.stack([b, n0, n1, nbins]))
    maps = tf.gather(tf.gather(maps, [0, *range(n0), n0 - 1], axis=1), [0, *range(n1), n1 - 1], axis=2)

    # bilinear interpolation of the neighbouring mappings, in scikit-image's order and precision
    m0, m1 = n0 + 1, n1 + 1  # processing blocks per axis
    blocks = tf.transpose(tf.reshape(img, tf.stack([b, m0, k0, m1, k1])), (0, 1, 3, 2, 4))
    blocks = tf.reshape(blocks, tf.stack([b, m0 * m1, ke]))
    coeffs = np.meshgrid(*[np.arange(k) / k for k in ks[::-1]], indexing="ij")
    coeffs = [np.transpose(c).flatten() for c in coeffs]
    inv_coeffs = [1 - c for c in coeffs]
    result = None
    for edge in np.ndindex(2, 2):
        emaps = tf.reshape(maps[:, edge[0]:edge[0] + m0, edge[1]:edge[1] + m1],
                           tf.stack([b, m0 * m1, nbins]))
        mapped = tf.cast(tf.gather(emaps, blocks, batch_dims=2), tf.float64)
        ecoef = np.prod([[inv_coeffs, coeffs][e][d] for d, e in enumerate(edge[::-1])], 0)
        term = tf.cast(mapped * ecoef, tf.float32)
        result = term if result is None else result + term
    out = tf.cast(result, tf.int32)  # astype(uint16): truncation
    out = tf.reshape(tf.transpose(tf.reshape(out, tf.stack([b, m0, m1, k0, k1])), (0, 1, 3, 2, 4)),
                     tf.stack([b, Hp, Wp]))
    out = tf.cast(out[:, p0:p0 + H, p1:p1 + W], ft)

    # rescale_intensity(out) to [0, 1] in the input precision
    lo = tf.reduce_min(out, axis=(1, 2), keepdims=True)
    hi = tf.reduce_max(out, axis=(1, 2), keepdims=True)
    rng = tf.where(hi > lo, hi - lo, tf.ones_like(hi))
    out = tf.where(hi > lo, (out - lo) / rng, tf.clip_by_value(out, 0.0, 1.0))
    return tf.cast(out, tf.float32)


__all__ = ["resize", "resize_mask", "scale01", "equalize_hist", "clahe", "NR_OF_GRAY", "RESIZE_METHODS"]
