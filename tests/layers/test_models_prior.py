"""Position prior (Zhu et al. eq. 6): map estimation, layer init, effect on predictions."""

import keras
import numpy as np
import pytest

from kerasseg.errors import KerassegError
from kerasseg.layers import PositionPrior, prior_from_masks
from kerasseg.models import build_model


def test_prior_from_masks_frequency_without_smoothing():
    masks = np.zeros((4, 6, 6), np.uint8)
    masks[:, 2:4, 2:4] = 1          # always mass
    masks[:2, 0, :] = 1             # mass in half of the images
    rate = prior_from_masks(masks, sigma=0)
    assert rate.dtype == np.float32 and rate.shape == (6, 6)
    np.testing.assert_allclose(rate[2:4, 2:4], 1 - 1e-3)   # clipped away from 1
    np.testing.assert_allclose(rate[0, :], 0.5)
    np.testing.assert_allclose(rate[5, 5], 1e-3)           # clipped away from 0


def test_prior_from_masks_smoothing_matches_direct_gaussian():
    rng = np.random.default_rng(0)
    masks = (rng.random((10, 12, 12)) < 0.3).astype(np.uint8)
    rate = prior_from_masks(masks, sigma=1.5)
    # independent float64 reference: explicit separable Gaussian with edge replication
    freq = masks.mean(axis=0)
    r = int(4.0 * 1.5 + 0.5)
    t = np.arange(-r, r + 1)
    g = np.exp(-0.5 * (t / 1.5) ** 2)
    g /= g.sum()
    pad = np.pad(freq, r, mode="edge")
    rows = np.stack([np.convolve(row, g, mode="valid") for row in pad])
    ref = np.stack([np.convolve(col, g, mode="valid") for col in rows.T]).T
    np.testing.assert_allclose(rate, np.clip(ref, 1e-3, 1 - 1e-3), atol=1e-6)
    assert rate.max() < freq.max()   # smoothing happened


@pytest.mark.parametrize(
    "masks, match",
    [(np.zeros((5, 5)), "shape"), (np.full((2, 4, 4), 2), "binary"), (np.zeros((0, 4, 4)), "shape")],
)
def test_prior_from_masks_bad_input(masks, match):
    with pytest.raises(KerassegError, match=match):
        prior_from_masks(masks)


def test_position_prior_init_is_log_rate():
    rng = np.random.default_rng(1)
    rate = rng.uniform(0.01, 0.99, size=(8, 8)).astype(np.float32)
    layer = PositionPrior(rate)
    x = rng.normal(size=(3, 8, 8, 2)).astype(np.float32)
    y = np.asarray(layer(x))
    np.testing.assert_allclose(y[..., 1] - x[..., 1], np.broadcast_to(np.log(rate.astype(np.float64)), (3, 8, 8)), atol=1e-5)
    np.testing.assert_allclose(y[..., 0] - x[..., 0], np.broadcast_to(np.log1p(-rate.astype(np.float64)), (3, 8, 8)), atol=1e-5)
    assert len(layer.trainable_weights) == 1
    clone = PositionPrior.from_config(layer.get_config())
    np.testing.assert_array_equal(np.asarray(clone(x)), y)


@pytest.mark.parametrize("rate, match", [(np.zeros((4, 4)), "strictly between"), (np.full((4,), 0.5), r"\(H, W\)")])
def test_position_prior_bad_rate(rate, match):
    with pytest.raises(KerassegError, match=match):
        PositionPrior(rate)


def test_position_prior_wrong_logit_shape():
    with pytest.raises(KerassegError, match="8x8"):
        PositionPrior(np.full((8, 8), 0.5))(np.zeros((1, 9, 9, 2), np.float32))


@pytest.mark.parametrize("arch", ["unet", "fcn"])
def test_prior_shifts_predictions_by_bayes_rule(arch):
    """softmax(z + log w): the odds p1/p0 are the network's odds times rate/(1-rate) (eq. 6)."""
    rng = np.random.default_rng(2)
    masks = np.zeros((6, 40, 40), np.uint8)
    masks[:, 12:28, 10:30] = 1
    rate = prior_from_masks(masks, sigma=2.0)
    plain = build_model(arch)
    withp = build_model(arch, prior=rate)
    assert "prior" in [layer.name for layer in withp.layers]
    for layer in plain.layers:
        if layer.weights:
            withp.get_layer(layer.name).set_weights(layer.get_weights())
    x = rng.normal(size=(2, 40, 40, 1)).astype(np.float32)
    p = np.asarray(plain(x, training=False)["net"], np.float64)
    q = np.asarray(withp(x, training=False)["net"], np.float64)
    odds_ratio = (q[..., 1] / q[..., 0]) / (p[..., 1] / p[..., 0])
    np.testing.assert_allclose(odds_ratio, np.broadcast_to(rate / (1 - rate.astype(np.float64)), odds_ratio.shape), rtol=1e-3)
    # the centre (frequent mass) is pushed up, the border down
    assert (q[:, 20, 20, 1] > p[:, 20, 20, 1]).all() and (q[:, 0, 0, 1] < p[:, 0, 0, 1]).all()


def test_prior_is_trainable_in_a_model():
    rate = np.full((40, 40), 0.3, np.float32)
    model = build_model("fcn", prior=rate)
    prior = model.get_layer("prior")
    assert any(w is prior.bias for w in model.trainable_weights)
    # gradient of the mass log-prob w.r.t. the prior bias is nonzero
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(3).normal(size=(1, 40, 40, 1)), tf.float32)
    with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(tf.math.log(model(x)["net"][..., 1]))
    g = tape.gradient(loss, prior.bias)
    assert g is not None and float(tf.reduce_max(tf.abs(g))) > 0


def test_multifcn_prior_on_every_branch():
    rate = np.full((40, 40), 0.2, np.float32)
    model = build_model("multifcn", prior=rate)
    names = {layer.name for layer in model.layers if isinstance(layer, PositionPrior)}
    assert names == {"fcn1_prior", "fcn2_prior", "fcn3_prior", "fcn4_prior"}


def test_prior_shape_must_match_input():
    with pytest.raises(KerassegError, match="40x40"):
        build_model("unet", prior=np.full((32, 32), 0.5))
    with pytest.raises(KerassegError, match="strictly between"):
        build_model("unet", prior=np.ones((40, 40)))
    assert isinstance(build_model("unet", input_size=32, prior=np.full((32, 32), 0.5)), keras.Model)
