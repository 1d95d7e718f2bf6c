"""Preprocessing layers (kerasseg.layers.preprocessing) against float64 NumPy / scikit-image references."""

import doctest

import numpy as np
import pytest

from kerasseg.errors import KerassegError
from kerasseg.layers import preprocessing as P


def _rois(rng, n=6, size=40):
    """Mammogram-like ROIs: a smooth background, a bright blob and noise, 12-bit range."""
    yy, xx = np.mgrid[:size, :size] / size
    out = []
    for _ in range(n):
        cx, cy, r = rng.uniform(0.3, 0.7, 2).tolist() + [rng.uniform(0.15, 0.3)]
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r ** 2))
        img = 800 + 600 * np.sin(3 * xx + rng.uniform(0, 6)) * np.cos(2 * yy) + 1500 * blob
        out.append(img + rng.normal(0, 60, img.shape))
    return np.asarray(out, np.float32)


def test_docstring_examples_run():
    import kerasseg.layers.preprocessing as mod

    res = doctest.testmod(mod, extraglobs={"np": np}, optionflags=doctest.ELLIPSIS)
    assert res.attempted >= 5 and res.failed == 0


def test_resize_is_identity_at_model_size_and_static_shape(rng):
    import keras

    x = _rois(rng)[..., None]
    np.testing.assert_array_equal(np.asarray(P.Resize(40)(x)), x)
    inp = keras.Input((None, None, 1))
    assert tuple(P.Resize(40)(inp).shape) == (None, 40, 40, 1)
    with pytest.raises(KerassegError, match="size"):
        P.Resize(4)


@pytest.mark.parametrize("method", ["clahe", "histeq"])
def test_enhance_matches_skimage(method, rng):
    from skimage import exposure

    x = _rois(rng)
    out = np.asarray(P.Enhance(method)(x[..., None]))[..., 0]
    for img, got in zip(x, out):
        x01 = (img.astype(np.float32) - img.min()) / (img.max() - img.min())
        ref = (exposure.equalize_adapthist(x01, clip_limit=0.01) if method == "clahe"
               else exposure.equalize_hist(x01))
        assert np.abs(got - ref).max() <= 1e-3
        assert np.abs(got - ref).mean() <= 1e-4
    np.testing.assert_array_equal(np.asarray(P.Enhance("none")(x[..., None]))[..., 0], x)


def test_normalize_modes_against_float64(rng):
    x = _rois(rng)
    ref = (x - x.mean((1, 2), keepdims=True)) / x.std((1, 2), keepdims=True)
    np.testing.assert_allclose(np.asarray(P.Normalize("image")(x[..., None]))[..., 0], ref, atol=1e-4)
    pos = P.Normalize("position")
    pos.adapt(x[:4, ..., None])
    mean, std = x[:4].astype(np.float64).mean(0), x[:4].astype(np.float64).std(0)
    np.testing.assert_allclose(pos.mean.numpy(), mean, rtol=1e-6)
    got = np.asarray(pos(x[4:, ..., None]))[..., 0]
    np.testing.assert_allclose(got, (x[4:] - mean) / std, atol=1e-4)
    assert not pos.trainable_weights and len(pos.non_trainable_weights) == 2
    np.testing.assert_array_equal(np.asarray(P.Normalize("none")(x[..., None]))[..., 0], x)
    with pytest.raises(KerassegError, match="empty"):
        P.Normalize("position").adapt(np.zeros((0, 40, 40, 1)))


def test_preprocessor_adapts_on_enhanced_train_rois_and_round_trips(rng, tmp_path):
    import keras
    from skimage import exposure

    train, test = _rois(rng, 8), _rois(rng, 3)
    pre = P.ImagePreprocessor(40, enhancement="histeq", normalization="position", name="preprocessor")
    pre.adapt(train)
    enh = np.stack([exposure.equalize_hist((t - t.min()) / (t.max() - t.min())) for t in train]).astype(np.float64)
    np.testing.assert_allclose(pre.normalize.mean.numpy(), enh.mean(0), atol=1e-5)
    np.testing.assert_allclose(pre.normalize.std.numpy(), np.maximum(enh.std(0), 1e-6), atol=1e-5)
    # a raw crop of another size: resized first (the one resize), then enhanced and normalised
    crop = rng.uniform(0, 4000, (2, 57, 71)).astype(np.float32)
    out = np.asarray(pre(crop[..., None]))
    assert out.shape == (2, 40, 40, 1)
    # travels inside a .keras model: config and weights come back
    inp = keras.Input((None, None, 1))
    model = keras.Model(inp, pre(inp))
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(np.asarray(again(crop[..., None])), out)
    cfg = again.layers[1].get_config()
    assert (cfg["enhancement"], cfg["normalization"], cfg["size"]) == ("histeq", "position", 40)
    np.testing.assert_array_equal(pre.transform(test), np.asarray(pre(test[..., None])))


def test_bad_options_are_one_line_errors():
    with pytest.raises(KerassegError, match="unknown enhancement"):
        P.Enhance("gamma")
    with pytest.raises(KerassegError, match="clip_limit"):
        P.Enhance("clahe", clip_limit=0)
    with pytest.raises(KerassegError, match="unknown normalisation"):
        P.Normalize("zscore")
    with pytest.raises(KerassegError, match="NaN"):
        P.ImagePreprocessor(40).transform(np.full((1, 40, 40), np.nan))


def test_adapt_transform_equals_adapt_then_transform(rng):
    x = _rois(rng, 8)
    for enhancement in ("clahe", "none"):
        one = P.ImagePreprocessor(40, enhancement=enhancement, normalization="position")
        two = P.ImagePreprocessor(40, enhancement=enhancement, normalization="position")
        two.adapt(x)
        np.testing.assert_array_equal(one.adapt_transform(x), two.transform(x))
        np.testing.assert_array_equal(one.normalize.mean.numpy(), two.normalize.mean.numpy())
