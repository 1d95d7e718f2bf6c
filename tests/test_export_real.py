"""Export of the real models (CRU-Net with CRF, FCN with prior) with the real Normalizer."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from kerasseg.errors import KerassegError
from kerasseg.export import Segmenter, export_model
from test_export_savedmodel import BLOCKED_LOADER


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


@pytest.mark.slow
def test_crunet_position_export_matches_keras_without_kerasseg(phantom, tmp_path):
    from kerasseg.data.pipeline import Normalizer

    model = _crunet(phantom)
    norm = Normalizer("position").fit(phantom.subset("train").images)
    path = export_model((model, norm), tmp_path / "serve" / "crunet")
    test = phantom.subset("test").images
    xraw = norm(test)[..., None]
    inp = tmp_path / "in.npz"
    np.savez(inp, raw=xraw, x40=test, odd=test[:, 2:39, 5:30])
    script = tmp_path / "load.py"
    script.write_text(BLOCKED_LOADER)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, str(script), str(path), str(inp), str(tmp_path / "out.npz")],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = dict(np.load(tmp_path / "out.npz"))

    ref = model(xraw, training=False)
    np.testing.assert_allclose(res["raw/net_probability"], np.asarray(ref["net"]), atol=1e-5)
    np.testing.assert_allclose(res["raw/crf_probability"], np.asarray(ref["crf"]), atol=1e-5)
    # the CRF runs its inference iteration count: a model with other iterations gives other values
    np.testing.assert_allclose(res["x40/probability"], np.asarray(ref["crf"])[..., 1], atol=1e-5)
    assert res["odd/probability"].shape == (3, 37, 25)


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


def test_keras_file_with_normalizer_json(phantom, tmp_path):
    import keras

    from kerasseg.data.pipeline import Normalizer
    from kerasseg.models import build_model

    keras.utils.set_random_seed(1)
    model = build_model("fcn", input_size=40, fcn_variant=1)
    run = tmp_path / "run"
    run.mkdir()
    model.save(run / "model.keras")
    norm = Normalizer("image")
    (run / "normalizer.json").write_text(json.dumps(norm.get_config()))
    seg = Segmenter(run / "model.keras")
    x = phantom.images[:2]
    prob, _ = seg(x)
    np.testing.assert_allclose(prob, np.asarray(model(norm(x)[..., None], training=False)["net"])[..., 1],
                               atol=1e-5)
    (run / "normalizer.json").write_text(json.dumps(Normalizer("image", "histeq").get_config()))
    with pytest.raises(KerassegError, match="histeq.*no TF graph form"):
        export_model(run / "model.keras", tmp_path / "s" / "fcn")
    assert not (tmp_path / "s" / "fcn" / "1").exists()


@pytest.mark.slow
def test_run_dir_export_and_predict_cli_agree(phantom, tmp_path):
    """A run directory (Contract 4 files) goes through load_run; its export predicts the same masks."""
    import keras
    import skimage.io
    import yaml
    from click.testing import CliRunner

    from kerasseg.cli.main import cli
    from kerasseg.data.pipeline import Normalizer
    from kerasseg.models import build_model

    keras.utils.set_random_seed(2)
    model = build_model("unet", input_size=40, filters=(4, 8, 8, 8), crf={"iterations_test": 3})
    run = tmp_path / "run"
    run.mkdir()
    model.save(run / "model.keras")
    norm = Normalizer("position").fit(phantom.subset("train").images)
    (run / "normalizer.json").write_text(json.dumps(norm.get_config()))
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"arch": "unet"}}))

    runner = CliRunner()
    res = runner.invoke(cli, ["export", str(run), "--out", str(tmp_path / "serve" / "unet")])
    assert res.exit_code == 0, res.output
    img = tmp_path / "roi.tif"
    skimage.io.imsave(img, phantom.images[0], check_contrast=False)
    masks = {}
    for name, src in (("run", run), ("export", tmp_path / "serve" / "unet")):
        res = runner.invoke(cli, ["predict", str(src), str(img), "--out", str(tmp_path / name)])
        assert res.exit_code == 0, res.output
        masks[name] = skimage.io.imread(tmp_path / name / "roi_mask.png")
    np.testing.assert_array_equal(masks["run"], masks["export"])
    ref = np.asarray(model(norm(phantom.images[:1])[..., None], training=False)["crf"])[0, ..., 1]
    decided = np.abs(ref - 0.5) > 1e-4  # pixels on the threshold may flip with float rounding
    np.testing.assert_array_equal((masks["run"] > 0)[decided], (ref >= 0.5)[decided])
