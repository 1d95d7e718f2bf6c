"""Low-rank CRF messages (kerasseg.layers.crf.lowrank) against dense NumPy float64 kernels,
and CRFRNN(mode="lowrank") against the exact layer (values and gradients)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from fixtures.crf import disc_crf_problem as _images
from kerasseg.errors import KerassegError
from kerasseg.layers.crf import CRFRNN, LowRankOptions
from kerasseg.layers.crf import lowrank as lr


def _dense_kernel(img, kind, h, w, th):
    """(P, P) float64 kernel of one grey image (H, W), diagonal zeroed (self message excluded)."""
    yy, xx = np.mgrid[:h, :w]
    p = np.stack([yy.ravel(), xx.ravel()], 1).astype(np.float64)
    d2 = ((p[:, None] - p[None]) ** 2).sum(-1)
    f = img.reshape(-1).astype(np.float64)
    df2 = (f[:, None] - f[None]) ** 2
    k = {
        "spatial": lambda: np.exp(-d2 / (2 * th["spatial"] ** 2)),
        "bilateral": lambda: np.exp(-d2 / (2 * th["alpha"] ** 2) - df2 / (2 * th["beta"] ** 2)),
        "intensity": lambda: np.exp(-df2 / (2 * th["intensity"] ** 2)),
    }[kind]()
    np.fill_diagonal(k, 0.0)
    return k


THETAS = {"spatial": 3.0, "alpha": 5.0, "beta": 0.5, "intensity": 1.0}


@pytest.mark.parametrize("n,theta", [(40, 3.0), (40, 5.0), (64, 5.0), (12, 2.0)])
def test_axis_factor_reproduces_the_gaussian(n, theta):
    rtol = LowRankOptions().spatial_rtol
    f, full = lr.axis_factor(n, theta)
    d = np.arange(n)
    g = np.exp(-((d[:, None] - d[None]) ** 2) / (2 * theta**2))
    approx = f.astype(np.float64) if full else f.astype(np.float64) @ f.T.astype(np.float64)
    # Eckart-Young: the spectral (hence every entry's) error is the largest dropped eigenvalue
    lam = np.linalg.eigvalsh(g)
    assert np.abs(approx - g).max() <= rtol * lam.max() + 1e-6
    assert np.linalg.norm(approx - g, 2) <= rtol * lam.max() + 1e-6
    # smooth kernels are low rank: theta = 5 px needs 11 of 40 columns at rtol 1e-3 (eigenvalues
    # of the Gaussian decay geometrically); full matrices only where the rank passes n/2
    if (n, theta) == (40, 5.0):
        assert not full and f.shape == (40, lr.spatial_rank(40, 5.0)) and f.shape[1] <= 12
    assert full == (2 * lr.spatial_rank(n, theta) == 2 * n)


def test_axis_factor_rank_grows_with_size_over_bandwidth():
    ranks = [lr.spatial_rank(n, 5.0) for n in (40, 80, 160)]
    assert ranks[0] < ranks[1] < ranks[2]
    assert ranks[2] < 160 / 2  # still far from the dense n


@pytest.mark.parametrize("spread,bound", [(1.0, 3e-3), (1.2, 1.5e-2), (3.0, 1.5e-2)])
def test_range_features_nystroem_error(rng, spread, bound):
    """phi^T M phi reproduces exp(-(a-b)^2/2 t^2): t = theta, to 2.5e-3 while the anchors fit 0.8
    theta apart over the image's range and to 1.4e-2 up to 1.0 theta; above, t = range / (K - 1)
    (a smoother kernel at the same accuracy)."""
    theta = 0.5
    img = (spread * rng.standard_normal((2, 20, 20, 1))).astype(np.float32)
    phi, mix = lr.range_features(tf.constant(img), theta)
    phi, mix = phi.numpy().astype(np.float64), mix.numpy().astype(np.float64)
    k = LowRankOptions().range_anchors
    assert phi.shape == (2, k, 20, 20) and mix.shape == (2, k, k)
    for b in range(2):
        f = phi[b].reshape(k, -1)
        approx = f.T @ mix[b] @ f
        v = img[b].reshape(-1).astype(np.float64)
        t = max(theta, (v.max() - v.min()) / (lr.MAX_RANGE_SPACING * (k - 1)))
        assert (t == theta) == (spread < 3)
        exact = np.exp(-((v[:, None] - v[None]) ** 2) / (2 * t**2))
        assert np.abs(approx - exact).max() < bound


def test_range_anchor_spacing_checked():
    with pytest.raises(KerassegError, match="spacing"):
        lr.range_features(tf.zeros((1, 4, 4, 1)), 0.5, spacing=0.3)


@pytest.mark.parametrize("kind", ["spatial", "bilateral", "intensity"])
@pytest.mark.parametrize("h,w", [(40, 40), (24, 40)])
def test_messages_match_dense(rng, kind, h, w):
    img, _ = _images(rng, b=2, h=h, w=w)
    q = rng.random((2, h, w, 2))
    q = (q / q.sum(-1, keepdims=True)).astype(np.float32)
    state = lr.LowRankBackend().prepare(tf.constant(img), kernels=(kind,), bandwidths=THETAS)
    got = lr.LowRankBackend().messages(tf.constant(q), state)[0].numpy()
    ref = np.stack(
        [
            (_dense_kernel(img[b, ..., 0], kind, h, w, THETAS) @ q[b].reshape(-1, 2).astype(np.float64)).reshape(
                h, w, 2
            )
            for b in range(2)
        ]
    )
    scale = np.abs(ref).max()
    # spatial: eigen-truncation at 1e-5; range: Nystroem with anchors 0.8 theta apart (2.5e-3 of the
    # kernel peak, which averages out over the neighbours of a message)
    tol = {"spatial": 1e-4, "bilateral": 2e-3, "intensity": 2e-3}[kind]
    assert np.abs(got - ref).max() <= tol * scale
    # the one-map path (two-class mean field) gives the same first channel
    one = lr.LowRankBackend().map_messages(tf.constant(q[..., 0]), state)[0].numpy()
    np.testing.assert_allclose(one, got[..., 0], atol=1e-5 * scale)


def _pair(rng, kernels, b=4, **kw):
    img, unary = _images(rng, b=b)
    layers = {}
    for mode in ("exact", "lowrank"):
        layer = CRFRNN(mode=mode, kernels=kernels, **kw)
        layer([unary[:1], img[:1]])
        layers[mode] = layer
    return img, unary, layers


@pytest.mark.parametrize("kernels", [("spatial", "bilateral"), ("intensity", "spatial"), ("spatial", "bilateral", "intensity")])
def test_layer_agrees_with_exact(rng, kernels):
    img, unary, layers = _pair(rng, kernels)
    q_exact = layers["exact"]([unary, img]).numpy()
    q_low = layers["lowrank"]([unary, img]).numpy()
    assert np.abs(q_low - q_exact).max() < 2e-3
    assert ((q_low[..., 1] > 0.5) == (q_exact[..., 1] > 0.5)).mean() >= 0.999
    # and the CRF did something: it moved the marginals away from softmax(unary)
    q0 = tf.nn.softmax(unary).numpy()
    assert np.abs(q_exact - q0).mean() > 50 * np.abs(q_low - q_exact).mean()


def test_gradients_agree_with_exact(rng):
    """What adversarial training and the CRF loss need: d loss / d (unary, image, weights)."""
    img, unary, layers = _pair(rng, ("spatial", "bilateral"), b=2, iterations_train=5)
    target = (unary[..., 1] > 0).astype(np.float32)
    grads = {}
    for mode, layer in layers.items():
        u, x = tf.constant(unary), tf.constant(img)
        with tf.GradientTape() as tape:
            tape.watch([u, x])
            q = layer([u, x], training=True)
            loss = -tf.reduce_sum(target * tf.math.log(q[..., 1]) + (1 - target) * tf.math.log(q[..., 0]))
        grads[mode] = [g.numpy() for g in tape.gradient(loss, [u, x, layer.kernel_weights, layer.compatibility])]
    for name, ge, gl in zip(("unary", "image", "weights", "compat"), grads["exact"], grads["lowrank"]):
        rel = np.abs(gl - ge).max() / np.abs(ge).max()
        assert rel < 0.02, (name, rel)
    # the image gradient is not trivially small: the bilateral kernel depends on the image
    assert np.abs(grads["exact"][1]).max() > 1e-3


def test_multiclass_general_path_matches_exact(rng):
    """C = 3 runs the softmax loop on lowrank.messages (not the two-class path)."""
    img, _ = _images(rng, b=2, h=20, w=20)
    unary = rng.normal(scale=1.5, size=(2, 20, 20, 3)).astype(np.float32)
    outs = []
    for mode in ("exact", "lowrank"):
        outs.append(CRFRNN(mode=mode, kernels=("spatial", "bilateral", "intensity"))([unary, img]).numpy())
    # kernels within 2.5e-3 (intensity) and 1e-3 (spatial eigen-truncation) of the exact ones; ten
    # iterations with three kernels and confident unaries keep the marginals within 5e-3
    assert np.abs(outs[0] - outs[1]).max() < 5e-3
    assert (outs[0].argmax(-1) == outs[1].argmax(-1)).mean() >= 0.995


def test_multichannel_image(rng):
    img = rng.standard_normal((1, 12, 12, 2)).astype(np.float32)
    unary = rng.standard_normal((1, 12, 12, 2)).astype(np.float32)
    with pytest.raises(KerassegError, match="one-channel"):
        CRFRNN(mode="lowrank")([unary, img])
    # auto falls back to exact for multi-channel features; spatial-only needs no image channel
    want = CRFRNN(mode="exact")([unary, img]).numpy()
    np.testing.assert_allclose(CRFRNN(mode="auto")([unary, img]).numpy(), want, atol=1e-6)
    sp_exact = CRFRNN(mode="exact", kernels=("spatial",))([unary, img]).numpy()
    sp_low = CRFRNN(mode="lowrank", kernels=("spatial",))([unary, img]).numpy()
    np.testing.assert_allclose(sp_low, sp_exact, atol=1e-4)


def test_trainable_bandwidths_refused():
    with pytest.raises(KerassegError, match="trainable"):
        CRFRNN(mode="lowrank", trainable_bandwidths=True)


def test_float64_layer(rng):
    img, unary = _images(rng, b=1, h=16, w=16)
    layer = CRFRNN(mode="lowrank", dtype="float64")
    out = layer([unary.astype(np.float64), img.astype(np.float64)])
    assert out.dtype == tf.float64
    want = CRFRNN(mode="exact", dtype="float64")([unary.astype(np.float64), img.astype(np.float64)])
    assert np.abs(out.numpy() - want.numpy()).max() < 2e-3


def test_keras_roundtrip_jit_and_savedmodel(rng, tmp_path):
    """The layer reloads from .keras, compiles with XLA and exports (SavedModel), same outputs.

    The unaries are model inputs: with a random conv head the mean field starts near its unstable
    symmetric point, where last-bit differences between conv kernels (oneDNN vs XLA) grow.
    """
    img, unary = _images(rng, b=3)
    u_in = keras.Input((40, 40, 2), name="unary")
    x = keras.Input((40, 40, 1), name="image")
    probs = CRFRNN(mode="lowrank", name="crf")([u_in, x])
    model = keras.Model([u_in, x], probs)
    want = model.predict([unary, img], verbose=0)
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    assert again.get_layer("crf").mode == "lowrank"
    np.testing.assert_allclose(again.predict([unary, img], verbose=0), want, atol=1e-6)
    jitted = tf.function(lambda u, t: model([u, t], training=False), jit_compile=True)
    np.testing.assert_allclose(jitted(tf.constant(unary), tf.constant(img)).numpy(), want, atol=1e-5)
    model.export(str(tmp_path / "sm"), verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    np.testing.assert_allclose(loaded.serve([tf.constant(unary), tf.constant(img)]).numpy(), want, atol=1e-5)
    # core TF ops only (TF Serving): no custom op library is referenced by the graph
    spec = [tf.TensorSpec([None, 40, 40, 2]), tf.TensorSpec([None, 40, 40, 1])]
    graph = loaded.serve.get_concrete_function(spec).graph.as_graph_def()
    ops = {n.op for f in graph.library.function for n in f.node_def} | {n.op for n in graph.node}
    assert "Cholesky" in ops or "MatMul" in ops
    registered = set(tf.raw_ops.__dict__)
    assert all(op in registered for op in ops if not op.startswith("__"))


def test_configs_and_composites_run_the_fast_form():
    """Every shipped CRF config, and the composite model names, use mode auto: low-rank at 40x40."""
    from kerasseg.config import list_configs, resolve_config
    from kerasseg.models import build_model

    crf_configs = [name for name in list_configs() if resolve_config(name)["crf"] is not None]
    # the 8 CRF rows of the two papers and the any-box CRU-Net (not a table row)
    rows = [n for n in crf_configs if not n.endswith("-anybox")]
    assert len(rows) == 8 and set(crf_configs) - set(rows) == {"crunet-l067-anybox"}
    assert all(resolve_config(name)["crf"]["mode"] == "auto" for name in crf_configs)
    layer = build_model("crunet", input_size=40).get_layer("crf")
    assert layer.mode == "auto" and layer._backend_for(40 * 40) == "lowrank"
    assert layer._backend_for(512 * 512) == "grid"
    assert build_model("crunet", input_size=40, crf={"mode": "exact"}).get_layer("crf").mode == "exact"
