"""Linear-cost CRF filtering (kerasseg.layers.crf.grid) against the dense NumPy float64 form."""

import numpy as np
import pytest
import tensorflow as tf

from fixtures.crf import disc_crf_problem as _images
from kerasseg.errors import KerassegError
from kerasseg.layers.crf import CRFRNN
from kerasseg.layers.crf import grid as cf


def _dense(q, kernel_fn):
    """sum_{j != i} K_ij q_j in float64, K from kernel_fn(b) (P, P)."""
    b, h, w, c = q.shape
    out = []
    for i in range(b):
        k = kernel_fn(i)
        np.fill_diagonal(k, 0.0)
        out.append((k @ q[i].reshape(-1, c).astype(np.float64)).reshape(h, w, c))
    return np.stack(out)


def _pos_d2(h, w):
    yy, xx = np.mgrid[:h, :w]
    p = np.stack([yy.ravel(), xx.ravel()], 1).astype(np.float64)
    return ((p[:, None] - p[None]) ** 2).sum(-1)


def _q(rng, b, h, w, c=2):
    q = rng.random((b, h, w, c))
    return (q / q.sum(-1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("theta,h,w", [(1.0, 40, 40), (3.0, 24, 40), (3.0, 40, 40)])
def test_spatial_matches_dense(rng, theta, h, w):
    q = _q(rng, 2, h, w)
    d2 = _pos_d2(h, w)
    ref = _dense(q, lambda i: np.exp(-d2 / (2 * theta**2)))
    got = cf.spatial_message(tf.constant(q), theta).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("ta,tb", [(3.0, 0.3), (5.0, 0.5), (10.0, 1.0)])
def test_bilateral_matches_dense(rng, ta, tb):
    img, _ = _images(rng)
    q = _q(rng, 2, 40, 40)
    d2 = _pos_d2(40, 40)
    feats = img.reshape(2, -1).astype(np.float64)
    ref = _dense(q, lambda i: np.exp(-d2 / (2 * ta**2) - (feats[i][:, None] - feats[i][None]) ** 2 / (2 * tb**2)))
    got = cf.bilateral_message(tf.constant(q), tf.constant(img), ta, tb).numpy()
    err = np.abs(got - ref)
    # stated tolerance: mean error <= 2% of the mean message, worst pixel <= 6% of the largest message
    assert err.mean() <= 0.02 * np.abs(ref).mean()
    assert err.max() <= 0.06 * np.abs(ref).max()


@pytest.mark.parametrize("theta", [0.2, 1.0])
def test_intensity_matches_dense(rng, theta):
    img, _ = _images(rng)
    q = _q(rng, 2, 40, 40)
    feats = img.reshape(2, -1).astype(np.float64)
    ref = _dense(q, lambda i: np.exp(-((feats[i][:, None] - feats[i][None]) ** 2) / (2 * theta**2)))
    got = cf.intensity_message(tf.constant(q), tf.constant(img), theta).numpy()
    err = np.abs(got - ref)
    assert err.mean() <= 0.01 * np.abs(ref).mean()
    assert err.max() <= 0.03 * np.abs(ref).max()


def test_self_term_removed_for_lone_pixel():
    """A single non-zero pixel receives (almost) nothing from itself in every kernel."""
    q = np.zeros((1, 40, 40, 2), np.float32)
    q[0, 17, 22, 1] = 1.0
    img = np.random.default_rng(0).standard_normal((1, 40, 40, 1)).astype(np.float32)
    for m in (
        cf.spatial_message(q, 3.0),
        cf.bilateral_message(q, img, 5.0, 0.5),
        cf.intensity_message(q, img, 1.0),
    ):
        assert abs(float(m[0, 17, 22, 1])) < 1e-4


@pytest.mark.parametrize("kernels", [("spatial", "bilateral"), ("spatial", "bilateral", "intensity")])
def test_crfrnn_scalable_agrees_with_exact(rng, kernels):
    img, unary = _images(rng, b=4)
    exact = CRFRNN(kernels=kernels, mode="exact")([unary, img]).numpy()
    scal = CRFRNN(kernels=kernels, mode="grid")([unary, img]).numpy()
    # the CRF must actually change the labels for the agreement to mean something
    assert ((exact[..., 1] > 0.5) != (unary[..., 1] > 0)).mean() > 0.05
    assert np.abs(exact - scal).mean() < 0.02
    assert ((exact[..., 1] > 0.5) == (scal[..., 1] > 0.5)).mean() >= 0.99


def _graph_elements(fn, size):
    """Total elements of every intermediate tensor in the traced graph (batch 1)."""
    spec = [tf.TensorSpec([1, size, size, 2], tf.float32), tf.TensorSpec([1, size, size, 1], tf.float32)]
    graph = tf.function(fn).get_concrete_function(*spec).graph
    total = 0
    for op in graph.get_operations():
        for t in op.outputs:
            if t.shape.is_fully_defined():
                total += int(np.prod(t.shape.as_list() or [1]))
    return total


@pytest.mark.parametrize(
    "fn",
    [
        lambda q, x: cf.spatial_message(q, 3.0),
        lambda q, x: cf.bilateral_message(q, x, 5.0, 0.5),
        lambda q, x: cf.intensity_message(q, x, 1.0),
    ],
    ids=["spatial", "bilateral", "intensity"],
)
def test_memory_grows_linearly_with_pixels(fn):
    small, big = _graph_elements(fn, 64), _graph_elements(fn, 256)
    ratio = big / small
    assert 8 <= ratio <= 16 * 1.15, ratio  # pixels x16; quadratic would be x256


def test_grid_and_kernel_sizes_scale_linearly():
    for ta in (3.0, 5.0, 10.0):
        gy, gx, gz = cf.bilateral_grid_shape(512, 512, ta)
        gy2, gx2, gz2 = cf.bilateral_grid_shape(1024, 1024, ta)
        assert gz == gz2
        assert (gy2 * gx2) / (gy * gx) == pytest.approx(4.0, rel=0.02)
    assert cf.spatial_kernel_radius(3.0, 512) == cf.spatial_kernel_radius(3.0, 4096) <= 16
    assert cf.spatial_kernel_radius(3.0, 10) == 9  # clipped to the image: exact


def test_runs_at_512_where_exact_refuses(rng):
    img = rng.standard_normal((1, 512, 512, 1)).astype(np.float32)
    unary = rng.standard_normal((1, 512, 512, 2)).astype(np.float32)
    with pytest.raises(KerassegError, match="grid"):
        CRFRNN(mode="exact")([unary, img])
    layer = CRFRNN(kernels=("spatial", "bilateral", "intensity"), mode="grid", iterations_test=2)
    out = layer([unary, img]).numpy()
    assert out.shape == (1, 512, 512, 2)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)


def test_auto_mode_dispatch(rng, monkeypatch):
    calls = []
    real = cf.GridBackend.prepare

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(cf.GridBackend, "prepare", spy)
    small_img, small_un = _images(rng, b=1)
    CRFRNN(mode="auto", iterations_test=1)([small_un, small_img])
    assert calls == []
    big_img = rng.standard_normal((1, 80, 80, 1)).astype(np.float32)
    big_un = rng.standard_normal((1, 80, 80, 2)).astype(np.float32)
    out = CRFRNN(mode="auto", iterations_test=1)([big_un, big_img])
    assert calls == [] and out.shape == (1, 80, 80, 2)  # 6400 pixels: still the low-rank form
    out = CRFRNN(mode="auto", iterations_test=1, lowrank_max_pixels=80 * 80 - 1)([big_un, big_img])
    assert calls == [1] and out.shape == (1, 80, 80, 2)


def test_gradients_flow_to_unary_and_image(rng):
    img, unary = _images(rng, b=2)
    layer = CRFRNN(kernels=("spatial", "bilateral", "intensity"), mode="grid", iterations_train=3)
    u, x = tf.Variable(unary), tf.Variable(img)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer([u, x], training=True)[..., 1] ** 2)
    gu, gx, gw = tape.gradient(loss, [u, x, layer.kernel_weights])
    for g in (gu, gx, gw):
        assert g is not None and np.isfinite(g.numpy()).all() and np.abs(g.numpy()).sum() > 0


def test_bad_parameters():
    q = np.zeros((1, 8, 8, 2), np.float32)
    with pytest.raises(KerassegError, match="theta"):
        cf.spatial_message(q, 0.0)
    with pytest.raises(KerassegError, match="theta"):
        cf.bilateral_message(q, q[..., :1], 3.0, -1.0)
    with pytest.raises(KerassegError, match="one-channel"):
        cf.intensity_message(q, q, 1.0)
    with pytest.raises(KerassegError, match="trainable"):  # refused when the layer is made
        CRFRNN(mode="grid", trainable_bandwidths=True)


def test_savedmodel_scalable_roundtrip(rng, tmp_path):
    import keras

    img, unary = _images(rng, b=2)
    u_in = keras.Input((40, 40, 2))
    x_in = keras.Input((40, 40, 1))
    out = CRFRNN(kernels=("spatial", "bilateral", "intensity"), mode="grid")([u_in, x_in])
    model = keras.Model([u_in, x_in], out)
    expected = model([unary, img]).numpy()

    @tf.function(input_signature=[tf.TensorSpec([None, 40, 40, 2]), tf.TensorSpec([None, 40, 40, 1])])
    def serve(u, x):
        return {"prob": model([u, x], training=False)}

    module = tf.Module()
    module.model = model
    module.serve = serve
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": serve})
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    got = loaded.signatures["serving_default"](u=tf.constant(unary), x=tf.constant(img))["prob"].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    one = loaded.signatures["serving_default"](u=tf.constant(unary[:1]), x=tf.constant(img[:1]))["prob"].numpy()
    np.testing.assert_allclose(one, expected[:1], atol=1e-5)


def _separable_reference(q, theta, radius):
    """float64 separable Gaussian (zero padding) minus the centre, with scipy.ndimage."""
    from scipy.ndimage import correlate1d

    k = np.exp(-np.arange(-radius, radius + 1) ** 2 / (2 * theta**2))
    out = correlate1d(q.astype(np.float64), k, axis=1, mode="constant")
    out = correlate1d(out, k, axis=2, mode="constant")
    return out - q


@pytest.mark.parametrize("size", [40, 256])
def test_spatial_matmul_and_conv_paths(rng, size):
    """Short axes use a banded matmul, long ones a depthwise conv: both match the float64 filter."""
    theta = 1.0
    q = _q(rng, 1, size, size)
    radius = cf.spatial_kernel_radius(theta, size)
    got = cf.spatial_message(tf.constant(q), theta).numpy()
    np.testing.assert_allclose(got, _separable_reference(q, theta, radius), atol=1e-4, rtol=0)
    graph = tf.function(lambda x: cf.spatial_message(x, theta)).get_concrete_function(
        tf.TensorSpec([None, size, size, 2])).graph
    types = {op.type for op in graph.get_operations()}
    assert ("DepthwiseConv2dNative" in types) == (size > 16 * (2 * radius + 1))


def test_messages_hook_equals_direct_filters(rng):
    """prepare/messages (last label from the all-ones response) equal filtering every label."""
    img, _ = _images(rng)
    q = _q(rng, 2, 40, 40)
    bw = {"spatial": 3.0, "alpha": 5.0, "beta": 0.5, "intensity": 1.0}
    state = cf.GridBackend().prepare(tf.constant(img), kernels=("spatial", "bilateral", "intensity"), bandwidths=bw)
    got = cf.GridBackend().messages(tf.constant(q), state)
    direct = [
        cf.spatial_message(q, 3.0),
        cf.bilateral_message(q, img, 5.0, 0.5),
        cf.intensity_message(q, img, 1.0),
    ]
    for g, d in zip(got, direct):
        np.testing.assert_allclose(g.numpy(), d.numpy(), rtol=1e-4, atol=2e-3)


@pytest.mark.parametrize("mode", ["grid", "auto"])
def test_trainable_bandwidths_rejected_outside_exact_mode_at_construction(mode):
    from kerasseg.errors import KerassegError
    from kerasseg.layers import CRFRNN

    with pytest.raises(KerassegError, match="trainable_bandwidths=True needs mode='exact'"):
        CRFRNN(mode=mode, trainable_bandwidths=True)
    assert CRFRNN(mode="exact", trainable_bandwidths=True).trainable_bandwidths
