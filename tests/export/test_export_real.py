"""Export of the real models (CRU-Net with CRF, FCN with prior) behind the real ImagePreprocessor."""

import json

import numpy as np
import pytest

from kerasseg.export import Segmenter, export_model
from fixtures.export import run_without_kerasseg, numpy_normalize
from fixtures.export import BLOCKED_LOADER


@pytest.fixture(scope="module")
def phantom():
    from kerasseg.data.phantom import make_phantom

    return make_phantom(n_train=6, n_val=1, n_test=3, size=40, seed=11)


def _crunet(phantom):
    import keras

    from kerasseg.layers.prior import prior_from_masks
    from kerasseg.models import build_model

    keras.utils.set_random_seed(0)
    prior = prior_from_masks(phantom.subset("train").masks)
    return build_model("crunet", input_size=40, filters=(4, 8, 8, 8), dropout=0.5, prior=prior,
                       crf={"iterations_train": 2, "iterations_test": 4})


def _segmenter(network, train=None, enhancement="none", normalization="position"):
    from kerasseg.layers import ImagePreprocessor
    from kerasseg.models import build_segmenter

    pre = ImagePreprocessor(40, enhancement=enhancement, normalization=normalization, name="preprocessor")
    if train is not None:
        pre.adapt(train)
    return build_segmenter(network, pre)


def numpy_position(train, images):
    """Independent float64 reference of the position normalisation fitted on the train ROIs."""
    t = np.asarray(train, np.float64)
    return (np.asarray(images, np.float64) - t.mean(axis=0)) / np.maximum(t.std(axis=0), 1e-6)


@pytest.mark.slow
def test_crunet_position_export_matches_keras_without_kerasseg(phantom, tmp_path):
    import tensorflow as tf

    network = _crunet(phantom)
    train = phantom.subset("train").images
    path = export_model(_segmenter(network, train), tmp_path / "serve" / "crunet")
    test = phantom.subset("test").images
    odd = test[:, 2:39, 5:30]
    inp = tmp_path / "in.npz"
    np.savez(inp, serving_default__x40=test, serving_4d__x40c=test[..., None], serving_default__odd=odd)
    proc = run_without_kerasseg(BLOCKED_LOADER, path, inp, tmp_path / "out.npz", tmp_path)
    assert "OK []" in proc.stdout
    res = dict(np.load(tmp_path / "out.npz"))

    # reference: float64 position normalisation fitted on the train ROIs, the network in inference mode
    ref = network(numpy_position(train, test).astype(np.float32)[..., None], training=False)
    crf, net = np.asarray(ref["crf"])[..., 1], np.asarray(ref["net"])[..., 1]
    for key in ("serving_default__x40", "serving_4d__x40c"):
        np.testing.assert_allclose(res[f"{key}/probability"], crf, atol=1e-5)
        np.testing.assert_array_equal(res[f"{key}/mask"], (res[f"{key}/probability"] >= 0.5).astype(np.uint8))
    # the final output is the CRF's (with its inference iteration count, see the test below), not the net's
    assert not np.allclose(res["serving_default__x40/probability"], net, atol=1e-3)
    # another crop size: bicubic (anti-aliased) to 40, the same normalisation and network, bilinear back
    small = tf.image.resize(odd[..., None], (40, 40), method="bicubic", antialias=True).numpy()[..., 0]
    ref_odd = np.asarray(network(numpy_position(train, small).astype(np.float32)[..., None],
                                 training=False)["crf"])[..., 1:]
    back = tf.image.resize(ref_odd, odd.shape[1:], method="bilinear", antialias=True).numpy()[..., 0]
    assert res["serving_default__odd/probability"].shape == (3, 37, 25)
    np.testing.assert_allclose(res["serving_default__odd/probability"], np.clip(back, 0, 1), atol=1e-4)


def test_crf_iterations_matter(phantom):
    """Sanity for the test above: 4 vs 1 test iterations change the CRF output."""
    from kerasseg.models import build_model

    import keras

    keras.utils.set_random_seed(0)
    a = build_model("crunet", input_size=40, filters=(4, 8, 8, 8), crf={"iterations_test": 4})
    keras.utils.set_random_seed(0)
    b = build_model("crunet", input_size=40, filters=(4, 8, 8, 8), crf={"iterations_test": 1})
    b.set_weights(a.get_weights())
    x = phantom.images[:2, ..., None]
    assert not np.allclose(np.asarray(a(x, training=False)["crf"]), np.asarray(b(x, training=False)["crf"]),
                           atol=1e-6)


def test_keras_file_segmenter_and_histeq_export(phantom, tmp_path):
    """A .keras segmenter carries its preprocessing; a histeq one exports and serves the same numbers."""
    import keras
    import tensorflow as tf
    from skimage import exposure

    from kerasseg.models import build_model

    keras.utils.set_random_seed(1)
    network = build_model("fcn", input_size=40, fcn_variant=1)
    for w in network.weights:  # spread the untrained outputs away from 0.5, so differences show
        w.assign(3.0 * w.numpy())
    x = phantom.images[:2]
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    _segmenter(network, normalization="image").save(model_dir / "image.keras")
    prob, _ = Segmenter(model_dir / "image.keras")(x)
    ref = np.asarray(network(numpy_normalize(x).astype(np.float32)[..., None], training=False)["net"])[..., 1]
    np.testing.assert_allclose(prob, ref, atol=1e-5)

    # histogram equalisation (scikit-image, independent of our TF op) then per-image normalisation
    histeq = _segmenter(network, enhancement="histeq", normalization="image")
    histeq.save(model_dir / "histeq.keras")
    eq = np.stack([exposure.equalize_hist(i, nbins=256) for i in x.astype(np.float32)])
    from kerasseg.models import get_preprocessor

    np.testing.assert_allclose(get_preprocessor(histeq).transform(x)[..., 0], numpy_normalize(eq), atol=1e-4)
    ref_eq = np.asarray(network(numpy_normalize(eq).astype(np.float32)[..., None], training=False)["net"])[..., 1]
    assert np.abs(ref_eq - ref).max() > 1e-3  # the enhancement matters
    path = export_model(model_dir / "histeq.keras", tmp_path / "s" / "fcn")
    assert path == tmp_path / "s" / "fcn" / "1" and (path / "saved_model.pb").exists()
    card = json.loads((path / "assets" / "model_card.json").read_text())
    assert card["input_contract"]["preprocessing"]["enhancement"] == "histeq"
    assert card["input_contract"]["final_output"] == "net"
    loaded = tf.saved_model.load(str(path))
    got = loaded.signatures["serving_default"](image=tf.constant(x))["probability"].numpy()
    np.testing.assert_allclose(got, ref_eq, atol=1e-5)
    np.testing.assert_allclose(Segmenter(model_dir / "histeq.keras")(x)[0], got, atol=1e-6)


@pytest.mark.slow
def test_run_dir_export_and_predict_cli_agree(phantom, tmp_path):
    """A run directory (Contract 4 files) goes through load_run; its export predicts the same masks."""
    import keras
    import skimage.io
    import yaml
    from click.testing import CliRunner

    from kerasseg.cli.main import cli
    from kerasseg.models import build_model

    keras.utils.set_random_seed(2)
    network = build_model("unet", input_size=40, filters=(4, 8, 8, 8), crf={"iterations_test": 3})
    train = phantom.subset("train").images
    run = tmp_path / "run"
    run.mkdir()
    _segmenter(network, train).save(run / "model.keras")  # model.keras IS the segmenter
    cfg = {"name": "unet-test", "model": {"arch": "unet"}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))

    runner = CliRunner()
    res = runner.invoke(cli, ["export", str(run), "--out", str(tmp_path / "serve" / "unet")])
    assert res.exit_code == 0, res.output
    card = json.loads((tmp_path / "serve" / "unet" / "1" / "assets" / "model_card.json").read_text())
    assert card["config"] == cfg and card["input_contract"]["preprocessing"]["normalization"] == "position"
    img = tmp_path / "roi.tif"
    skimage.io.imsave(img, phantom.images[0], check_contrast=False)
    masks, infos = {}, {}
    for name, src in (("run", run), ("export", tmp_path / "serve" / "unet")):
        for tag, extra in (("full", []), ("box", ["--roi", "3,2,37,39"])):
            out = tmp_path / name / tag
            res = runner.invoke(cli, ["predict", str(src), str(img), "--out", str(out)] + extra)
            assert res.exit_code == 0, res.output
            masks[name, tag] = skimage.io.imread(out / "roi_mask.png")
            infos[name, tag] = json.loads((out / "roi.json").read_text())
    for tag in ("full", "box"):
        np.testing.assert_array_equal(masks["run", tag], masks["export", tag])
        assert infos["run", tag]["area_px"] == infos["export", tag]["area_px"]
        assert infos["run", tag]["max_probability"] == pytest.approx(infos["export", tag]["max_probability"],
                                                                     abs=1e-6)
    box = masks["run", "box"]
    assert not box[:2].any() and not box[39:].any() and not box[:, :3].any() and not box[:, 37:].any()
    # reference: float64 position normalisation fitted on the train ROIs, the network in inference mode
    xn = numpy_position(train, phantom.images[:1]).astype(np.float32)[..., None]
    ref = np.asarray(network(xn, training=False)["crf"])[0, ..., 1]
    assert 0 < (ref >= 0.5).sum() < ref.size  # a non-trivial mask, so the comparison means something
    decided = np.abs(ref - 0.5) > 1e-4  # pixels on the threshold may flip with float rounding
    np.testing.assert_array_equal((masks["run", "full"] > 0)[decided], (ref >= 0.5)[decided])
    assert infos["run", "full"]["max_probability"] == pytest.approx(float(ref.max()), abs=1e-5)
