"""Registry, output contract, `.keras` round trips and MirroredStrategy for the models."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasseg.training.strategy import cpu_mirrored_strategy

from kerasseg.errors import KerassegError
from kerasseg.models import build_model, final_key, list_archs, output_keys

FAST_CRF = {"iterations_train": 1, "iterations_test": 2}
PRIOR = np.clip(np.random.default_rng(7).uniform(0.05, 0.95, size=(40, 40)), 0.01, 0.99).astype(np.float32)

CASES = [
    ("unet", {}),
    ("resunet", {"kernel_size": 7}),
    ("fcn", {"fcn_variant": 2, "prior": PRIOR}),
    ("multifcn", {}),
    ("crunet", {"crf": FAST_CRF}),
    ("crunet_nor", {"crf": FAST_CRF, "prior": PRIOR}),
    ("fcn_crf", {"crf": FAST_CRF, "fcn_variant": 4}),
    ("multifcn_crf", {"crf": FAST_CRF, "prior": PRIOR}),
]


def test_registry_names():
    assert set(list_archs()) == {"unet", "resunet", "fcn", "multifcn", "crunet", "crunet_nor", "fcn_crf", "multifcn_crf"}
    with pytest.raises(KerassegError, match="unknown model 'vgg'; known: .*crunet"):
        build_model("vgg")
    with pytest.raises(KerassegError, match="unknown option.*'fcn'"):
        build_model("fcn", kernel_size=3)
    with pytest.raises(KerassegError, match="crf options must be a mapping"):
        build_model("unet", crf=[1])
    with pytest.raises(KerassegError, match="bad crf options"):
        build_model("crunet", crf={"no_such_option": 1})


@pytest.mark.parametrize(
    "arch, crf, base_layer",
    [("crunet", None, "enc1_shortcut"), ("crunet_nor", None, "enc1_conv"), ("unet", {}, "enc1_conv"), ("fcn_crf", None, "deconv")],
)
def test_composites_feed_logits_and_image_to_crf(arch, crf, base_layer):
    model = build_model(arch, crf=crf)
    assert final_key(model) == "crf" and set(output_keys(model)) == {"net", "crf"}
    model.get_layer(base_layer)   # the expected base network is inside
    if arch == "crunet_nor":
        assert not any("shortcut" in layer.name for layer in model.layers)
    node = model.get_layer("crf")._inbound_nodes[0]
    feeding = [t._keras_history.operation.name for t in node.input_tensors]
    logits = "deconv" if arch == "fcn_crf" else "head_logits"
    assert feeding == [logits, "image"]
    assert [t._keras_history.operation.name for t in model.get_layer("net")._inbound_nodes[0].input_tensors] == [logits]


def _perturb(model, seed=0):
    """Move every weight away from its initial value so a reload must really restore them."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        v = w.numpy()
        w.assign((v + 0.05 * rng.normal(size=v.shape)).astype(v.dtype))


@pytest.mark.parametrize("arch, kwargs", CASES)
def test_keras_round_trip(arch, kwargs, tmp_path):
    model = build_model(arch, **kwargs)
    _perturb(model)
    x = np.random.default_rng(1).normal(size=(2, 40, 40, 1)).astype(np.float32)
    before = model(x, training=False)
    path = tmp_path / f"{arch}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    after = loaded(x, training=False)
    assert set(after) == set(before) == ({"net", "crf"} if "crf" in kwargs else {"net"})
    assert final_key(loaded) == final_key(model)
    for key in before:
        b = np.asarray(before[key])
        np.testing.assert_allclose(np.asarray(after[key]), b, rtol=0, atol=1e-6)
        np.testing.assert_allclose(b.sum(-1), 1.0, atol=1e-5)
    assert loaded.count_params() == model.count_params()


def test_crf_composite_under_mirrored_strategy():
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2, "conftest should provide two logical CPU devices"
    strategy = cpu_mirrored_strategy(devices)
    assert strategy.num_replicas_in_sync == 2
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 40, 40, 1)).astype(np.float32)
    m = np.zeros((4, 40, 40), np.int64)
    m[:, 10:30, 12:28] = 1
    y = np.eye(2, dtype=np.float32)[m]
    with strategy.scope():
        # a 2-level residual U-Net keeps the graph (and its tracing on 2 replicas) small
        model = build_model("crunet", crf={"iterations_train": 2, "iterations_test": 3}, filters=(8, 16))
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss={"net": "categorical_crossentropy", "crf": "categorical_crossentropy"},
            loss_weights={"net": 0.33, "crf": 0.67},
        )
    crf_before = [w.numpy().copy() for w in model.get_layer("crf").trainable_weights]
    assert crf_before, "CRF layer should have trainable weights"
    hist = model.fit(x, {"net": y, "crf": y}, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"]).all()
    crf_after = [w.numpy() for w in model.get_layer("crf").trainable_weights]
    assert any(not np.allclose(a, b) for a, b in zip(crf_before, crf_after))   # gradients reached the CRF
    pred = model(x, training=False)
    assert pred["crf"].shape == (4, 40, 40, 2)
    np.testing.assert_allclose(np.asarray(pred["crf"]).sum(-1), 1.0, atol=1e-5)


def test_crf_head_module_and_bad_options_stay_one_line():
    """models/crf_head.py (was composite.py): a CRFRNN KerassegError passes through unwrapped."""
    from kerasseg.errors import KerassegError
    from kerasseg.models import crf_head

    with pytest.raises(KerassegError) as err:
        crf_head.crf_layer({"mode": "no-such-mode"})
    assert "bad crf options" not in str(err.value) and "no-such-mode" in str(err.value)
    with pytest.raises(KerassegError, match="num_classes must be 2"):
        crf_head.crf_layer({"num_classes": 3})
