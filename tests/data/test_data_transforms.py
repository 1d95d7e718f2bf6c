"""kerasseg.data.transforms against scikit-image / NumPy / SciPy references.

Tolerances (float32 input to both sides):
* equalize_hist: max abs difference <= 1e-5 (measured: 0).
* clahe: |difference| <= 1e-3 on >= 99.9% of pixels and mean abs difference < 1e-4 (measured: 0,
  the TF version reproduces scikit-image's integer stages and float precision).
* resize: a different kernel from scikit-image's (Keys cubic vs cubic spline), so only correlation
  > 0.99 on smooth images; exact identity when the size already matches.
"""

import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage
from skimage import exposure
from skimage.transform import resize as sk_resize

from kerasseg.data import transforms as T
from kerasseg.errors import KerassegError


def _roi(rng, h, w, bits):
    """Mammogram-like ROI: smooth random texture + a bright blob + noise, integer 12/16-bit range."""
    f = ndimage.gaussian_filter(rng.standard_normal((h, w)), 3) * 4
    yy, xx = np.mgrid[:h, :w]
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    r = rng.uniform(0.15, 0.3) * min(h, w)
    f += 3 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    f += 0.3 * rng.standard_normal((h, w))
    f = (f - f.min()) / (f.max() - f.min())
    return np.round(f * (2**bits - 1) * rng.uniform(0.5, 1.0)) + rng.integers(0, 200)


def _stack(rng, h, w, n=4):
    return np.stack([_roi(rng, h, w, (12, 16)[i % 2]) for i in range(n)]).astype(np.float32)


def _as01(raw):
    """float32 [0, 1] images, scaled in float64 (independent of T.scale01)."""
    lo = raw.min(axis=(1, 2), keepdims=True)
    hi = raw.max(axis=(1, 2), keepdims=True)
    return ((raw - lo) / (hi - lo)).astype(np.float32)


SIZES = [(40, 40), (64, 64), (37, 45)]


@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("nbins", [256, 64])
def test_equalize_hist_matches_skimage(hw, nbins):
    rng = np.random.default_rng(hw[0] * 7 + nbins)
    raw = _stack(rng, *hw)
    for x in (raw, _as01(raw)):  # raw 12/16-bit range and [0, 1]
        ref = np.stack([exposure.equalize_hist(i, nbins=nbins) for i in x])
        got = T.equalize_hist(x, nbins=nbins).numpy()
        assert got.dtype == np.float32 and got.shape == x.shape
        assert np.abs(got - ref).max() <= 1e-5


@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("nbins", [256, 64])
@pytest.mark.parametrize("clip_limit", [0.01, 0.03])
@pytest.mark.parametrize("kernel_size", [None, 8])
def test_clahe_matches_skimage(hw, nbins, clip_limit, kernel_size):
    rng = np.random.default_rng(hw[1] * 13 + nbins)
    x = _as01(_stack(rng, *hw))
    ref = np.stack([exposure.equalize_adapthist(i, kernel_size=kernel_size, clip_limit=clip_limit,
                                                nbins=nbins) for i in x])
    got = T.clahe(x, clip_limit=clip_limit, kernel_size=kernel_size, nbins=nbins).numpy()
    assert got.dtype == np.float32 and got.shape == x.shape
    d = np.abs(got.astype(np.float64) - ref)
    assert np.mean(d <= 1e-3) >= 0.999
    assert d.mean() < 1e-4


def test_clahe_float64_input_and_reference():
    x = _as01(_stack(np.random.default_rng(5), 40, 40)).astype(np.float64)
    ref = np.stack([exposure.equalize_adapthist(i) for i in x])
    assert np.abs(T.clahe(x).numpy() - ref).max() <= 1e-6  # float32 rounding of the result only


def test_clip_histograms_matches_skimage_clip_histogram():
    from skimage.exposure._adapthist import clip_histogram

    rng = np.random.default_rng(3)
    hist = rng.integers(0, 8, size=(120, 64)) * (rng.random((120, 64)) < 0.3)
    hist[:40] = rng.poisson(0.3, (40, 64))
    hist[40:50, :5] = 40  # large excess: several redistribution passes
    for clim in (1, 2, 5, 20):
        ref = np.stack([clip_histogram(h.copy(), clim) for h in hist])
        got = T._clip_histograms(tf.constant(hist, tf.int32), clim, max_passes=64 * 40).numpy()
        np.testing.assert_array_equal(got, ref)


def test_reflect_index_matches_np_pad():
    for n, before, after in [(5, 2, 3), (7, 0, 6), (4, 9, 11), (1, 2, 2)]:
        a = np.arange(n)
        np.testing.assert_array_equal(T._reflect_index(n, before, after),
                                      np.pad(a, (before, after), mode="reflect"))


def test_tf_function_unknown_batch_and_per_image_results():
    x = _as01(_stack(np.random.default_rng(9), 40, 40, n=5))
    spec = [tf.TensorSpec([None, 40, 40], tf.float32)]
    f_clahe = tf.function(lambda t: T.clahe(t, clip_limit=0.01), input_signature=spec)
    f_hist = tf.function(T.equalize_hist, input_signature=spec)
    for fn, eager in ((f_clahe, T.clahe), (f_hist, T.equalize_hist)):
        batch = fn(tf.constant(x)).numpy()
        assert np.all(np.isfinite(batch)) and batch.min() >= 0.0 and batch.max() <= 1.0
        np.testing.assert_array_equal(batch, eager(x).numpy())
        for i in range(len(x)):  # one at a time = the same as in a batch
            np.testing.assert_array_equal(fn(tf.constant(x[i:i + 1])).numpy()[0], batch[i])
        assert fn(tf.zeros([0, 40, 40])).shape == (0, 40, 40)


def test_constant_images_match_skimage():
    c = np.stack([np.full((40, 40), v, np.float32) for v in (0.0, 0.3, 1.0)])
    np.testing.assert_array_equal(T.clahe(c).numpy(), np.stack([exposure.equalize_adapthist(i) for i in c]))
    np.testing.assert_allclose(T.equalize_hist(c).numpy(), np.stack([exposure.equalize_hist(i) for i in c]),
                               atol=1e-6)
    np.testing.assert_array_equal(T.scale01(c * 100 + 7).numpy(), np.zeros_like(c))


def test_scale01_matches_numpy():
    raw = _stack(np.random.default_rng(2), 37, 45, n=3).astype(np.float64)
    got = T.scale01(raw).numpy()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, _as01(raw), atol=1e-6)
    assert np.all(got.min(axis=(1, 2)) == 0) and np.all(got.max(axis=(1, 2)) == 1)


def _smooth(rng, n, size):
    return np.stack([ndimage.gaussian_filter(rng.standard_normal((size, size)), 4)
                     for _ in range(n)]).astype(np.float32)


def test_resize_close_to_skimage_on_smooth_images():
    img = _smooth(np.random.default_rng(4), 3, 73)
    for src, dst in [(73, 40), (40, 64), (64, 20)]:
        x = img[:, :src, :src]
        got = T.resize(x, dst).numpy()
        assert got.shape == (3, dst, dst) and got.dtype == np.float32
        ref = [sk_resize(i.astype(np.float64), (dst, dst), order=3, anti_aliasing=True) for i in x]
        for g, r in zip(got, ref):
            assert np.corrcoef(g.ravel(), r.ravel())[0, 1] > 0.99


@pytest.mark.parametrize("method", ["bicubic", "bilinear"])
def test_resize_antialias_equals_plain_kernel_when_enlarging(method):
    img = _smooth(np.random.default_rng(6), 2, 37)
    for dst in [(40, 40), (64, 100)]:
        plain = tf.image.resize(img[..., None], dst, method=method, antialias=False)[..., 0].numpy()
        np.testing.assert_allclose(T.resize(img, dst, method=method).numpy(), plain,
                                   atol=1e-3 * np.ptp(img))


def test_resize_identity_and_dynamic_size():
    img = _smooth(np.random.default_rng(7), 2, 40)
    np.testing.assert_array_equal(T.resize(img, 40).numpy(), img)
    np.testing.assert_array_equal(T.resize(img, (40, 40), method="bilinear").numpy(), img)
    f = tf.function(lambda x, s: T.resize(x, s, method="bilinear"),
                    input_signature=[tf.TensorSpec([None, None, None]), tf.TensorSpec([2], tf.int32)])
    np.testing.assert_array_equal(f(img, tf.constant([40, 40])).numpy(), img)
    out = f(img, tf.constant([30, 52])).numpy()
    np.testing.assert_allclose(out, T.resize(img, (30, 52), method="bilinear").numpy(), atol=1e-6)
    with pytest.raises(KerassegError):
        T.resize(img, 20, method="nearest")


def test_resize_mask():
    yy, xx = np.mgrid[:80, :80]
    mask = (((yy - 40) ** 2 + (xx - 35) ** 2) < 20**2).astype(np.uint8)[None]
    got = T.resize_mask(mask, 40).numpy()
    assert got.dtype == np.uint8 and got.shape == (1, 40, 40) and set(np.unique(got)) <= {0, 1}
    ref = sk_resize(mask[0].astype(float), (40, 40), order=1, anti_aliasing=True) >= 0.5
    assert np.mean(got[0] == ref) > 0.98
    assert abs(got.sum() * 4 - mask.sum()) < 0.05 * mask.sum()


def test_graph_uses_only_registered_core_ops():
    from tensorflow.python.framework import op_def_registry

    spec = [tf.TensorSpec([None, 40, 40], tf.float32)]

    def all_ops(x):
        return T.clahe(x) + T.equalize_hist(x) + T.scale01(x) + T.resize(T.resize(x, 20), 40)

    gd = tf.function(all_ops, input_signature=spec).get_concrete_function().graph.as_graph_def()
    types = {n.op for n in gd.node} | {n.op for f in gd.library.function for n in f.node_def}
    assert "While" in types or "StatelessWhile" in types
    bad = sorted(t for t in types if op_def_registry.get(t) is None or t.startswith("Xla")
                 or t in ("PyFunc", "EagerPyFunc", "PyFuncStateless"))
    assert not bad, bad


def test_clahe_needs_static_spatial_shape():
    f = tf.function(T.clahe, input_signature=[tf.TensorSpec([None, None, 40], tf.float32)],
                    autograph=False)  # with autograph the error arrives wrapped in a StagingError
    with pytest.raises(KerassegError, match="static image height"):
        f.get_concrete_function()
