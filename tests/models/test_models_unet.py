"""U-Net / residual U-Net of CRU-Net: layer structure, wiring, parameter counts, sizes."""

import numpy as np
import pytest

from kerasseg.errors import KerassegError
from kerasseg.models import build_model, final_key


def parents(model, name):
    """Names of the layers feeding layer ``name`` (in call order)."""
    node = model.get_layer(name)._inbound_nodes[0]
    return [t._keras_history.operation.name for t in node.input_tensors]


@pytest.fixture(scope="module")
def unet():
    return build_model("unet", input_size=40, kernel_size=3)


@pytest.fixture(scope="module")
def resunet():
    return build_model("resunet", input_size=40, kernel_size=3)


def test_unet_levels_filters_kernels(unet):
    # CRU-Net Sec 3.2: maps 16/32/64/128 at 40/20/10/5, 3x3 kernels, 'same' padding, ReLU
    expect = {1: (16, 40), 2: (32, 20), 3: (64, 10), 4: (128, 5), 5: (64, 10), 6: (32, 20), 7: (16, 40)}
    for m, (f, side) in expect.items():
        name = f"enc{m}_conv" if m <= 4 else f"dec{m}_conv"
        layer = unet.get_layer(name)
        assert layer.filters == f
        assert tuple(layer.kernel_size) == (3, 3)
        assert layer.padding == "same"
        assert layer.activation.__name__ == "relu"
        assert tuple(layer.output.shape[1:]) == (side, side, f)
    head = unet.get_layer("head_logits")
    assert head.filters == 2 and tuple(head.kernel_size) == (1, 1)
    assert tuple(unet.input.shape) == (None, 40, 40, 1)
    assert unet.input.name == "image" or unet.inputs[0].name == "image"


def test_unet_skip_wiring_and_dropout(unet):
    # concatenations layer3-layer5, layer2-layer6, layer1-layer7 (Li et al. Fig. 1)
    assert parents(unet, "skip3_5") == ["enc3_conv", "dec5_conv"]
    assert parents(unet, "skip2_6") == ["enc2_conv", "dec6_conv"]
    assert parents(unet, "skip1_7") == ["enc1_conv", "dec7_conv"]
    assert parents(unet, "dec6_up") == ["skip3_5"]
    assert parents(unet, "dec7_up") == ["skip2_6"]
    assert parents(unet, "head_logits") == ["skip1_7"]
    # dropout 0.5 at the bottleneck (layer4), feeding the up path
    drop = unet.get_layer("enc4_dropout")
    assert drop.rate == 0.5
    assert parents(unet, "enc4_dropout") == ["enc4_conv"]
    assert parents(unet, "dec5_up") == ["enc4_dropout"]
    assert not any("shortcut" in layer.name for layer in unet.layers)


def test_unet_parameter_count(unet):
    # conv k x k (cin -> cout): 9*cin*cout + cout
    # enc1 1->16: 160; enc2 16->32: 4640; enc3 32->64: 18496; enc4 64->128: 73856
    # dec5 128->64: 73792; dec6 (64+64)->32: 36896; dec7 (32+32)->16: 9232
    # head 1x1 (16+16)->2: 66                                   total 217138
    assert unet.count_params() == 217138


def test_resunet_shortcuts(resunet):
    # layer1: 1x1 projection; down layers: 1x1 conv + 2x2 max pool; up layers: upsampling + 2x2 conv
    sc1 = resunet.get_layer("enc1_shortcut")
    assert tuple(sc1.kernel_size) == (1, 1) and sc1.filters == 16 and sc1.activation.__name__ == "linear"
    assert parents(resunet, "enc1_shortcut") == ["image"]
    assert parents(resunet, "enc1_add") == ["enc1_conv", "enc1_shortcut"]
    for m, f, src in ((2, 32, "enc1_add"), (3, 64, "enc2_add"), (4, 128, "enc3_add")):
        sc = resunet.get_layer(f"enc{m}_shortcut")
        assert tuple(sc.kernel_size) == (1, 1) and sc.filters == f
        assert parents(resunet, f"enc{m}_shortcut") == [src]
        assert parents(resunet, f"enc{m}_shortcut_pool") == [f"enc{m}_shortcut"]
        assert parents(resunet, f"enc{m}_pool") == [src]
        assert parents(resunet, f"enc{m}_add") == [f"enc{m}_conv", f"enc{m}_shortcut_pool"]
    for m, f, src in ((5, 64, "enc4_dropout"), (6, 32, "skip3_5"), (7, 16, "skip2_6")):
        sc = resunet.get_layer(f"dec{m}_shortcut")
        assert tuple(sc.kernel_size) == (2, 2) and sc.filters == f and sc.activation.__name__ == "linear"
        assert parents(resunet, f"dec{m}_shortcut_up") == [src]
        assert parents(resunet, f"dec{m}_shortcut") == [f"dec{m}_shortcut_up"]
        assert parents(resunet, f"dec{m}_add") == [f"dec{m}_conv", f"dec{m}_shortcut"]
    assert parents(resunet, "skip1_7") == ["enc1_add", "dec7_add"]


def test_resunet_parameter_count(resunet):
    # U-Net 217138 plus the projections W:
    # 1x1: 1->16: 32; 16->32: 544; 32->64: 2112; 64->128: 8320
    # 2x2: 128->64: 4*128*64+64 = 32832; 128->32: 16416; 64->16: 4112   -> +64368
    assert resunet.count_params() == 217138 + 64368


def test_resunet_layer_is_residual(resunet):
    """Layer output = ReLU(conv(pool x)) + maxpool(1x1conv x): recompute enc2 in NumPy float64."""
    import keras

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 40, 40, 1)).astype("float32")
    probe = keras.Model(resunet.input, [resunet.get_layer("enc1_add").output, resunet.get_layer("enc2_add").output])
    a1, a2 = (t.astype(np.float64) for t in probe.predict(x, verbose=0))
    wc, bc = (w.astype(np.float64) for w in resunet.get_layer("enc2_conv").get_weights())
    ws, bs = (w.astype(np.float64) for w in resunet.get_layer("enc2_shortcut").get_weights())

    def pool(t):
        b, h, w, c = t.shape
        return t.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))

    def conv_same(t, w, b):
        k = w.shape[0]
        p = (k - 1) // 2  # TF 'same': the extra pad of an even kernel goes after
        tp = np.pad(t, ((0, 0), (p, k - 1 - p), (p, k - 1 - p), (0, 0)))
        out = np.zeros(t.shape[:3] + (w.shape[-1],))
        for i in range(k):
            for j in range(k):
                out += np.einsum("bhwc,cd->bhwd", tp[:, i : i + t.shape[1], j : j + t.shape[2]], w[i, j])
        return out + b

    main = np.maximum(conv_same(pool(a1), wc, bc), 0.0)
    short = pool(conv_same(a1, ws, bs))
    np.testing.assert_allclose(a2, main + short, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", ["unet", "resunet"])
def test_forward_probabilities(arch, unet, resunet):
    model = unet if arch == "unet" else resunet
    x = np.random.default_rng(1).normal(size=(3, 40, 40, 1)).astype("float32")
    out = model(x, training=False)
    assert set(out) == {"net"} and final_key(model) == "net"
    p = np.asarray(out["net"])
    assert p.shape == (3, 40, 40, 2)
    assert (p >= 0).all()
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)


def test_kernel_size_7_and_other_sizes():
    m = build_model("unet", input_size=64, kernel_size=7)
    assert tuple(m.get_layer("enc3_conv").kernel_size) == (7, 7)
    assert tuple(m.get_layer("enc4_conv").output.shape[1:]) == (8, 8, 128)
    out = m(np.zeros((1, 64, 64, 1), "float32"))["net"]
    assert out.shape == (1, 64, 64, 2)
    r = build_model("resunet", input_size=80)
    assert r(np.zeros((2, 80, 80, 1), "float32"))["net"].shape == (2, 80, 80, 2)
    # 3 levels -> size divisible by 4
    s = build_model("unet", input_size=44, filters=(8, 16, 32))
    assert s(np.zeros((1, 44, 44, 1), "float32"))["net"].shape == (1, 44, 44, 2)


@pytest.mark.parametrize("arch", ["unet", "resunet", "crunet", "crunet_nor"])
def test_bad_size_is_clear_error(arch):
    with pytest.raises(KerassegError, match=f"model '{arch}' needs an ROI size divisible by 8; got 42"):
        build_model(arch, input_size=42)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kernel_size": 0}, "kernel_size"),
        ({"kernel_size": 2.5}, "kernel_size"),
        ({"filters": (16,)}, "at least 2 levels"),
        ({"filters": "abc"}, "filters"),
        ({"dropout": 1.0}, "dropout"),
        ({"fcn_variant": 2}, "unknown option"),
        ({"input_size": 0}, "input_size"),
    ],
)
def test_bad_options(kwargs, match):
    with pytest.raises(KerassegError, match=match):
        build_model("unet", **kwargs)
