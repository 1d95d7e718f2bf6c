"""kerasseg.layers.crf as a package of backends: one name per form, the backend protocol, and backend
options that travel with the layer config (a reloaded model computes what the saved one did)."""

import json
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from fixtures.crf import disc_crf_problem as _images
from kerasseg.errors import KerassegError
from kerasseg.layers.crf import (
    ALIASES,
    BACKENDS,
    CRFRNN,
    MODES,
    CRFBackend,
    ExactBackend,
    GridBackend,
    GridOptions,
    LowRankBackend,
    LowRankOptions,
)

LOW = {"spatial_rtol": 5e-2, "range_anchors": 6, "range_spacing": 1.0}
GRID = {"truncate": 2.0, "bilateral_spatial_oversample": 1.0, "bilateral_range_oversample": 1.0,
        "bilateral_range_bins": 8, "intensity_oversample": 1.0, "intensity_bins": 8}
ALL = ("spatial", "bilateral", "intensity")


def _model(mode, **crf):
    u = keras.Input((40, 40, 2), name="unary")
    x = keras.Input((40, 40, 1), name="image")
    probs = CRFRNN(mode=mode, kernels=ALL, name="crf", **crf)([u, x])
    return keras.Model([u, x], probs)


def _dense_messages(img, q, thetas):
    """float64 dense messages of every kernel, self term excluded: the independent reference."""
    b, h, w, c = q.shape
    yy, xx = np.mgrid[:h, :w]
    p = np.stack([yy.ravel(), xx.ravel()], 1).astype(np.float64)
    d2 = ((p[:, None] - p[None]) ** 2).sum(-1)
    out = []
    for kind in ALL:
        per = []
        for n in range(b):
            f = img[n].reshape(-1).astype(np.float64)
            df2 = (f[:, None] - f[None]) ** 2
            k = {"spatial": np.exp(-d2 / (2 * thetas["spatial"] ** 2)),
                 "bilateral": np.exp(-d2 / (2 * thetas["alpha"] ** 2) - df2 / (2 * thetas["beta"] ** 2)),
                 "intensity": np.exp(-df2 / (2 * thetas["intensity"] ** 2))}[kind]
            np.fill_diagonal(k, 0.0)
            per.append((k @ q[n].reshape(-1, c).astype(np.float64)).reshape(h, w, c))
        out.append(np.stack(per))
    return out


# ------------------------------------------------------------------- (1) options saved with the model
@pytest.mark.parametrize("mode,key,options", [("lowrank", "lowrank_options", LOW), ("grid", "grid_options", GRID),
                                              ("auto", "lowrank_options", LOW)])
def test_reloaded_model_with_non_default_options_computes_the_same(rng, tmp_path, mode, key, options):
    img, unary = _images(rng, b=3)
    model = _model(mode, **{key: options})
    want = model.predict([unary, img], verbose=0)
    # the options matter: the default settings give a measurably different output
    default = _model(mode).predict([unary, img], verbose=0)
    assert np.abs(default - want).max() > 1e-4
    config = model.get_layer("crf").get_config()
    assert config[key] == options
    assert json.loads(json.dumps(config))[key] == options  # JSON-ready, as .keras stores it
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    layer = loaded.get_layer("crf")
    assert layer.get_config()[key] == options
    assert getattr(layer, key) == (LowRankOptions if key == "lowrank_options" else GridOptions)(**options)
    np.testing.assert_array_equal(loaded.predict([unary, img], verbose=0), want)


def test_options_reach_the_backend_against_dense_reference(rng):
    """Options are used, not just stored: a tight low-rank setting is closer to the dense float64
    messages than the loose one (6 anchors cannot span the range at 1 bandwidth apart, so the
    intensity bandwidth is widened: a smoother kernel, far from the dense one)."""
    img, _ = _images(rng, b=2)
    q = rng.random((2, 40, 40, 2))
    q = (q / q.sum(-1, keepdims=True)).astype(np.float32)
    th = {"spatial": 3.0, "alpha": 5.0, "beta": 0.5, "intensity": 1.0}
    ref = _dense_messages(img, q, th)
    errs = {}
    for name, opts in (("tight", {"spatial_rtol": 1e-5, "range_anchors": 24}), ("loose", LOW)):
        layer = CRFRNN(mode="lowrank", kernels=ALL, lowrank_options=opts)
        backend = layer.backend("lowrank")
        assert backend.options == LowRankOptions(**opts)
        state = backend.prepare(tf.constant(img), kernels=ALL, bandwidths=th)
        got = backend.messages(tf.constant(q), state)
        errs[name] = [np.abs(g.numpy() - r).max() / np.abs(r).max() for g, r in zip(got, ref)]
    assert all(t < lo_ for t, lo_ in zip(errs["tight"], errs["loose"])), errs
    assert max(errs["tight"]) < 2e-4 and max(errs["loose"]) > 0.05, errs
    # grid: fewer intensity bins are coarser against the same reference
    gerr = {}
    for bins in (128, 8):
        backend = CRFRNN(mode="grid", grid_options={"intensity_bins": bins, "intensity_oversample": 4.0}).backend("grid")
        state = backend.prepare(tf.constant(img), kernels=("intensity",), bandwidths=th)
        gerr[bins] = np.abs(backend.messages(tf.constant(q), state)[0].numpy() - ref[2]).mean()
    assert gerr[128] < gerr[8]


def test_options_validated_with_one_line_errors():
    for kwargs, word in [
        ({"lowrank_options": {"range_anchors": 1}}, "lowrank_options.range_anchors=1"),
        ({"lowrank_options": {"range_spacing": 0.3}}, "lowrank_options.range_spacing=0.3"),
        ({"lowrank_options": {"spatial_rtol": 0.0}}, "lowrank_options.spatial_rtol=0.0"),
        ({"lowrank_options": {"anchors": 8}}, "unknown keys \\['anchors'\\]"),
        ({"grid_options": {"intensity_bins": 2}}, "grid_options.intensity_bins=2"),
        ({"grid_options": {"truncate": float("nan")}}, "grid_options.truncate=nan"),
        ({"grid_options": {"bilateral_range_bins": 8.5}}, "bilateral_range_bins=8.5"),
        ({"grid_options": [1, 2]}, "grid_options must be a mapping"),
    ]:
        with pytest.raises(KerassegError, match=word) as err:
            CRFRNN(**kwargs)
        assert "\n" not in str(err.value)
    with pytest.raises(Exception):  # frozen: a layer's options cannot change under it
        LowRankOptions().range_anchors = 3


def test_options_default_to_the_documented_values_and_instances_are_accepted():
    layer = CRFRNN()
    assert layer.lowrank_options == LowRankOptions(spatial_rtol=1e-3, range_anchors=16, range_spacing=0.8)
    assert layer.grid_options.intensity_bins == 128 and layer.grid_options.bilateral_range_bins == 32
    opts = GridOptions(intensity_bins=64)
    assert CRFRNN(mode="grid", grid_options=opts).grid_options is opts
    # a config written before the options existed (no such keys) loads with the defaults
    config = CRFRNN(mode="grid").get_config()
    del config["grid_options"], config["lowrank_options"]
    assert CRFRNN.from_config(config).grid_options == GridOptions()


# ------------------------------------------------------------------- (2) one name per form, aliases
def test_modes_and_aliases():
    assert MODES == ("exact", "lowrank", "grid", "auto")
    assert ALIASES == {"scalable": "grid", "filters": "grid"}
    for alias in ("scalable", "filters"):
        layer = CRFRNN(mode=alias)
        assert layer.mode == "grid" and layer.get_config()["mode"] == "grid"
        assert layer._backend_for(40 * 40) == "grid"
        assert isinstance(layer.backend(layer._backend_for(1600)), GridBackend)
    for bad in ("fast", "Grid", "", None, 3):
        with pytest.raises(KerassegError) as err:
            CRFRNN(mode=bad)
        msg = str(err.value)
        assert "\n" not in msg and f"mode={bad!r} is unknown" in msg
        assert "['exact', 'lowrank', 'grid', 'auto']" in msg and "'scalable'" in msg


def test_old_scalable_keras_file_still_loads(rng, tmp_path):
    """A .keras file written before the rename (mode "scalable", no options in the config) loads as the
    grid form and computes what the grid form computes."""
    img, unary = _images(rng, b=2)
    model = _model("grid")
    want = model.predict([unary, img], verbose=0)
    path = tmp_path / "new.keras"
    model.save(path)
    old = tmp_path / "old.keras"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(old, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "config.json":
                cfg = json.loads(data)
                layers = [lyr for lyr in cfg["config"]["layers"] if lyr["class_name"] == "CRFRNN"]
                assert len(layers) == 1
                layers[0]["config"]["mode"] = "scalable"
                del layers[0]["config"]["grid_options"], layers[0]["config"]["lowrank_options"]
                data = json.dumps(cfg).encode()
            dst.writestr(item, data)
    loaded = keras.saving.load_model(old)
    assert loaded.get_layer("crf").mode == "grid"
    np.testing.assert_array_equal(loaded.predict([unary, img], verbose=0), want)


# ------------------------------------------------------------------- (3) default mode
def test_default_mode_is_auto():
    layer = CRFRNN()
    assert layer.mode == "auto" and layer.get_config()["mode"] == "auto"
    assert layer._backend_for(40 * 40) == "lowrank"
    assert layer._backend_for(layer.lowrank_max_pixels + 1) == "grid"
    assert layer._backend_for(40 * 40, channels=3) == "exact"  # multi-channel features: exact
    import inspect

    assert inspect.signature(CRFRNN.__init__).parameters["mode"].default == "auto"


# ------------------------------------------------------------------- (4) the protocol
def test_every_backend_satisfies_the_protocol():
    assert set(BACKENDS) == {"exact", "lowrank", "grid"}
    layer = CRFRNN()
    for name in BACKENDS:
        backend = layer.backend(name)
        assert isinstance(backend, CRFBackend), name
        assert backend.name == name
    assert isinstance(layer.backend("exact"), ExactBackend)
    assert isinstance(layer.backend("lowrank"), LowRankBackend)
    assert layer.backend("lowrank").options is layer.lowrank_options
    assert layer.backend("grid").options is layer.grid_options

    class MissingMethod:  # no mean_field: not a backend
        name = "x"

        def prepare(self, image, *, kernels, bandwidths): ...
        def messages(self, q, state): ...
        def map_messages(self, x, state): ...
        def ones_messages(self, state): ...

    assert not isinstance(MissingMethod(), CRFBackend)


@pytest.mark.parametrize("name", ["exact", "lowrank", "grid"])
def test_backend_hooks_match_dense_reference(rng, name):
    """Every backend's messages, map_messages and ones_messages against the float64 dense sums."""
    img, _ = _images(rng, b=2, h=12, w=14)
    q = rng.random((2, 12, 14, 2))
    q = (q / q.sum(-1, keepdims=True)).astype(np.float32)
    th = {"spatial": 2.0, "alpha": 3.0, "beta": 0.5, "intensity": 1.0}
    ref = _dense_messages(img, q, th)
    ones_ref = _dense_messages(img, np.ones((2, 12, 14, 1)), th)
    backend = CRFRNN().backend(name)
    state = backend.prepare(tf.constant(img), kernels=ALL, bandwidths={k: tf.constant(v) for k, v in th.items()})
    tol = {"exact": 1e-5, "lowrank": 3e-3, "grid": 0.08}[name]
    for got, r in zip(backend.messages(tf.constant(q), state), ref):
        assert np.abs(got.numpy() - r).max() <= tol * np.abs(r).max()
    for got, r in zip(backend.map_messages(tf.constant(q[..., 1]), state), ref):
        assert np.abs(got.numpy() - r[..., 1]).max() <= tol * np.abs(r).max()
    for got, r in zip(backend.ones_messages(state), ones_ref):
        got = np.broadcast_to(got.numpy(), r[..., 0].shape)
        assert np.abs(got - r[..., 0]).max() <= tol * np.abs(r).max()


def test_modules_are_small():
    from pathlib import Path

    import kerasseg.layers.crf as package

    sizes = {p.name: len(p.read_text().splitlines()) for p in Path(package.__file__).parent.glob("*.py")}
    assert {"layer.py", "mean_field.py", "backend.py", "exact.py", "lowrank.py", "grid.py"} <= set(sizes)
    assert max(sizes.values()) <= 450, sizes


def test_public_import_paths():
    import kerasseg.layers
    from kerasseg.layers.crf import layer as layer_module

    assert kerasseg.layers.CRFRNN is CRFRNN is layer_module.CRFRNN
    assert keras.saving.get_registered_object("kerasseg>CRFRNN") is CRFRNN


@pytest.mark.parametrize("name", ["layer", "mean_field", "backend", "exact", "lowrank", "grid", "grid_plans"])
def test_module_examples_run(name):
    """Every Example: block of the package's public functions and classes runs as written."""
    import doctest
    import importlib

    module = importlib.import_module(f"kerasseg.layers.crf.{name}")
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in doctest.DocTestFinder().find(module, globs={}):
        if test.examples and test.name.startswith(module.__name__):
            runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0 and result.failed == 0, result
