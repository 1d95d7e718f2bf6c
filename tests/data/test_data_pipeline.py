"""Preprocessing layers (kerasseg.layers.preprocessing: the raw ROI -> network input steps that
travel inside every saved model) against float64 NumPy / scikit-image references, and the
tf.data pipeline (kerasseg.data.pipeline)."""

import json

import numpy as np
import pytest

from kerasseg.data.dataset import ROIDataset
from kerasseg.data.pipeline import flip_augment, make_tf_dataset
from kerasseg.errors import KerassegError
from kerasseg.layers import Enhance, ImagePreprocessor, Normalize, Resize


def _toy(rng, n_train=6, n_test=4, size=12):
    n = n_train + n_test
    images = rng.gamma(2.0, 300.0, size=(n, size, size)).astype(np.float32) + 1000.0
    masks = (rng.random((n, size, size)) < 0.4).astype(np.uint8)
    split = np.array(["train"] * n_train + ["test"] * n_test)
    ids = np.array([f"img{i}-mass1" for i in range(n)])
    return ROIDataset(images=images, masks=masks, split=split, ids=ids)


# --------------------------------------------------------------------------- references
def np_image_norm(x):
    """Per image: (x - mean) / max(population std, 1e-6 * max |x|), float64."""
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=(1, 2), keepdims=True)
    floor = 1e-6 * np.abs(x).max(axis=(1, 2), keepdims=True)
    return (x - mean) / np.maximum(x.std(axis=(1, 2), keepdims=True), np.maximum(floor, 1e-300))


def np_position_stats(train):
    t = np.asarray(train, np.float64)
    return t.mean(axis=0), np.maximum(t.std(axis=0), 1e-6)


def np_scale01(x):
    """Per-image linear scaling to [0, 1] in float32 arithmetic (the precision of the model's
    pixels), the array scikit-image's equalisers are given."""
    x = np.asarray(x, np.float32)
    lo = x.min(axis=(1, 2), keepdims=True)
    hi = x.max(axis=(1, 2), keepdims=True)
    return (x - lo) / (hi - lo)


def _fit(ds, mode, enh="none", **kw):
    pre = ImagePreprocessor(ds.size, enhancement=enh, normalization=mode, **kw)
    pre.adapt(ds.subset("train").images)
    return pre


# --------------------------------------------------------------------------- preprocessing layers
def test_position_stats_come_from_the_adapted_images_only(rng):
    ds = _toy(rng)
    pre = _fit(ds, "position")
    train = ds.subset("train").images
    mean, std = np_position_stats(train)
    assert pre.mode == "position" and pre.enhancement == "none"
    np.testing.assert_allclose(np.asarray(pre.normalize.mean), mean, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(pre.normalize.std), std, rtol=1e-5)
    # changing the test images does not change the fitted statistics
    ds2 = ds.select(np.arange(len(ds)))
    ds2.images[ds2.split == "test"] *= 7.0
    pre2 = _fit(ds2, "position")
    np.testing.assert_array_equal(np.asarray(pre.normalize.mean), np.asarray(pre2.normalize.mean))
    np.testing.assert_array_equal(np.asarray(pre.normalize.std), np.asarray(pre2.normalize.std))
    # fitted on all images the maps differ (the statistics really are those of what was adapted)
    pre_all = ImagePreprocessor(ds.size, normalization="position")
    pre_all.adapt(ds.images)
    assert np.abs(np.asarray(pre_all.normalize.mean) - mean).max() > 1.0
    # on the train set every pixel position ends up with mean 0 and std 1
    z = pre.transform(train)
    assert z.dtype == np.float32 and z.shape == (len(train), ds.size, ds.size, 1)
    z = z[..., 0].astype(np.float64)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.std(axis=0), 1.0, atol=1e-4)
    # and any image is normalised with the train maps (float64 reference)
    test = ds.subset("test").images
    np.testing.assert_allclose(pre.transform(test)[..., 0], (test - mean) / std, atol=1e-5)
    # a position with a constant training value: std floored at 1e-6, no division by zero
    const = train.copy()
    const[:, 3, 4] = 1500.0
    pc = ImagePreprocessor(ds.size, normalization="position")
    pc.adapt(const)
    assert float(np.asarray(pc.normalize.std)[3, 4]) == pytest.approx(1e-6)
    assert np.isfinite(pc.transform(test)).all()


def test_image_mode_zero_mean_unit_std(rng):
    x = (rng.normal(500.0, 80.0, size=(5, 10, 10)) * rng.uniform(0.5, 2.0, size=(5, 1, 1))).astype(np.float32)
    pre = ImagePreprocessor(10, normalization="image")
    pre.adapt(x)  # nothing to fit; allowed
    z = pre.transform(x)
    assert z.dtype == np.float32 and z.shape == (5, 10, 10, 1)
    z = z[..., 0].astype(np.float64)
    np.testing.assert_allclose(z, np_image_norm(x), atol=1e-5)
    np.testing.assert_allclose(z.mean(axis=(1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(1, 2)), 1.0, atol=1e-5)
    # the Normalize layer alone on (N, H, W, 1)
    np.testing.assert_allclose(np.asarray(Normalize("image")(x[..., None]))[..., 0], np_image_norm(x), atol=1e-5)
    # a constant image does not divide by zero
    assert np.all(pre.transform(np.full((1, 10, 10), 3.0)) == 0.0)
    # 'none' is the identity (at the model size the resize is the identity too)
    ident = ImagePreprocessor(10, enhancement="none", normalization="none")
    np.testing.assert_array_equal(ident.transform(x)[..., 0], x)
    np.testing.assert_array_equal(ident.transform(x[..., None])[..., 0], x)   # (N, H, W, 1) accepted
    # a single (H, W) image is refused: a batch is (N, H, W)
    with pytest.raises(KerassegError, match=r"\(N, H, W\)"):
        pre.transform(x[0])


def test_histeq_and_clahe(rng):
    from skimage import exposure

    x = rng.gamma(2.0, 200.0, size=(3, 24, 24)).astype(np.float32)
    h = ImagePreprocessor(24, enhancement="histeq", normalization="none").transform(x)[..., 0].astype(np.float64)
    assert h.min() >= 0.0 and h.max() <= 1.0
    for img, out in zip(x, h):
        order = np.argsort(img, axis=None)
        assert np.all(np.diff(out.ravel()[order]) >= -1e-7)     # monotone intensity mapping
        # equalised: the empirical CDF of the output is close to uniform
        assert np.abs(np.sort(out.ravel()) - np.linspace(0, 1, out.size)).max() < 0.05
    # skimage's equaliser on the [0, 1]-scaled image is the reference
    x01 = np_scale01(x)
    np.testing.assert_allclose(h, np.stack([exposure.equalize_hist(i) for i in x01]), atol=1e-6)
    pre_c = ImagePreprocessor(24, enhancement="clahe", normalization="none", clahe_clip_limit=0.02)
    c = pre_c.transform(x)[..., 0].astype(np.float64)
    ref_c = np.stack([exposure.equalize_adapthist(i, clip_limit=0.02) for i in x01])
    np.testing.assert_allclose(c, ref_c, atol=1e-6)
    np.testing.assert_allclose(pre_c.enhanced_numpy(x)[..., 0], ref_c, atol=1e-6)  # enhancement only
    assert not np.allclose(c, h)
    # the Enhance layer alone, with an explicit kernel size
    e = np.asarray(Enhance("clahe", clip_limit=0.03, kernel_size=8)(x[..., None]))[..., 0]
    np.testing.assert_allclose(e, np.stack([exposure.equalize_adapthist(i, kernel_size=8, clip_limit=0.03)
                                            for i in x01]), atol=1e-6)
    # enhancement then per-image normalisation
    z = ImagePreprocessor(24, enhancement="clahe", normalization="image").transform(x)[..., 0].astype(np.float64)
    ref_z = np_image_norm(np.stack([exposure.equalize_adapthist(i) for i in x01]))
    np.testing.assert_allclose(z, ref_z, atol=1e-4)
    np.testing.assert_allclose(z.std(axis=(1, 2)), 1.0, atol=1e-5)
    # enhancement then position normalisation: the maps are those of the ENHANCED train ROIs
    pre_p = ImagePreprocessor(24, enhancement="histeq", normalization="position")
    pre_p.adapt(x)
    mean, std = np_position_stats(np.stack([exposure.equalize_hist(i) for i in x01]))
    np.testing.assert_allclose(np.asarray(pre_p.normalize.mean), mean, atol=1e-6)
    np.testing.assert_allclose(np.asarray(pre_p.normalize.std), std, rtol=1e-5, atol=1e-6)
    # a constant ROI: as scikit-image (0.5 for histeq, 1.0 for clahe), not zeros
    flat = np.full((1, 24, 24), 7.0, np.float32)
    zeros01 = np.zeros((24, 24), np.float32)  # what scaling a constant ROI to [0, 1] gives
    np.testing.assert_allclose(
        ImagePreprocessor(24, enhancement="histeq", normalization="none").transform(flat)[0, ..., 0],
        exposure.equalize_hist(zeros01), atol=1e-6)
    np.testing.assert_allclose(
        ImagePreprocessor(24, enhancement="clahe", normalization="none").transform(flat)[0, ..., 0],
        exposure.equalize_adapthist(zeros01), atol=1e-6)


@pytest.mark.parametrize("mode,enh", [("position", "none"), ("position", "clahe"),
                                      ("image", "histeq"), ("none", "none")])
def test_config_roundtrip_json_and_keras_file(rng, tmp_path, mode, enh):
    import keras

    ds = _toy(rng)
    pre = _fit(ds, mode, enh)
    cfg = json.loads(json.dumps(pre.get_config()))
    assert (cfg["size"], cfg["normalization"], cfg["enhancement"]) == (ds.size, mode, enh)
    again = ImagePreprocessor.from_config(cfg)
    assert again.get_config() == cfg
    if mode != "position":  # nothing fitted: the config is the whole preprocessing
        np.testing.assert_array_equal(again.transform(ds.images), pre.transform(ds.images))
    # with the fitted maps (weights), a .keras model file brings back the same preprocessing
    inp = keras.Input((None, None, 1), name="image")
    model = keras.Model(inp, pre(inp))
    model.save(tmp_path / "pre.keras")
    import kerasseg.layers  # noqa: F401  (registers the layers)

    loaded = keras.saving.load_model(tmp_path / "pre.keras", compile=False)
    got = np.asarray(loaded(ds.images[..., None]))
    np.testing.assert_array_equal(got, pre.transform(ds.images))
    ref = {"position": lambda x: (x - np_position_stats(ds.subset("train").images)[0])
           / np_position_stats(ds.subset("train").images)[1],
           "image": np_image_norm, "none": lambda x: np.asarray(x, np.float64)}[mode]
    if enh == "none":
        np.testing.assert_allclose(got[..., 0], ref(ds.images), atol=1e-4)


@pytest.mark.parametrize("mode", ["image", "position", "none"])
@pytest.mark.parametrize("enh", ["none", "clahe", "histeq"])
def test_graph_mode_matches_numpy(rng, mode, enh):
    """Inside a tf.function with unknown batch and crop size (the serving graph), the layer gives
    the float64 reference: enhancement (scikit-image) then normalisation."""
    import tensorflow as tf
    from skimage import exposure

    ds = _toy(rng)
    pre = _fit(ds, mode, enh)
    fn = tf.function(lambda t: pre(t), input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32)])
    got = fn(tf.constant(ds.images[..., None])).numpy()
    assert got.dtype == np.float32 and got.shape == ds.images.shape + (1,)

    def enhance(x):
        x01 = np_scale01(x)
        if enh == "clahe":
            return np.stack([exposure.equalize_adapthist(i) for i in x01]).astype(np.float64)
        if enh == "histeq":
            return np.stack([exposure.equalize_hist(i) for i in x01]).astype(np.float64)
        return np.asarray(x, np.float64)

    e = enhance(ds.images)
    if mode == "position":
        mean, std = np_position_stats(enhance(ds.subset("train").images))
        ref = (e - mean) / std
    elif mode == "image":
        ref = np_image_norm(e)
    else:
        ref = e
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(got[..., 0], ref, atol=1e-4 * scale)
    np.testing.assert_allclose(got, pre.transform(ds.images), atol=1e-6 * scale)  # eager == graph


def test_any_crop_size_is_resized_to_the_model_size(rng):
    import tensorflow as tf

    pre = ImagePreprocessor(12, normalization="image")
    crops = rng.normal(1000, 100, size=(2, 31, 19)).astype(np.float32)
    out = pre.transform(crops)
    assert out.shape == (2, 12, 12, 1)
    # = the normalisation of the anti-aliased bicubic resize (TF's op, the one kerasseg resize)
    resized = tf.image.resize(crops[..., None], (12, 12), method="bicubic", antialias=True).numpy()[..., 0]
    np.testing.assert_allclose(out[..., 0], np_image_norm(resized), atol=1e-4)
    np.testing.assert_allclose(np.asarray(Resize(12)(crops[..., None]))[..., 0], resized, atol=1e-3)
    # at the model size the resize is the identity
    same = rng.normal(size=(2, 12, 12, 1)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(Resize(12)(same)), same)


def test_preprocessing_errors(rng):
    with pytest.raises(KerassegError, match="normalisation mode"):
        ImagePreprocessor(12, normalization="zscore")
    with pytest.raises(KerassegError, match="enhancement"):
        ImagePreprocessor(12, enhancement="ballbruce")
    with pytest.raises(KerassegError, match="clip_limit"):
        Enhance("clahe", clip_limit=0.0)
    with pytest.raises(KerassegError, match="kernel_size"):
        Enhance("clahe", kernel_size=1)
    with pytest.raises(KerassegError, match="size must be an integer >= 8"):
        Resize(4)
    with pytest.raises(KerassegError, match="fixed ROI size"):
        Normalize("position").build((None, None, None, 1))
    norm = Normalize("position")
    assert norm.adapted is False
    norm.adapt(rng.random((3, 8, 8)))
    assert norm.adapted is True and tuple(norm.mean.shape) == (8, 8)
    with pytest.raises(KerassegError, match="empty"):
        ImagePreprocessor(8, normalization="position").adapt(np.zeros((0, 8, 8)))
    with pytest.raises(KerassegError, match=r"\(N, H, W\)"):
        ImagePreprocessor(8).transform(np.zeros(5))
    with pytest.raises(KerassegError, match=r"\(N, H, W\)"):
        ImagePreprocessor(8).transform(np.zeros((2, 8, 8, 3)))
    bad = np.ones((1, 8, 8))
    bad[0, 2, 3] = np.nan
    with pytest.raises(KerassegError, match="NaN"):
        ImagePreprocessor(8).transform(bad)
    with pytest.raises(KerassegError, match="numeric"):
        ImagePreprocessor(8).transform([["a"]])
    cfg = ImagePreprocessor(8).get_config()
    with pytest.raises(TypeError, match="unknown normalisation mode 'zscore'"):  # Keras wraps the error
        ImagePreprocessor.from_config({**cfg, "normalization": "zscore"})


# --------------------------------------------------------------------------- flips
def test_flip_augment_numpy(rng):
    x = rng.random((3, 5, 6))
    m = (rng.random((3, 5, 6)) > 0.5).astype(np.uint8)
    fx, fm = flip_augment(x, m)
    assert fx.shape == (12, 5, 6) and fm.shape == (12, 5, 6)
    for k, ref in enumerate([x, np.flip(x, 2), np.flip(x, 1), np.flip(x, (1, 2))]):
        np.testing.assert_array_equal(fx[3 * k:3 * k + 3], ref.astype(np.float32))
    np.testing.assert_array_equal(fm[6:9], np.flip(m, 1))


def _epochs(ds, n_epochs):
    out = []
    for _ in range(n_epochs):
        xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
        out.append((np.concatenate(xs), np.concatenate(ys)))
    return out


def test_training_dataset_has_every_roi_in_all_four_orientations(rng):
    n, h, w = 3, 6, 7
    x = rng.random((n, h, w)).astype(np.float32)
    m = (rng.random((n, h, w)) > 0.5).astype(np.uint8)
    ds = make_tf_dataset(x, m, 5, training=True, seed=3)
    for xs, ys in _epochs(ds, 2):
        assert xs.shape == (4 * n, h, w, 1) and xs.dtype == np.float32
        assert ys.shape == (4 * n, h, w, 2) and ys.dtype == np.float32
        np.testing.assert_array_equal(ys.sum(-1), 1.0)            # one-hot
        seen = []
        for xi, yi in zip(xs[..., 0], ys):
            hits = [(i, k) for i in range(n)
                    for k, axes in enumerate([(), (1,), (0,), (0, 1)])
                    if np.array_equal(xi, np.flip(x[i], axes) if axes else x[i])]
            assert len(hits) == 1
            i, k = hits[0]
            axes = [(), (1,), (0,), (0, 1)][k]
            ref = np.flip(m[i], axes) if axes else m[i]
            np.testing.assert_array_equal(yi[..., 1], ref)      # mask flipped the same way
            seen.append(hits[0])
        assert sorted(seen) == [(i, k) for i in range(n) for k in range(4)]


def test_shuffle_is_deterministic_by_seed_and_epoch(rng):
    x = rng.random((8, 4, 4)).astype(np.float32)
    m = (rng.random((8, 4, 4)) > 0.5).astype(np.uint8)
    a = [_epochs(make_tf_dataset(x, m, 4, training=True, seed=11, epoch=e), 1)[0] for e in range(3)]
    b = _epochs(make_tf_dataset(x, m, 4, training=True, seed=11, epoch=1), 2)
    c = _epochs(make_tf_dataset(x, m, 4, training=True, seed=12), 1)
    for xb, yb in b:                                   # iterating again: the same epoch
        np.testing.assert_array_equal(xb, a[1][0])
        np.testing.assert_array_equal(yb, a[1][1])
    assert not np.array_equal(a[0][0], a[1][0])        # a new order each epoch
    assert not np.array_equal(a[0][0], c[0][0])        # another seed, another order


def test_endless_dataset_gives_each_epoch_the_order_of_its_number(rng):
    """A run resumed at epoch 2 (repeat from epoch=2) sees what an uninterrupted one sees there."""
    from kerasseg.data.pipeline import epoch_steps

    x = rng.random((5, 4, 4)).astype(np.float32)
    m = (rng.random((5, 4, 4)) > 0.5).astype(np.uint8)
    steps = epoch_steps(5, 3)
    assert steps == 7                                  # 20 examples in batches of 3
    straight = iter(make_tf_dataset(x, m, 3, training=True, seed=4, repeat=True))
    resumed = iter(make_tf_dataset(x, m, 3, training=True, seed=4, epoch=2, repeat=True))
    batches = [[next(straight) for _ in range(steps)] for _ in range(4)]
    for e in (2, 3):
        for (xa, ya), (xb, yb) in zip(batches[e], [next(resumed) for _ in range(steps)]):
            np.testing.assert_array_equal(xa.numpy(), xb.numpy())
            np.testing.assert_array_equal(ya.numpy(), yb.numpy())
        # every epoch of the endless dataset holds all 20 examples exactly once
        xs = np.concatenate([b[0].numpy() for b in batches[e]])
        ref = np.concatenate([x, x[:, :, ::-1], x[:, ::-1], x[:, ::-1, ::-1]])
        assert sorted(map(bytes, xs[..., 0])) == sorted(map(bytes, ref))
    assert epoch_steps(5, 3, flips=False, drop_remainder=True) == 1


def test_eval_dataset_keeps_order_and_no_flips(rng):
    x = rng.random((5, 4, 4)).astype(np.float32)
    m = (rng.random((5, 4, 4)) > 0.5).astype(np.uint8)
    (xs, ys), = _epochs(make_tf_dataset(x, m, 2, training=False), 1)
    np.testing.assert_array_equal(xs[..., 0], x)
    np.testing.assert_array_equal(ys[..., 1], m)
    np.testing.assert_array_equal(ys[..., 0], 1 - m)
    # no flips in training either when flips=False; drop_remainder gives full batches only
    ds = make_tf_dataset(x, m, 2, training=True, flips=False, drop_remainder=True)
    sizes = [int(b[0].shape[0]) for b in ds]
    assert sizes == [2, 2]


def test_pipeline_errors(rng):
    x = rng.random((2, 4, 4))
    with pytest.raises(KerassegError, match="batch_size"):
        make_tf_dataset(x, np.zeros_like(x, np.uint8), 0, training=True)
    with pytest.raises(KerassegError, match="masks shape"):
        make_tf_dataset(x, np.zeros((2, 4, 5), np.uint8), 2, training=True)
    with pytest.raises(KerassegError, match="epoch"):
        make_tf_dataset(x, np.zeros_like(x, np.uint8), 2, training=True, epoch=-1)
    with pytest.raises(KerassegError, match="only 0 and 1"):
        make_tf_dataset(x, np.full((2, 4, 4), 2, np.uint8), 2, training=False)
    with pytest.raises(KerassegError, match="N = 0"):
        flip_augment(np.zeros((0, 4, 4)), np.zeros((0, 4, 4)))


def test_training_dataset_has_known_length():
    import tensorflow as tf

    from kerasseg.data.pipeline import make_tf_dataset

    imgs = np.zeros((5, 8, 8), np.float32)
    msks = np.zeros((5, 8, 8), np.uint8)
    ds = make_tf_dataset(imgs, msks, 3, training=True, seed=0)
    # 5 ROIs x 4 flips = 20 examples -> 7 batches, known before iterating
    assert int(ds.cardinality()) == 7
    assert sum(1 for _ in ds) == 7
    assert int(make_tf_dataset(imgs, msks, 3, training=False).cardinality()) == 2
