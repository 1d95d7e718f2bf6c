"""SegmentationModel: losses vs NumPy, FGM per-example normalisation, distribution."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasseg.training.strategy import cpu_mirrored_strategy

from kerasseg.training import losses
from kerasseg.training.adversarial import fgm_perturbation
from kerasseg.training.segmentation_model import SegmentationModel
from kerasseg.training.metrics import binarize, dice_per_image


def tiny_net(crf=False, size=12, seed=0, ignore_input=False):
    """A Contract-3 model: one image input, dict of (B,H,W,2) probabilities."""
    init = keras.initializers.GlorotUniform(seed=seed)
    x = keras.Input((size, size, 1), name="image")
    h = x if not ignore_input else keras.layers.Lambda(lambda t: t * 0.0)(x)
    h = keras.layers.Conv2D(4, 3, padding="same", activation="tanh", kernel_initializer=init)(h)
    logits = keras.layers.Conv2D(2, 1, kernel_initializer=init, bias_initializer="ones")(h)
    outs = {"net": keras.layers.Softmax(name="net")(logits)}
    if crf:
        pair = keras.layers.Conv2D(2, 3, padding="same", kernel_initializer=init)(x)
        outs["crf"] = keras.layers.Softmax(name="crf")(keras.layers.Add()([logits, pair]))
    return keras.Model(x, outs)


def batch(rng, n=6, size=12):
    x = rng.normal(size=(n, size, size, 1)).astype("float32")
    m = (rng.random((n, size, size)) > 0.6).astype("float32")
    y = np.stack([1 - m, m], -1).astype("float32")
    return x, y


def np_nll(y, p):
    p = np.clip(p.astype(np.float64), 1e-7, 1)
    return (-(y * np.log(p)).sum(-1)).mean(axis=(1, 2))


def test_losses_match_numpy(rng):
    x, y = batch(rng)
    p1 = rng.dirichlet([1, 1], size=y.shape[:3]).astype("float32")
    p2 = rng.dirichlet([2, 1], size=y.shape[:3]).astype("float32")
    got = losses.per_example_loss({"net": p1, "crf": p2}, y, 0.67).numpy()
    want = 0.33 * np_nll(y, p1) + 0.67 * np_nll(y, p2)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(losses.per_example_loss({"net": p1}, y, 0.0).numpy(),
                               np_nll(y, p1), rtol=1e-5)
    ws = [rng.normal(size=(3, 4)).astype("float32"), rng.normal(size=(5,)).astype("float32")]
    want_pen = 0.5 * 0.3 * sum((w.astype(np.float64) ** 2).sum() for w in ws) / 100
    np.testing.assert_allclose(losses.l2_penalty(ws, 0.3, 100).numpy(), want_pen, rtol=1e-5)


def test_fgm_norm_per_example_with_different_scales(rng):
    g = rng.normal(size=(4, 10, 10, 1)).astype("float32")
    g *= np.array([1e-6, 1.0, 1e3, 1e-30], "float32")[:, None, None, None]
    r = fgm_perturbation(tf.constant(g), 0.1).numpy().astype(np.float64)
    norms = np.sqrt((r ** 2).sum(axis=(1, 2, 3)))
    np.testing.assert_allclose(norms, 0.1, rtol=1e-5)
    # direction is that of g for every example
    for i in range(4):
        gi = g[i].astype(np.float64).ravel()
        cos = gi @ r[i].ravel() / (np.linalg.norm(gi) * np.linalg.norm(r[i]))
        assert cos == pytest.approx(1.0, abs=1e-6)


def test_fgm_zero_gradient_gives_zero_and_no_nan():
    g = np.zeros((3, 5, 5, 1), "float32")
    g[1, 2, 2, 0] = 2.0
    r = fgm_perturbation(tf.constant(g), 0.5).numpy()
    assert np.isfinite(r).all()
    assert np.all(r[0] == 0) and np.all(r[2] == 0)
    assert np.sqrt((r[1] ** 2).sum()) == pytest.approx(0.5)


def test_train_step_zero_input_gradient_no_nan(rng):
    x, y = batch(rng)
    model = SegmentationModel(tiny_net(ignore_input=True), adversarial=True, epsilon=0.1)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    hist = model.fit(x, y, batch_size=6, epochs=1, verbose=0)
    assert all(np.isfinite(v[-1]) for v in hist.history.values())
    assert all(np.isfinite(w).all() for w in model.get_weights())


@pytest.mark.parametrize("crf", [False, True])
def test_adversarial_gradient_matches_reference(rng, crf):
    """Step gradient == grad L(x) + grad L(x + r) with r computed independently in float64."""
    x, y = batch(rng)
    x[2] *= 100.0  # very different input-gradient scales across examples
    lam = 0.67 if crf else 0.0
    net = tiny_net(crf=crf)
    w0 = [w.numpy().astype(np.float64) for w in net.trainable_weights]
    lr = 1000.0  # one SGD step: (w0 - w1) / lr is the step's gradient, to float32 precision of it

    xt = tf.constant(x)
    with tf.GradientTape() as t:
        t.watch(xt)
        loss = tf.reduce_mean(losses.per_example_loss(net(xt, training=True), y, lam))
    gx = t.gradient(loss, xt).numpy().astype(np.float64)
    r = 0.3 * gx / np.sqrt((gx ** 2).sum(axis=(1, 2, 3), keepdims=True))
    with tf.GradientTape() as t2:
        l_clean = tf.reduce_mean(losses.per_example_loss(net(xt, training=True), y, lam))
        x_adv = tf.constant((x + r).astype("float32"))
        l_adv = tf.reduce_mean(losses.per_example_loss(net(x_adv, training=True), y, lam))
        total = l_clean + l_adv
    want = t2.gradient(total, net.trainable_weights)

    model = SegmentationModel(net, lam=lam, adversarial=True, epsilon=0.3)
    model.compile(optimizer=keras.optimizers.SGD(lr))
    logs = model.train_on_batch(x, y, return_dict=True)
    grads = [(a - w.numpy().astype(np.float64)) / lr for a, w in zip(w0, net.trainable_weights)]
    for g, w in zip(grads, want):
        np.testing.assert_allclose(g, w.numpy(), rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(logs["adv_loss"], l_adv.numpy(), rtol=1e-5)
    np.testing.assert_allclose(logs["clean_loss"], l_clean.numpy(), rtol=1e-5)
    np.testing.assert_allclose(logs["loss"], l_clean.numpy() + l_adv.numpy(), rtol=1e-5)


def test_metrics_are_true_values(rng):
    x, y = batch(rng, n=8)
    net = tiny_net(crf=True)
    model = SegmentationModel(net, lam=0.5)
    model.compile(optimizer=keras.optimizers.SGD(0.0))  # lr 0: weights unchanged
    hist = model.fit(x, y, batch_size=4, epochs=1, verbose=0, validation_data=(x, y))
    out = net(x, training=False)
    want_loss = (0.5 * np_nll(y, out["net"].numpy()) + 0.5 * np_nll(y, out["crf"].numpy())).mean()
    p = out["crf"].numpy().astype(np.float64)[..., 1] >= 0.5  # the one threshold: >= 0.5
    t = y[..., 1] > 0.5
    inter = (p & t).sum((1, 2))
    den = p.sum((1, 2)) + t.sum((1, 2))
    want_dice = np.where(den > 0, 2 * inter / np.maximum(den, 1), 1.0).mean()
    assert hist.history["loss"][0] == pytest.approx(want_loss, rel=1e-5)
    assert hist.history["val_loss"][0] == pytest.approx(want_loss, rel=1e-5)
    assert hist.history["dice"][0] == pytest.approx(want_dice, abs=1e-6)
    assert hist.history["val_dice"][0] == pytest.approx(want_dice, abs=1e-6)
    np.testing.assert_array_equal(binarize(out["crf"].numpy()[..., 1]), p.astype(np.uint8))
    got = np.asarray(dice_per_image(binarize(out["crf"][..., 1]), y[..., 1]))
    np.testing.assert_allclose(got, np.where(den > 0, 2 * inter / np.maximum(den, 1), 1.0), atol=1e-6)


def _one_step(strategy, weights, x, y, **kw):
    with strategy.scope():
        model = SegmentationModel(tiny_net(crf=True), **kw)
        model.compile(optimizer=keras.optimizers.SGD(0.5))
        model.net.set_weights(weights)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    hist = model.fit(ds, epochs=1, verbose=0)
    return [w.copy() for w in model.net.get_weights()], hist.history


@pytest.mark.parametrize("adversarial", [False, True])
def test_one_vs_two_replicas_same_update(rng, adversarial):
    if len(tf.config.list_logical_devices("CPU")) < 2:
        pytest.skip("needs the two logical CPUs set up by conftest")
    # two steps: 8 examples (4 per replica), then 3 (uneven split: 2 and 1)
    x, y = batch(rng, n=11)
    w0 = tiny_net(crf=True, seed=3).get_weights()
    kw = dict(lam=0.67, l2=0.2, adversarial=adversarial, epsilon=0.2)
    w1, h1 = _one_step(tf.distribute.get_strategy(), w0, x, y, **kw)
    devs = [d.name for d in tf.config.list_logical_devices("CPU")[:2]]
    w2, h2 = _one_step(cpu_mirrored_strategy(devs), w0, x, y, **kw)
    moved = max(np.abs(a - b).max() for a, b in zip(w1, w0))
    assert moved > 1e-3
    for a, b in zip(w1, w2):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert h1["loss"][0] == pytest.approx(h2["loss"][0], rel=1e-5)


def test_symbolic_build_override_only_where_keras_has_the_hook():
    """The multi-worker workaround overrides Keras's private hook only where it exists as expected."""
    import inspect

    from kerasseg.training import segmentation_model as sm

    hook = getattr(keras.Model, "_maybe_symbolic_build", None)
    expected = hook is not None and {"iterator", "data_batch"} <= set(inspect.signature(hook).parameters)
    assert sm.SYMBOLIC_BUILD_HOOK is expected
    overridden = "_maybe_symbolic_build" in vars(SegmentationModel)
    assert overridden is expected
    # off a multi-worker cluster the override is Keras's own path: fit builds and trains normally
    x, y = batch(np.random.default_rng(0), n=4)
    model = SegmentationModel(tiny_net())
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    assert not sm._multi_worker(model.distribute_strategy)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert model.optimizer.built
