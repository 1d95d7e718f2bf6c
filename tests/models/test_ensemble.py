"""Ensembles + TTA as one graph (kerasseg.models.ensemble) against NumPy / scipy references."""

import keras
import numpy as np
import pytest
import scipy.ndimage as ndi
import tensorflow as tf

from kerasseg.errors import KerassegError
from kerasseg.models.ensemble import (DIHEDRAL, TTA_MODES, apply_transform, ensemble_function, predict_ensemble,
                                      tta_transforms, undo_transform)
from kerasseg.models.segmenter import predict_probability, segment_function
from fixtures.export import tiny_segmenter
from fixtures.docs import run_example
from fixtures.export import crops


@pytest.fixture(scope="module")
def members():
    return [tiny_segmenter(40, crf=True, seed=0), tiny_segmenter(40, crf=True, seed=1)]




def np_transform(x, t):
    transpose, fv, fh = t
    if transpose:
        x = np.swapaxes(x, 1, 2)
    if fv:
        x = x[:, ::-1]
    if fh:
        x = x[:, :, ::-1]
    return x


def np_undo(x, t):
    transpose, fv, fh = t
    if fh:
        x = x[:, :, ::-1]
    if fv:
        x = x[:, ::-1]
    if transpose:
        x = np.swapaxes(x, 1, 2)
    return x


def test_transforms_and_their_inverses():
    x = np.random.default_rng(0).normal(size=(2, 7, 7)).astype(np.float32)
    assert tta_transforms("none") == DIHEDRAL[:1]
    assert tta_transforms("flips") == ((False, False, False), (False, False, True), (False, True, False),
                                       (False, True, True))
    assert len(tta_transforms("dihedral")) == 8 and TTA_MODES == ("none", "flips", "dihedral")
    images = []
    for t in DIHEDRAL:
        y = apply_transform(tf.constant(x), t).numpy()
        np.testing.assert_array_equal(y, np_transform(x, t))
        np.testing.assert_array_equal(undo_transform(tf.constant(y), t).numpy(), x)
        images.append(y.tobytes())
    assert len(set(images)) == 8  # eight different symmetries
    # the dihedral group: every symmetry of the square, checked against rot90 / transposes
    ref = [np.rot90(x, k, axes=(1, 2)) for k in range(4)]
    ref += [np.swapaxes(r, 1, 2) for r in ref]
    assert {r.tobytes() for r in ref} == set(images)
    with pytest.raises(KerassegError, match="unknown TTA mode"):
        tta_transforms("rot90")


@pytest.mark.parametrize("shape", [(40, 40), (57, 33)])
def test_one_member_equals_segment_function_exactly(members, shape):
    x = tf.constant(crops(1, shape))
    ref = segment_function(members[0])(x)
    out = ensemble_function(members[0])(x)
    assert set(out) == {"probability", "mask", "uncertainty"}
    np.testing.assert_array_equal(out["probability"].numpy(), ref["probability"].numpy())
    np.testing.assert_array_equal(out["mask"].numpy(), ref["mask"].numpy())
    assert out["mask"].dtype == tf.uint8 and out["uncertainty"].dtype == tf.float32
    np.testing.assert_array_equal(out["uncertainty"].numpy(), 0.0)


def test_two_members_are_the_numpy_mean_and_std(members):
    for shape in ((40, 40), (57, 33)):
        x = crops(2, shape)
        p = np.stack([predict_probability(m, x).astype(np.float64) for m in members])
        out = ensemble_function(members)(tf.constant(x))
        np.testing.assert_allclose(out["probability"].numpy(), p.mean(0), atol=1e-6)
        np.testing.assert_array_equal(out["mask"].numpy(), (out["probability"].numpy() >= 0.5).astype(np.uint8))
        if shape == (40, 40):  # at the model size nothing is resized: the population std itself
            np.testing.assert_allclose(out["uncertainty"].numpy(), p.std(0), atol=1e-6)
        assert out["uncertainty"].numpy().max() > 1e-3  # the two members differ


@pytest.mark.parametrize("tta", ["flips", "dihedral"])
def test_tta_equals_numpy_reference(members, tta):
    """Reference: resize once to S, transform in NumPy, run each member per transform, undo in NumPy."""
    from kerasseg.data import transforms

    for shape in ((40, 40), (51, 44)):
        x = crops(3, shape)
        small = transforms.resize(x, 40).numpy()
        maps = []
        for m in members:
            for t in tta_transforms(tta):
                prob = predict_probability(m, np.ascontiguousarray(np_transform(small, t)))
                maps.append(np_undo(prob.astype(np.float64), t))
        maps = np.stack(maps)
        mean = maps.mean(0)
        std = maps.std(0)
        out = ensemble_function(members, tta=tta)(tf.constant(x))
        if shape == (40, 40):
            np.testing.assert_allclose(out["probability"].numpy(), mean, atol=1e-5)
            np.testing.assert_allclose(out["uncertainty"].numpy(), std, atol=1e-5)
        else:
            back = lambda a: np.asarray(transforms.resize(a.astype(np.float32), shape, method="bilinear"))  # noqa: E731
            np.testing.assert_allclose(out["probability"].numpy(), np.clip(back(mean), 0, 1), atol=1e-5)
            np.testing.assert_allclose(out["uncertainty"].numpy(), np.clip(back(std), 0, 0.5), atol=1e-5)
        assert out["probability"].shape == shape[:0] + (3,) + shape


def equivariant_segmenter():
    """A pointwise network (1x1 convolutions), no normalisation: exactly dihedral-equivariant."""
    from kerasseg.layers import ImagePreprocessor
    from kerasseg.models import build_segmenter

    keras.utils.set_random_seed(0)
    inp = keras.Input((40, 40, 1), name="image")
    h = keras.layers.Conv2D(3, 1, activation="tanh")(keras.layers.Rescaling(0.01, offset=-1.0)(inp))
    out = keras.layers.Softmax(name="net")(keras.layers.Conv2D(2, 1)(h))
    net = keras.Model(inp, {"net": out}, name="pointwise")
    pre = ImagePreprocessor(40, enhancement="none", normalization="none", name="preprocessor")
    return build_segmenter(net, pre)


def test_equivariant_model_has_zero_tta_uncertainty(members):
    x = tf.constant(crops(4, (40, 40)))
    out = ensemble_function(equivariant_segmenter(), tta="dihedral")(x)
    assert float(np.abs(out["uncertainty"].numpy()).max()) < 1e-6
    p = out["probability"].numpy()
    assert p.std() > 1e-3  # not a constant map
    # a model with 3x3 kernels is not equivariant: the transforms disagree somewhere
    assert float(ensemble_function(members[0], tta="dihedral")(x)["uncertainty"].numpy().max()) > 1e-3


def test_postprocessing_only_when_asked(members):
    x = tf.constant(crops(5, (48, 52), n=4))
    plain = ensemble_function(members, tta="flips")(x)
    mask = (plain["probability"].numpy() >= 0.5).astype(np.uint8)
    np.testing.assert_array_equal(plain["mask"].numpy(), mask)
    assert any(ndi.label(m, np.ones((3, 3)))[1] > 1 for m in mask)  # the case matters
    lc = ensemble_function(members, tta="flips", postprocessing={"largest_component": True})(x)
    both = ensemble_function(members, tta="flips",
                             postprocessing={"largest_component": True, "fill_holes": True})(x)
    for i, m in enumerate(mask):
        lab, n = ndi.label(m, np.ones((3, 3)))
        sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
        ref = (lab == np.argmax(sizes) + 1).astype(np.uint8) if n else np.zeros_like(m)
        np.testing.assert_array_equal(lc["mask"].numpy()[i], ref)
        np.testing.assert_array_equal(both["mask"].numpy()[i], ndi.binary_fill_holes(ref).astype(np.uint8))
    np.testing.assert_array_equal(lc["probability"].numpy(), plain["probability"].numpy())
    with pytest.raises(KerassegError, match="unknown post-processing"):
        ensemble_function(members, postprocessing={"largest": True})


def test_bad_members_are_refused(members):
    with pytest.raises(KerassegError, match="same model size|share one model size"):
        ensemble_function([members[0], tiny_segmenter(32, crf=False)])
    with pytest.raises(KerassegError, match="at least one"):
        ensemble_function([])
    with pytest.raises(KerassegError, match="Keras models"):
        ensemble_function(["runs/x"])


def test_one_model_call_per_member(monkeypatch):
    """TTA stacks the transforms into one batch: each member's graph is traced once, not T times."""
    calls = []
    seg = tiny_segmenter(40, crf=False, seed=2)
    real_call = type(seg).__call__

    def counting(self, *args, **kwargs):
        if self is seg:
            calls.append(tuple(args[0].shape))
        return real_call(self, *args, **kwargs)

    monkeypatch.setattr(type(seg), "__call__", counting)
    fn = ensemble_function(seg, tta="dihedral")
    fn.get_concrete_function()
    assert len(calls) == 1 and calls[0][1:] == (40, 40, 1)


def test_predict_ensemble_batches(members):
    x = crops(6, (40, 40), n=5)
    fn = ensemble_function(members, tta="flips")
    whole = {k: v.numpy() for k, v in fn(tf.constant(x)).items()}
    out = predict_ensemble(fn, x[..., None], batch_size=2, progress=True)
    assert set(out) == {"probability", "mask", "uncertainty"}
    assert out["probability"].dtype == np.float32 and out["mask"].dtype == np.uint8
    for k in out:
        np.testing.assert_allclose(out[k], whole[k], atol=1e-6)
    with pytest.raises(KerassegError, match="must be"):
        predict_ensemble(fn, x[0])
    empty = predict_ensemble(fn, np.zeros((0, 40, 40), np.float32))
    assert empty["mask"].shape == (0, 40, 40)


def test_docs_example_runs(capsys):
    """The Python example of docs/serving.md (the block starting '# example: ensemble') runs as is."""
    namespace = run_example("docs/serving.md", "# example: ensemble")
    out = namespace["out"]
    assert out["probability"].shape == (10, 40, 40) and out["mask"].dtype == np.uint8
    assert "(10, 40, 40) uint8" in capsys.readouterr().out


def test_own_inference_graphs_do_not_warn_about_retracing(caplog):
    """Scoring several models in a row builds one tf.function each (traced once); TensorFlow's
    'triggered tf.function retracing' warning about them is dropped, others' warnings are kept."""
    import logging

    import keras
    import tensorflow as tf

    from kerasseg.models.segmenter import segment_function

    def net():
        inp = keras.Input((8, 8, 1))
        return keras.Model(inp, {"net": keras.layers.Conv2D(2, 1, activation="softmax")(inp)})

    x = tf.zeros((1, 8, 8))
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        for _ in range(8):
            segment_function(net())(x)
        own = [r.getMessage() for r in caplog.records if "retracing" in r.getMessage()]
        assert own == []
        # Keras's step functions, one per model when a process trains several models
        data = (np.zeros((4, 8, 8, 1), np.float32), np.zeros((4, 8, 8, 2), np.float32))
        for _ in range(7):
            m = net()
            m.compile(optimizer="sgd", loss={"net": "mse"})
            m.fit(data[0], {"net": data[1]}, epochs=1, verbose=0)
        own = [r.getMessage() for r in caplog.records if "retracing" in r.getMessage()]
        assert own == []

        def other():
            @tf.function
            def f(t):
                return t + 1
            return f

        for i in range(8):
            other()(tf.constant(float(i)))
    assert any("retracing" in r.getMessage() for r in caplog.records), "the filter must not hide others"
