"""Preprocessing (kerasseg.data.preprocess) and the tf.data pipeline (kerasseg.data.pipeline)."""

import json

import numpy as np
import pytest

from kerasseg.data.dataset import ROIDataset
from kerasseg.data.pipeline import Normalizer, fit_normalizer, flip_augment, make_tf_dataset
from kerasseg.errors import KerassegError


def _toy(rng, n_train=6, n_test=4, size=12):
    n = n_train + n_test
    images = rng.gamma(2.0, 300.0, size=(n, size, size)).astype(np.float32) + 1000.0
    masks = (rng.random((n, size, size)) < 0.4).astype(np.uint8)
    split = np.array(["train"] * n_train + ["test"] * n_test)
    ids = np.array([f"img{i}-mass1" for i in range(n)])
    return ROIDataset(images=images, masks=masks, split=split, ids=ids)


# --------------------------------------------------------------------------- normaliser
def test_position_stats_come_from_train_split_only(rng):
    ds = _toy(rng)
    norm = fit_normalizer(ds, "position")
    train = ds.images[ds.split == "train"].astype(np.float64)
    np.testing.assert_allclose(norm.mean, train.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(norm.std, train.std(axis=0), rtol=1e-5)
    # changing the test images does not change the fitted statistics
    ds2 = ds.select(np.arange(len(ds)))
    ds2.images[ds2.split == "test"] *= 7.0
    norm2 = fit_normalizer(ds2, "position")
    np.testing.assert_array_equal(norm.mean, norm2.mean)
    np.testing.assert_array_equal(norm.std, norm2.std)
    # on the train set every pixel position ends up with mean 0 and std 1
    z = norm(ds.images[ds.split == "train"]).astype(np.float64)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.std(axis=0), 1.0, atol=1e-4)


def test_image_mode_zero_mean_unit_std(rng):
    x = rng.normal(500.0, 80.0, size=(5, 10, 10)) * rng.uniform(0.5, 2.0, size=(5, 1, 1))
    z = Normalizer("image")(x).astype(np.float64)
    assert z.dtype == np.float64 and Normalizer("image")(x).dtype == np.float32
    np.testing.assert_allclose(z.mean(axis=(1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(1, 2)), 1.0, atol=1e-5)
    # a constant image does not divide by zero
    assert np.all(Normalizer("image")(np.full((1, 4, 4), 3.0)) == 0.0)
    # 'none' is the identity; a single (H, W) image keeps its rank
    np.testing.assert_allclose(Normalizer("none")(x), x.astype(np.float32))
    assert Normalizer("image")(x[0]).shape == (10, 10)


def test_histeq_and_clahe(rng):
    from skimage import exposure

    x = rng.gamma(2.0, 200.0, size=(3, 24, 24))
    h = Normalizer("none", "histeq")(x).astype(np.float64)
    assert h.min() >= 0.0 and h.max() <= 1.0
    for img, out in zip(x, h):
        order = np.argsort(img, axis=None)
        assert np.all(np.diff(out.ravel()[order]) >= -1e-7)     # monotone intensity mapping
        # equalised: the empirical CDF of the output is close to uniform
        assert np.abs(np.sort(out.ravel()) - np.linspace(0, 1, out.size)).max() < 0.05
    # skimage's equaliser on the [0, 1]-scaled image is the reference
    x01 = (x[0] - x[0].min()) / (x[0].max() - x[0].min())
    np.testing.assert_allclose(h[0], exposure.equalize_hist(x01), atol=1e-6)
    c = Normalizer("none", "clahe", clahe_clip_limit=0.02)(x).astype(np.float64)
    np.testing.assert_allclose(c[1], exposure.equalize_adapthist(
        (x[1] - x[1].min()) / (x[1].max() - x[1].min()), clip_limit=0.02), atol=1e-6)
    assert not np.allclose(c, h)
    # enhancement then per-image normalisation
    z = Normalizer("image", "clahe")(x).astype(np.float64)
    np.testing.assert_allclose(z.std(axis=(1, 2)), 1.0, atol=1e-5)


@pytest.mark.parametrize("mode,enh", [("position", "none"), ("position", "clahe"),
                                      ("image", "histeq"), ("none", "none")])
def test_config_roundtrip_json(rng, mode, enh):
    ds = _toy(rng)
    norm = fit_normalizer(ds, mode, enh)
    cfg = json.loads(json.dumps(norm.get_config()))
    again = Normalizer.from_config(cfg)
    np.testing.assert_array_equal(again(ds.images), norm(ds.images))
    assert again.get_config() == cfg


@pytest.mark.parametrize("mode", ["image", "position", "none"])
def test_tf_normalize_matches_numpy(rng, mode):
    ds = _toy(rng)
    norm = fit_normalizer(ds, mode)
    ref = norm(ds.images)
    got = norm.tf_normalize(ds.images).numpy()
    assert got.dtype == np.float32
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(got, ref, atol=1e-5 * scale)


@pytest.mark.parametrize("enh", ["clahe", "histeq"])
def test_tf_normalize_refuses_enhancement(enh):
    with pytest.raises(KerassegError, match="no TF-graph form"):
        Normalizer("image", enh).tf_normalize(np.zeros((1, 4, 4), np.float32))


def test_normalizer_errors(rng):
    with pytest.raises(KerassegError, match="mode"):
        Normalizer("zscore")
    with pytest.raises(KerassegError, match="enhancement"):
        Normalizer("image", "ballbruce")
    with pytest.raises(KerassegError, match="not fitted"):
        Normalizer("position")(np.zeros((1, 4, 4)))
    norm = Normalizer("position").fit(rng.random((3, 4, 4)))
    with pytest.raises(KerassegError, match="size"):
        norm(rng.random((2, 5, 5)))
    with pytest.raises(KerassegError, match="empty"):
        Normalizer("position").fit(np.zeros((0, 4, 4)))
    with pytest.raises(KerassegError, match=r"\(N, H, W\)"):
        Normalizer("image")(np.zeros(5))
    with pytest.raises(KerassegError, match="unknown"):
        Normalizer.from_config({"mode": "image", "colour": 1})
    with pytest.raises(KerassegError, match="mean"):
        Normalizer.from_config({"mode": "position"})
    with pytest.raises(KerassegError):
        Normalizer.from_config({"mode": "position", "mean": [[0.0]], "std": [[0.0]]})


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


def test_shuffle_is_deterministic_by_seed_and_reshuffled_per_epoch(rng):
    x = rng.random((8, 4, 4)).astype(np.float32)
    m = (rng.random((8, 4, 4)) > 0.5).astype(np.uint8)
    a = _epochs(make_tf_dataset(x, m, 4, training=True, seed=11), 2)
    b = _epochs(make_tf_dataset(x, m, 4, training=True, seed=11), 2)
    c = _epochs(make_tf_dataset(x, m, 4, training=True, seed=12), 1)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a[0][0], a[1][0])        # a new order each epoch
    assert not np.array_equal(a[0][0], c[0][0])        # another seed, another order


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
