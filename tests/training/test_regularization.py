"""Zhu eq. (8) L2: a kernel_regularizer on kernels only, scaled as losses.l2_penalty, saved with the net."""

import keras
import numpy as np
import pytest

from kerasseg.models import build_model
from kerasseg.training import losses
from kerasseg.training.segmentation_model import SegmentationModel

KERNEL_LAYERS = (keras.layers.Conv2D, keras.layers.Conv2DTranspose, keras.layers.Dense)


def _kernel_ids(net):
    """ids of the kernels of every conv / conv-transpose / dense layer, found independently."""
    return {id(layer.kernel) for layer in net.layers if isinstance(layer, KERNEL_LAYERS)}


def _prior(size=40):
    yy, xx = np.mgrid[:size, :size]
    return (0.05 + 0.9 * np.exp(-((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / 100.0)).astype("float32")


@pytest.mark.parametrize("arch", ["fcn", "multifcn_crf"])
def test_only_kernels_are_regularised_and_loss_matches_numpy(arch):
    net = build_model(arch, input_size=40, prior=_prior())
    model = SegmentationModel(net, l2=0.5)
    regularised = {id(v) for v in net.trainable_weights if v.regularizer is not None}
    assert regularised == _kernel_ids(net) and regularised
    # biases, the position prior, the CRF and the fusion weights are free
    names = {v.path for v in net.trainable_weights if v.regularizer is None}
    assert any("bias" in n for n in names)
    assert any("prior" in n for n in names)
    if arch.endswith("crf"):
        assert any(n.startswith("crf/") for n in names)
        assert any("fusion" in n for n in names)
    kernels = [layer.kernel.numpy().astype(np.float64) for layer in net.layers
               if isinstance(layer, KERNEL_LAYERS)]
    want = 0.5 * 0.5 * sum((k ** 2).sum() for k in kernels) / (40 * 40)   # Zhu: l2/2 ||theta||^2 / H W
    assert float(model.regularization_loss()) == pytest.approx(want, rel=1e-5)
    assert float(losses.l2_penalty([k.astype("float32") for k in kernels], 0.5, 1600)) == pytest.approx(
        want, rel=1e-5)


def test_no_l2_no_regulariser():
    net = build_model("fcn", input_size=40)
    SegmentationModel(net, l2=0.0)
    assert all(v.regularizer is None for v in net.trainable_weights)
    assert net.losses == []


def test_regulariser_is_saved_with_the_network(tmp_path):
    net = build_model("fcn", input_size=40, prior=_prior())
    SegmentationModel(net, l2=0.5)
    cfg = net.get_layer("conv1").get_config()["kernel_regularizer"]
    assert cfg["config"]["l2"] == pytest.approx(0.5 * 0.5 / 1600)
    net.save(tmp_path / "net.keras")
    back = keras.saving.load_model(tmp_path / "net.keras", compile=False)
    assert {id(v) for v in back.trainable_weights if v.regularizer is not None} == _kernel_ids(back)
    got = float(sum(np.asarray(v) for v in back.losses))
    want = float(sum(np.asarray(v) for v in net.losses))
    assert got == pytest.approx(want, rel=1e-6) and want > 0


def test_training_step_moves_only_kernels_by_the_l2_gradient(rng):
    """SGD step with and without l2 from the same weights: only kernels differ, by lr * 2 * scale * w."""
    x = rng.normal(size=(4, 40, 40, 1)).astype("float32")
    m = (rng.random((4, 40, 40)) > 0.7).astype("float32")
    y = np.stack([1 - m, m], -1)
    w0 = build_model("fcn", input_size=40, prior=_prior()).get_weights()
    after = {}
    lr, l2 = 0.01, 40.0
    for value in (0.0, l2):
        net = build_model("fcn", input_size=40, prior=_prior())
        net.set_weights(w0)
        model = SegmentationModel(net, l2=value)
        model.compile(optimizer=keras.optimizers.SGD(lr))
        model.train_on_batch(x, y)
        after[value] = {v.path: v.numpy().astype(np.float64) for v in net.trainable_weights}
        kernel_paths = {layer.kernel.path for layer in net.layers if isinstance(layer, KERNEL_LAYERS)}
    start = {v.path: np.asarray(w, np.float64) for v, w in zip(net.weights, w0)}
    scale = 0.5 * l2 / 1600
    for path, a in after[0.0].items():
        b = after[l2][path]
        if path in kernel_paths:
            np.testing.assert_allclose(a - b, lr * 2 * scale * start[path], rtol=1e-3, atol=1e-7)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("adversarial", [False, True])
def test_logged_loss_is_clean_plus_adv_plus_l2_at_step_start(rng, adversarial):
    x = rng.normal(size=(4, 40, 40, 1)).astype("float32")
    m = (rng.random((4, 40, 40)) > 0.7).astype("float32")
    y = np.stack([1 - m, m], -1)
    net = build_model("fcn", input_size=40, prior=_prior())
    kernels = [layer.kernel.numpy().astype(np.float64) for layer in net.layers if isinstance(layer, KERNEL_LAYERS)]
    want = 0.5 * 2.0 * sum((k ** 2).sum() for k in kernels) / 1600
    model = SegmentationModel(net, l2=2.0, adversarial=adversarial, epsilon=0.1)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    logs = model.train_on_batch(x, y, return_dict=True)
    got = logs["loss"] - logs["clean_loss"] - logs.get("adv_loss", 0.0)
    assert got == pytest.approx(want, rel=1e-3)
