"""Tests for kerasseg.layers.crf.CRFRNN (the exact form) against an independent NumPy float64 mean-field."""


import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasseg.training.strategy import cpu_mirrored_strategy

from kerasseg.errors import KerassegError
from kerasseg.layers.crf import CRFRNN

ALL = ("spatial", "bilateral", "intensity")
THETAS = dict(theta_spatial=1.7, theta_alpha=2.5, theta_beta=0.8, theta_intensity=1.3)


# --------------------------------------------------------------- reference
def ref_kernels(image, kernels, thetas):
    """Dense float64 kernel matrices (list over kernels of (B, P, P)), diagonal zeroed, row by row."""
    b, h, w, f = image.shape
    p = h * w
    pos = np.array([(r, c) for r in range(h) for c in range(w)], dtype=np.float64)
    feats = image.reshape(b, p, f).astype(np.float64)
    out = []
    for k in kernels:
        mats = np.zeros((b, p, p))
        for n in range(b):
            for i in range(p):  # one row at a time: sum over j of k(f_i, f_j)
                dp = np.sum((pos[i] - pos) ** 2, axis=1)
                di = np.sum((feats[n, i] - feats[n]) ** 2, axis=1)
                if k == "spatial":
                    e = dp / (2 * thetas["theta_spatial"] ** 2)
                elif k == "bilateral":
                    e = dp / (2 * thetas["theta_alpha"] ** 2) + di / (2 * thetas["theta_beta"] ** 2)
                else:
                    e = di / (2 * thetas["theta_intensity"] ** 2)
                mats[n, i] = np.exp(-e)
                mats[n, i, i] = 0.0  # no self-message
        out.append(mats)
    return out


def softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def ref_mean_field(unary, image, kernels, thetas, weights, compat, iterations):
    """Plain float64 mean-field: Q <- softmax(U - mu . sum_k w_k sum_{j!=i} k_ij Q_j)."""
    b, h, w, c = unary.shape
    u = unary.reshape(b, h * w, c).astype(np.float64)
    mats = ref_kernels(image, kernels, thetas)
    kw = sum(wk * m for wk, m in zip(weights, mats))
    q = softmax(u)
    for _ in range(iterations):
        msg = kw @ q  # (B, P, C)
        pairwise = msg @ np.asarray(compat, np.float64).T  # P[l] = sum_l' mu[l, l'] M[l']
        q = softmax(u - pairwise)
    return q.reshape(b, h, w, c)


def free_energy(q, unary, image, kernels, thetas, weights, compat):
    """Mean-field free energy KL(Q||P) + const = E_Q[E] - H(Q), float64, per image summed."""
    b, h, w, c = unary.shape
    q = q.reshape(b, h * w, c).astype(np.float64)
    u = unary.reshape(b, h * w, c).astype(np.float64)
    mats = ref_kernels(image, kernels, thetas)
    kw = sum(wk * m for wk, m in zip(weights, mats))
    unary_term = -np.sum(q * u)
    pair_term = 0.5 * np.einsum("bil,bij,lm,bjm->", q, kw, np.asarray(compat, np.float64), q)
    entropy = -np.sum(q * np.log(np.clip(q, 1e-300, None)))
    return unary_term + pair_term - entropy


def make_layer(kernels, weights=None, compat=None, c=2, f=1, **kw):
    layer = CRFRNN(kernels=kernels, **{"mode": "exact", **THETAS, **kw})
    layer.build([(None, 4, 4, c), (None, 4, 4, f)])
    if weights is not None:
        layer.kernel_weights.assign(np.asarray(weights, np.float32))
    if compat is not None:
        layer.compatibility.assign(np.asarray(compat, np.float32))
    return layer


def random_inputs(rng, b=2, h=5, w=7, c=2, f=1):
    unary = rng.normal(scale=1.5, size=(b, h, w, c)).astype(np.float32)
    image = rng.normal(size=(b, h, w, f)).astype(np.float32)
    return unary, image


# ---------------------------------------------------------- correctness
@pytest.mark.parametrize("kernels", [("spatial",), ("bilateral",), ("intensity",), ALL])
@pytest.mark.parametrize("batch,iterations", [(1, 1), (3, 5)])
def test_matches_numpy_reference(rng, kernels, batch, iterations):
    unary, image = random_inputs(rng, b=batch, h=5, w=7)
    weights = rng.uniform(0.1, 0.6, size=len(kernels))
    compat = np.array([[0.0, 1.0], [1.0, 0.0]])  # Potts
    layer = make_layer(kernels, weights, iterations_test=iterations, iterations_train=iterations)
    got = layer([unary, image]).numpy()
    want = ref_mean_field(unary, image, kernels, THETAS, weights, compat, iterations)
    np.testing.assert_allclose(got, want, atol=1e-5)
    # the pairwise term must actually matter for this comparison to mean something
    assert np.abs(want - softmax(unary.astype(np.float64))).max() > 1e-2


def test_matches_reference_multiclass_multichannel_general_compat(rng):
    """Three classes, two feature channels, a non-symmetric compatibility (checks mu's orientation)."""
    unary, image = random_inputs(rng, b=2, h=4, w=6, c=3, f=2)
    weights = [0.4, 0.3, 0.05]
    compat = rng.uniform(-0.5, 1.5, size=(3, 3))
    layer = make_layer(ALL, weights, compat, c=3, f=2, iterations_test=4)
    got = layer([unary, image]).numpy()
    want = ref_mean_field(unary, image, ALL, THETAS, weights, compat, 4)
    np.testing.assert_allclose(got, want, atol=1e-5)
    wrong = ref_mean_field(unary, image, ALL, THETAS, weights, compat.T, 4)
    assert np.abs(wrong - want).max() > 1e-3


def test_zero_weights_give_softmax(rng):
    unary, image = random_inputs(rng, b=3, h=6, w=5)
    layer = make_layer(ALL, [0.0, 0.0, 0.0], iterations_test=5)
    got = layer([unary, image]).numpy()
    np.testing.assert_allclose(got, softmax(unary.astype(np.float64)), atol=1e-6)


def test_zero_iterations_give_softmax(rng):
    unary, image = random_inputs(rng)
    layer = make_layer(ALL, iterations_test=0)
    np.testing.assert_allclose(layer([unary, image]).numpy(), softmax(unary.astype(np.float64)), atol=1e-6)


def test_default_potts_compatibility_and_weights():
    layer = CRFRNN(kernels=("intensity", "spatial"), spatial_weight=0.7, intensity_weight=0.2)
    layer.build([(None, 4, 4, 3), (None, 4, 4, 1)])
    np.testing.assert_array_equal(layer.compatibility.numpy(), 1.0 - np.eye(3))
    np.testing.assert_allclose(layer.kernel_weights.numpy(), [0.2, 0.7])


def _square_problem(rng, size=24, flips=((2, 2), (20, 21), (9, 9), (13, 14))):
    mask = np.zeros((size, size), np.int64)
    mask[6:18, 6:18] = 1
    logits = np.where(mask == 1, 2.0, -2.0)
    for r, c in flips:  # isolated mislabelled pixels, inside and outside the square
        logits[r, c] = -logits[r, c]
    unary = np.stack([-logits / 2, logits / 2], -1)[None].astype(np.float32)
    image = (mask + rng.normal(scale=0.1, size=mask.shape))[None, :, :, None].astype(np.float32)
    return unary, image, mask


FLIPS = ((2, 2), (20, 21), (9, 9), (13, 14))


@pytest.mark.parametrize("kernels", [("spatial",), ("bilateral",), ("spatial", "bilateral")])
def test_smoothness_removes_isolated_flips(rng, kernels):
    unary, image, mask = _square_problem(rng, flips=FLIPS)
    before = np.argmax(unary[0], -1)
    assert (before != mask).sum() == 4
    layer = CRFRNN(kernels=kernels)  # the documented defaults
    after = np.argmax(layer([unary, image]).numpy()[0], -1)
    rows, cols = np.array(FLIPS).T
    np.testing.assert_array_equal(after[rows, cols], mask[rows, cols])
    if "bilateral" in kernels:  # edge-aware: the whole square comes back exactly
        np.testing.assert_array_equal(after, mask)
    else:  # pure smoothness may only round off the square's four corner pixels
        wrong = set(zip(*np.nonzero(after != mask)))
        assert wrong <= {(6, 6), (6, 17), (17, 6), (17, 17)}, wrong


@pytest.mark.parametrize("c,total_weight", [(2, 1.9), (3, 0.95)])
def test_free_energy_never_increases(rng, c, total_weight):
    """Parallel mean-field with Potts + Gaussian (positive-definite) kernels and weights w_k >= 0.

    With D = Q' - Q and A the pairwise quadratic form, F(Q') - F(Q) = -KL(Q||Q') + D'AD/2.
    For Potts, D'AD = -D'(K (x) I)D + (sum w)|D|^2 <= (sum w)|D|^2 (K = sum_k w_k k_k is PSD),
    and Pinsker gives KL >= |D|^2 (C = 2) or |D|^2/2 (any C). So F is non-increasing when
    sum_k w_k <= 2 (C = 2) or <= 1 (any C): the settings tested here.
    """
    unary, image = random_inputs(rng, b=2, h=5, w=6, c=c)
    unary *= 0.5
    weights = np.array([0.5, 0.3, 0.2]) * total_weight
    compat = 1.0 - np.eye(c)
    energies = []
    for n in range(0, 9):
        layer = make_layer(ALL, weights, c=c, iterations_test=n)
        q = layer([unary, image]).numpy()
        energies.append(free_energy(q, unary, image, ALL, THETAS, weights, compat))
    diffs = np.diff(energies)
    assert np.all(diffs <= 1e-4), energies
    assert energies[-1] < energies[0] - 0.1, energies


def test_default_crf_lowers_free_energy_on_square(rng):
    """Default (strong) weights: the final mean-field solution has lower energy than softmax(U)."""
    unary, image, _ = _square_problem(rng)
    layer = CRFRNN()
    layer.build([unary.shape, image.shape])
    weights = layer.kernel_weights.numpy().astype(np.float64)
    thetas = {k: getattr(layer, k) for k in THETAS}
    compat = layer.compatibility.numpy()
    q0 = softmax(unary.astype(np.float64))
    qn = layer([unary, image]).numpy()
    e0 = free_energy(q0, unary, image, layer.kernels, thetas, weights, compat)
    en = free_energy(qn, unary, image, layer.kernels, thetas, weights, compat)
    assert en < e0 - 1.0


# ------------------------------------------------------------- gradients
def test_gradients_match_finite_differences(rng):
    """float64 layer: analytic gradients w.r.t. unaries, image, kernel weights, compatibility, bandwidths."""
    unary, image = random_inputs(rng, b=2, h=2, w=3)
    unary = unary.astype(np.float64)
    image = image.astype(np.float64)
    layer = CRFRNN(
        kernels=ALL, iterations_test=3, trainable_bandwidths=True, dtype="float64", mode="exact",
        spatial_weight=0.4, bilateral_weight=0.3, intensity_weight=0.2, **THETAS
    )
    layer.build([unary.shape, image.shape])
    layer.compatibility.assign([[0.1, 0.9], [1.3, -0.2]])  # asymmetric: checks mu's orientation too
    proj = tf.constant(rng.normal(size=unary.shape))

    @tf.function
    def f_unary(u):
        return layer([u, tf.constant(image)])

    theo, num = tf.test.compute_gradient(f_unary, [tf.constant(unary)], delta=1e-5)
    np.testing.assert_allclose(theo[0], num[0], atol=1e-6)
    assert np.abs(theo[0]).max() > 1e-2

    @tf.function
    def f_image(im):
        return layer([tf.constant(unary), im])

    theo, num = tf.test.compute_gradient(f_image, [tf.constant(image)], delta=1e-5)
    np.testing.assert_allclose(theo[0], num[0], atol=1e-6)
    assert np.abs(theo[0]).max() > 1e-3

    @tf.function
    def loss():
        return tf.reduce_sum(layer([tf.constant(unary), tf.constant(image)]) * proj)

    variables = layer.trainable_variables
    names = sorted(v.path for v in variables)
    assert any("kernel_weights" in n for n in names) and any("compatibility" in n for n in names)
    assert sum("log_theta" in n for n in names) == 4
    with tf.GradientTape() as tape:
        value = loss()
    grads = tape.gradient(value, variables)
    eps = 1e-6
    for var, grad in zip(variables, grads):
        assert grad is not None, var.path
        base = np.array(var.numpy(), dtype=np.float64)
        num = np.zeros_like(base)
        for idx in np.ndindex(base.shape):
            plus, minus = base.copy(), base.copy()
            plus[idx] += eps
            minus[idx] -= eps
            var.assign(plus)
            lp = float(loss())
            var.assign(minus)
            lm = float(loss())
            num[idx] = (lp - lm) / (2 * eps)
        var.assign(base)
        np.testing.assert_allclose(np.asarray(grad), num, atol=1e-6, rtol=1e-5, err_msg=var.path)
        assert np.abs(num).max() > 1e-4, var.path


# ------------------------------------------------------------ iterations
def test_training_and_inference_iteration_counts(rng):
    unary, image = random_inputs(rng, b=2, h=4, w=5)
    weights = [0.5, 0.5]
    layer = make_layer(("spatial", "bilateral"), weights, iterations_train=1, iterations_test=4)
    compat = 1.0 - np.eye(2)
    ks = ("spatial", "bilateral")
    want1 = ref_mean_field(unary, image, ks, THETAS, weights, compat, 1)
    want4 = ref_mean_field(unary, image, ks, THETAS, weights, compat, 4)
    assert np.abs(want1 - want4).max() > 1e-3
    np.testing.assert_allclose(layer([unary, image], training=True).numpy(), want1, atol=1e-5)
    np.testing.assert_allclose(layer([unary, image], training=False).numpy(), want4, atol=1e-5)
    np.testing.assert_allclose(layer([unary, image]).numpy(), want4, atol=1e-5)  # None = inference
    # symbolic training flag
    fn = tf.function(lambda u, i, t: layer([u, i], training=t))
    np.testing.assert_allclose(fn(unary, image, tf.constant(True)).numpy(), want1, atol=1e-5)
    np.testing.assert_allclose(fn(unary, image, tf.constant(False)).numpy(), want4, atol=1e-5)


# ------------------------------------------------------- serialisation
def _tiny_model(h=8, w=10, crf_kwargs=None):
    x = keras.Input((h, w, 1), name="image")
    logits = keras.layers.Conv2D(2, 3, padding="same", name="conv")(x)
    q = CRFRNN(name="crf", **(crf_kwargs or {}))([logits, x])
    return keras.Model(x, q)


def test_get_config_round_trip(rng):
    layer = CRFRNN(
        iterations_train=2, iterations_test=7, kernels=["intensity", "spatial"], theta_spatial=2.0,
        theta_intensity=0.7, spatial_weight=0.3, intensity_weight=0.01, trainable_bandwidths=True,
        trainable_compatibility=False, max_dense_pixels=900, name="c", mode="exact",
    )
    config = layer.get_config()
    clone = CRFRNN.from_config(config)
    assert clone.get_config() == config
    assert config["kernels"] == ["intensity", "spatial"] and config["iterations_test"] == 7
    generic = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(generic, CRFRNN) and generic.get_config() == config
    unary, image = random_inputs(rng, b=2, h=4, w=5)
    out = layer([unary, image])
    clone.build([unary.shape, image.shape])
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone([unary, image]).numpy(), out.numpy(), atol=1e-7)
    assert not clone.compatibility.trainable


def test_keras_file_round_trip(rng, tmp_path):
    model = _tiny_model(crf_kwargs=dict(kernels=ALL, trainable_bandwidths=True, iterations_test=3, mode="exact"))
    crf = model.get_layer("crf")
    crf.kernel_weights.assign([0.2, 0.1, 0.01])
    crf.compatibility.assign([[0.0, 1.3], [0.8, 0.1]])
    x = rng.normal(size=(3, 8, 10, 1)).astype(np.float32)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.get_layer("crf"), CRFRNN)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    np.testing.assert_array_equal(loaded.get_layer("crf").compatibility.numpy(), crf.compatibility.numpy())


def test_savedmodel_export_reload_with_core_ops(rng, tmp_path):
    from tensorflow.python.framework import op_def_registry
    from tensorflow.core.protobuf import saved_model_pb2

    model = _tiny_model(crf_kwargs=dict(kernels=ALL, iterations_test=3, mode="exact"))
    x = rng.normal(size=(2, 8, 10, 1)).astype(np.float32)
    want = model.predict(x, verbose=0)
    path = str(tmp_path / "export")
    model.export(path, verbose=False)
    loaded = tf.saved_model.load(path)  # plain TF: no Keras layer classes involved
    np.testing.assert_allclose(loaded.serve(tf.constant(x)).numpy(), want, atol=1e-6)
    # other batch sizes through the same signature (batch unknown at trace time)
    np.testing.assert_allclose(loaded.serve(tf.constant(x[:1])).numpy(), want[:1], atol=1e-6)
    sm = saved_model_pb2.SavedModel()
    with open(f"{path}/saved_model.pb", "rb") as fh:
        sm.ParseFromString(fh.read())
    ops = set()
    for meta in sm.meta_graphs:
        ops.update(n.op for n in meta.graph_def.node)
        for fn in meta.graph_def.library.function:
            ops.update(n.op for n in fn.node_def)
    fn_names = {fn.signature.name for m in sm.meta_graphs for fn in m.graph_def.library.function}
    unknown = [o for o in ops if o not in fn_names and op_def_registry.get(o) is None]
    assert not unknown and "BatchMatMulV2" in ops


# ------------------------------------------------------------ execution
def test_unknown_batch_and_jit_compile(rng):
    unary, image = random_inputs(rng, b=3, h=6, w=5)
    layer = make_layer(ALL, [0.3, 0.2, 0.05], iterations_test=3, iterations_train=2)
    eager = layer([unary, image]).numpy()
    spec = [tf.TensorSpec([None, 6, 5, 2]), tf.TensorSpec([None, 6, 5, 1])]
    graph = tf.function(lambda u, i: layer([u, i]), input_signature=spec)
    np.testing.assert_allclose(graph(unary, image).numpy(), eager, atol=1e-6)
    np.testing.assert_allclose(graph(unary[:1], image[:1]).numpy(), eager[:1], atol=1e-6)

    @tf.function(jit_compile=True)
    def xla_step(u, i):
        with tf.GradientTape() as tape:
            tape.watch(u)
            q = layer([u, i], training=True)
            loss = tf.reduce_sum(q[..., 1] * i[..., 0])
        return layer([u, i]), tape.gradient(loss, [u] + layer.trainable_variables)

    q, grads = xla_step(tf.constant(unary), tf.constant(image))
    np.testing.assert_allclose(q.numpy(), eager, atol=1e-5)

    with tf.GradientTape() as tape:
        tape.watch(unary_t := tf.constant(unary))
        loss = tf.reduce_sum(layer([unary_t, image], training=True)[..., 1] * image[..., 0])
    ref_grads = tape.gradient(loss, [unary_t] + layer.trainable_variables)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=1e-4, rtol=1e-4)


def test_mirrored_strategy_predict_and_fit(rng):
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2
    strategy = cpu_mirrored_strategy(devices)
    x = rng.normal(size=(4, 8, 10, 1)).astype(np.float32)
    y = keras.utils.to_categorical((x[..., 0] > 0).astype(int), 2)
    with strategy.scope():
        model = _tiny_model(crf_kwargs=dict(iterations_train=2, iterations_test=3))
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy")
    assert strategy.num_replicas_in_sync == 2
    pred = model.predict(x, batch_size=4, verbose=0)
    single = model(x, training=False).numpy()
    np.testing.assert_allclose(pred, single, atol=1e-6)
    w0 = model.get_layer("crf").kernel_weights.numpy().copy()
    hist = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert np.all(np.isfinite(hist.history["loss"]))
    assert np.abs(model.get_layer("crf").kernel_weights.numpy() - w0).max() > 0


# ---------------------------------------------------------------- errors
def test_too_large_input_raises_clear_error():
    with pytest.raises(KerassegError) as err:
        _tiny_model(h=70, w=60, crf_kwargs=dict(mode="exact"))
    msg = str(err.value)
    assert "\n" not in msg and "max_dense_pixels=4096" in msg and "4200" in msg and 'mode="grid"' in msg
    layer = CRFRNN(max_dense_pixels=100, mode="exact")
    with pytest.raises(KerassegError, match="max_dense_pixels=100"):
        layer([np.zeros((1, 11, 10, 2), np.float32), np.zeros((1, 11, 10, 1), np.float32)])
    _tiny_model(h=64, w=64, crf_kwargs=dict(mode="exact"))  # exactly at the default limit is accepted


def test_mismatched_inputs_raise():
    with pytest.raises(KerassegError, match="height/width"):
        CRFRNN()([np.zeros((1, 5, 5, 2), np.float32), np.zeros((1, 5, 6, 1), np.float32)])


@pytest.mark.parametrize(
    "kwargs,word",
    [
        (dict(kernels=("gauss",)), "kernels"),
        (dict(kernels=()), "kernels"),
        (dict(iterations_test=-1), "iterations_test"),
        (dict(iterations_train=2.5), "iterations_train"),
        (dict(theta_beta=0.0), "theta_beta"),
        (dict(spatial_weight=float("nan")), "spatial_weight"),
        (dict(mode="fast"), "mode"),
        (dict(max_dense_pixels=0), "max_dense_pixels"),
    ],
)
def test_bad_arguments_raise(kwargs, word):
    with pytest.raises(KerassegError, match=word):
        CRFRNN(**kwargs)


def test_grid_mode_without_backend_raises(monkeypatch):
    from kerasseg.layers.crf import layer as crf_layer

    monkeypatch.delitem(crf_layer.BACKENDS, "grid")
    for mode in ("grid", "scalable"):
        with pytest.raises(KerassegError, match="'grid' CRF backend is not available"):
            CRFRNN(mode=mode)
    layer = CRFRNN(mode="auto", lowrank_max_pixels=64)  # the low-rank form below the limit still works
    out = layer([np.zeros((1, 8, 8, 2), np.float32), np.zeros((1, 8, 8, 1), np.float32)])
    np.testing.assert_allclose(out.numpy(), 0.5, atol=1e-6)
    with pytest.raises(KerassegError, match="'grid' CRF backend is not available"):
        CRFRNN(mode="auto", lowrank_max_pixels=63)(
            [np.zeros((1, 8, 8, 2), np.float32), np.zeros((1, 8, 8, 1), np.float32)]
        )


@pytest.mark.parametrize("c", [2, 3])
def test_grid_backend_plugs_in(rng, monkeypatch, c):
    """A backend object satisfying the CRFBackend protocol is used by mode="grid" and by "auto" above
    lowrank_max_pixels, with its own options; two labels run the one-map path (map_messages /
    ones_messages), more the softmax loop on messages."""
    from kerasseg.layers.crf import CRFBackend, GridOptions
    from kerasseg.layers.crf import layer as crf_layer
    from kerasseg.layers.crf.mean_field import MeanFieldMixin

    calls = []

    class DenseNumpyBackend(MeanFieldMixin):  # a dense NumPy stand-in for the linear-cost filters
        name = "grid"

        def __init__(self, options=None):
            self.options = options

        def prepare(self, image, *, kernels, bandwidths):
            assert set(bandwidths) == {"spatial", "alpha", "beta", "intensity"}
            calls.append((tuple(kernels), "prepare"))
            thetas = {f"theta_{k}": float(v) for k, v in bandwidths.items()}
            return image, kernels, thetas

        def messages(self, q, state):
            calls.append("messages")
            image, kernels, thetas = state
            b, h, w, ch = q.shape
            mats = ref_kernels(np.asarray(image), kernels, thetas)
            qf = np.asarray(q, np.float64).reshape(b, h * w, ch)
            return [tf.constant((m @ qf).reshape(b, h, w, ch), tf.float32) for m in mats]

        def map_messages(self, x, state):
            calls.append("map_messages")
            return [m[..., 0] for m in self.messages(x[..., None], state)]

        def ones_messages(self, state):
            return [m[..., 0] for m in self.messages(tf.ones_like(state[0][..., :1]), state)]

    assert isinstance(DenseNumpyBackend(), CRFBackend)
    built = []
    monkeypatch.setitem(crf_layer.BACKENDS, "grid", lambda options: built.append(options) or DenseNumpyBackend(options))
    unary, image = random_inputs(rng, b=2, h=5, w=6, c=c)
    weights = [0.3, 0.4, 0.05]
    compat = rng.uniform(-0.5, 1.5, size=(c, c))  # not Potts: exercises the two-class algebra
    want = ref_mean_field(unary, image, ALL, THETAS, weights, compat, 3)
    for kwargs in (dict(mode="grid"), dict(mode="auto", lowrank_max_pixels=29)):
        layer = make_layer(ALL, weights, compat, c=c, iterations_test=3,
                           grid_options={"intensity_bins": 64}, **kwargs)
        np.testing.assert_allclose(layer([unary, image]).numpy(), want, atol=1e-5)
    assert [x for x in calls if isinstance(x, tuple)] == [(ALL, "prepare")] * 2
    assert ("map_messages" in calls) == (c == 2)
    assert built and all(o == GridOptions(intensity_bins=64) for o in built)
    n_calls = len(calls)
    lowrank = make_layer(ALL, weights, compat, c=c, iterations_test=3, mode="auto", lowrank_max_pixels=30)
    np.testing.assert_allclose(lowrank([unary, image]).numpy(), want, atol=2e-3)
    assert len(calls) == n_calls  # 30 pixels <= limit: low-rank form, backend not called


def test_custom_backward_matches_autodiff_of_plain_loop(rng):
    """The hand-written exact backward equals TF autodiff of a plain mean-field loop built on _messages."""
    unary, image = random_inputs(rng, b=3, h=7, w=9, c=3, f=2)
    unary, image = tf.constant(unary.astype(np.float64)), tf.constant(image.astype(np.float64))
    layer = CRFRNN(kernels=ALL, iterations_train=5, trainable_bandwidths=True, dtype="float64", mode="exact",
                   spatial_weight=0.3, bilateral_weight=0.2, intensity_weight=0.05, **THETAS)
    layer.build([unary.shape, image.shape])
    layer.compatibility.assign(rng.uniform(-0.5, 1.5, size=(3, 3)))
    proj = tf.constant(rng.normal(size=unary.shape))

    def plain(u, im):
        prepared = layer._prepare(im)
        q = tf.nn.softmax(u)
        for _ in range(5):
            msgs = layer._messages(q, im, prepared)
            total = tf.add_n([m * layer.kernel_weights[i] for i, m in enumerate(msgs)])
            q = tf.nn.softmax(u - tf.einsum("bhwm,lm->bhwl", total, layer.compatibility))
        return q

    results = []
    for fn in (lambda u, im: layer([u, im], training=True), plain):
        with tf.GradientTape() as tape:
            tape.watch([unary, image])
            q = fn(unary, image)
            loss = tf.reduce_sum(q * proj)
        results.append((q, tape.gradient(loss, [unary, image] + layer.trainable_variables)))
    (q1, g1), (q2, g2) = results
    np.testing.assert_allclose(q1.numpy(), q2.numpy(), atol=1e-12)
    assert len(g1) == 2 + 2 + 4
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-10, rtol=1e-8)
