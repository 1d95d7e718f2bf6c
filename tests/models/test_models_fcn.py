"""Zhu et al. FCNs (Table 1), the four-FCN ensemble and its unary fusion."""

import keras
import numpy as np
import pytest

from kerasseg.errors import KerassegError
from kerasseg.models import FCN_VARIANTS, UnaryFusion, build_model, fcn_geometry

TABLE1 = {  # Zhu et al. Table 1, written out independently of the module's constant
    1: [(6, 5), (12, 5), (588, 7)],
    2: [(9, 4), (12, 4), (588, 7)],
    3: [(16, 3), (13, 3), (415, 8)],
    4: [(37, 2), (12, 2), (355, 9)],
}


def fcn_param_count(variant, size=40, conv3_side=1):
    """Hand count: conv k x k (cin -> cout) = k*k*cin*cout + cout; transposed conv K x K (c3 -> 2)."""
    (m1, k1), (m2, k2), (m3, k3) = TABLE1[variant]
    kernel = size - 4 * (conv3_side - 1)
    return (k1 * k1 * 1 * m1 + m1) + (k2 * k2 * m1 * m2 + m2) + (k3 * k3 * m2 * m3 + m3) + (kernel * kernel * m3 * 2 + 2)


@pytest.mark.parametrize("variant", [1, 2, 3, 4])
def test_fcn_structure(variant):
    model = build_model("fcn", fcn_variant=variant)
    assert dict(FCN_VARIANTS) == {k: tuple(map(tuple, v)) for k, v in TABLE1.items()}
    for i, (maps, k) in enumerate(TABLE1[variant], start=1):
        conv = model.get_layer(f"conv{i}")
        assert conv.filters == maps and tuple(conv.kernel_size) == (k, k)
        assert conv.padding == "valid" and conv.activation.__name__ == "tanh"
    assert tuple(model.get_layer("pool1").pool_size) == (2, 2)
    assert tuple(model.get_layer("pool2").pool_size) == (2, 2)
    # conv3 collapses the 40x40 ROI to 1x1; the last layer is two 40x40 transposed-conv kernels
    assert tuple(model.get_layer("conv3").output.shape[1:3]) == (1, 1)
    deconv = model.get_layer("deconv")
    assert deconv.filters == 2 and tuple(deconv.kernel_size) == (40, 40)
    assert model.count_params() == fcn_param_count(variant)


def test_fcn_parameter_counts_by_hand():
    # FCN1: 5*5*1*6+6=156; 5*5*6*12+12=1812; 7*7*12*588+588=346332; 40*40*588*2+2=1881602
    assert build_model("fcn", fcn_variant=1).count_params() == 156 + 1812 + 346332 + 1881602
    # FCN4: 2*2*1*37+37=185; 2*2*37*12+12=1788; 9*9*12*355+355=345415; 40*40*355*2+2=1136002
    assert build_model("fcn", fcn_variant=4).count_params() == 185 + 1788 + 345415 + 1136002


def test_fcn_probabilities_sum_to_one():
    model = build_model("fcn", fcn_variant=3)
    p = np.asarray(model(np.random.default_rng(0).normal(size=(4, 40, 40, 1)).astype("float32"))["net"])
    assert p.shape == (4, 40, 40, 2) and (p >= 0).all()
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("size, side, kernel", [(64, 7, 40), (80, 11, 40), (48, 3, 40), (41, 1, 41)])
def test_fcn_other_sizes(size, side, kernel):
    # FCN1 valid chain: s = ((size-4)//2 - 4)//2 - 6 ; K = size - 4 (s - 1)
    s = ((size - 4) // 2 - 4) // 2 - 6
    assert (s, size - 4 * (s - 1)) == (side, kernel)
    assert fcn_geometry(size, 1) == (side, kernel)
    model = build_model("fcn", input_size=size)
    assert model.count_params() == fcn_param_count(1, size, side)
    assert model(np.zeros((1, size, size, 1), "float32"))["net"].shape == (1, size, size, 2)


@pytest.mark.parametrize("arch, size, variant", [("fcn", 39, 1), ("fcn", 20, 1), ("multifcn", 38, 1), ("fcn_crf", 8, 1)])
def test_fcn_too_small_is_clear_error(arch, size, variant):
    with pytest.raises(KerassegError, match=f"model '{arch}' .*FCN {variant}.* at least 40; got {size}"):
        build_model(arch, input_size=size)


def test_fcn_bad_variant():
    with pytest.raises(KerassegError, match="fcn_variant must be one of 1, 2, 3, 4; got 5"):
        build_model("fcn", fcn_variant=5)


@pytest.fixture(scope="module")
def multifcn():
    return build_model("multifcn")


def test_multifcn_is_mean_of_the_four_fcns(multifcn):
    """Rebuild each FCN on its own, copy the branch weights, and average in float64."""
    x = np.random.default_rng(2).normal(size=(3, 40, 40, 1)).astype("float32")
    net = np.asarray(multifcn(x, training=False)["net"], dtype=np.float64)
    probs = []
    for v in (1, 2, 3, 4):
        single = build_model("fcn", fcn_variant=v)
        for name in ("conv1", "conv2", "conv3", "deconv"):
            single.get_layer(name).set_weights(multifcn.get_layer(f"fcn{v}_{name}").get_weights())
        probs.append(np.asarray(single(x, training=False)["net"], dtype=np.float64))
    np.testing.assert_allclose(net, np.mean(probs, axis=0), atol=1e-6)
    # the branches are distinct networks (different outputs), so the test is not trivial
    assert np.abs(probs[0] - probs[3]).max() > 1e-3
    assert multifcn.count_params() == sum(fcn_param_count(v) for v in (1, 2, 3, 4))


def test_unary_fusion_against_numpy():
    rng = np.random.default_rng(3)
    logits = [rng.normal(size=(2, 5, 6, 2)).astype("float32") for _ in range(4)]
    layer = UnaryFusion()
    out = np.asarray(layer(logits))
    w0 = layer.get_weights()[0]
    np.testing.assert_allclose(w0, np.full((4, 2), 0.25))   # init 1/4 per FCN and class

    def log_softmax(z):
        z = z.astype(np.float64)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    ref = sum(0.25 * log_softmax(z) for z in logits)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    w = rng.uniform(0.1, 2.0, size=(4, 2))
    layer.set_weights([w.astype("float32")])
    ref = sum(log_softmax(z) * w[u] for u, z in enumerate(logits))
    np.testing.assert_allclose(np.asarray(layer(logits)), ref, atol=1e-5)


def test_multifcn_crf_fuses_branch_log_probs():
    model = build_model("multifcn_crf", crf={"iterations_test": 0, "iterations_train": 0})
    fusion = model.get_layer("unary_fusion")
    node = fusion._inbound_nodes[0]
    feeding = [t._keras_history.operation.name for t in node.input_tensors[0]] if isinstance(
        node.input_tensors[0], (list, tuple)) else [t._keras_history.operation.name for t in node.input_tensors]
    assert feeding == ["fcn1_deconv", "fcn2_deconv", "fcn3_deconv", "fcn4_deconv"]
    crf_parents = [t._keras_history.operation.name for t in model.get_layer("crf")._inbound_nodes[0].input_tensors]
    assert crf_parents == ["unary_fusion", "image"]
    # with 0 mean-field iterations the CRF returns softmax(unary): the normalised geometric mean
    x = np.random.default_rng(4).normal(size=(2, 40, 40, 1)).astype("float32")
    out = model(x, training=False)
    branch = keras.Model(model.input, [model.get_layer(f"fcn{v}_softmax").output for v in (1, 2, 3, 4)])
    ps = [np.asarray(p, np.float64) for p in branch(x, training=False)]
    geo = np.exp(np.mean([np.log(p) for p in ps], axis=0))
    geo /= geo.sum(-1, keepdims=True)
    np.testing.assert_allclose(np.asarray(out["crf"]), geo, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out["net"]), np.mean(ps, axis=0), atol=1e-6)


def test_unary_fusion_lives_in_layers_and_old_saved_configs_load():
    """UnaryFusion moved to kerasseg.layers.fusion; a config saved from kerasseg.models.fcn still loads."""
    from kerasseg.layers.fusion import UnaryFusion as FromLayers
    from kerasseg.models.fcn import UnaryFusion as FromFcn

    assert UnaryFusion is FromLayers is FromFcn
    assert keras.saving.get_registered_name(UnaryFusion) == "kerasseg>UnaryFusion"
    saved = keras.saving.serialize_keras_object(UnaryFusion(name="unary_fusion"))
    saved["module"] = "kerasseg.models.fcn"   # how a model saved before the move records it
    back = keras.saving.deserialize_keras_object(saved)
    assert isinstance(back, UnaryFusion) and back.name == "unary_fusion"


def test_unary_fusion_refuses_a_single_tensor():
    with pytest.raises(KerassegError, match="list of logits"):
        UnaryFusion()(np.zeros((1, 4, 4, 2), "float32"))
