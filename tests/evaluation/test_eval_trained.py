"""evaluate on a tiny run trained with kerasseg.training.fit (1 epoch, a few phantom ROIs)."""

import json

import numpy as np
import pytest

from kerasseg.data.dataset import save_npz
from kerasseg.data.phantom import make_phantom
from kerasseg.errors import KerassegError
from kerasseg.evaluation.report import evaluate_run

pytestmark = pytest.mark.slow  # trains a (tiny) model: ~20 s on 2 cores


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from kerasseg.training import fit

    root = tmp_path_factory.mktemp("trained")
    ds = make_phantom(n_train=6, n_val=3, n_test=5, size=40, seed=11)
    data = save_npz(ds, root / "tiny.npz")
    fit("crunet-unet", str(data), root / "run", epochs=1, seed=0, verbose=0)
    return root, ds, data


def _numpy_preprocess(cfg, train_images, images):
    """Independent float64 reference of the run's preprocessing (ROIs already at the model size,
    so the resize is the identity; the crunet-unet config has no enhancement)."""
    assert cfg["data"]["enhancement"] == "none"
    x = np.asarray(images, np.float64)
    mode = cfg["data"]["normalization"]
    if mode == "position":
        t = np.asarray(train_images, np.float64)
        return (x - t.mean(axis=0)) / np.maximum(t.std(axis=0), 1e-6)
    if mode == "image":
        return (x - x.mean(axis=(1, 2), keepdims=True)) / np.maximum(x.std(axis=(1, 2), keepdims=True), 1e-6)
    assert mode == "none"
    return x


def test_evaluate_trained_run_matches_direct_prediction(tiny_run):
    from kerasseg.models import final_key, get_network
    from kerasseg.training import load_run

    root, ds, data = tiny_run
    m = evaluate_run(root / "run", verbose=False)          # data taken from run.json
    assert m["data_hash"] == ds.data_hash()
    assert (root / "run" / "eval-test" / "metrics.json").is_file()
    model, cfg = load_run(root / "run")
    test = ds.subset("test")
    # the network of the run on the independently preprocessed raw test ROIs
    net = get_network(model)
    x = _numpy_preprocess(cfg, ds.subset("train").images, test.images).astype(np.float32)
    out = net(x[..., None], training=False)
    key = final_key(model)
    assert m["final_output"] == key
    prob = np.asarray(out[key])[..., 1].astype(np.float64)
    with np.load(root / "run" / "eval-test" / "predictions.npz") as z:
        np.testing.assert_allclose(z["prob"], prob, atol=1e-5)
        np.testing.assert_array_equal(z["pred"], (z["prob"] >= 0.5).astype(np.uint8))
    pred = prob >= 0.5
    open_ = np.abs(prob - 0.5) <= 1e-4   # may go either way with float32 rounding
    g = test.masks.astype(bool)

    def dice(p, t):
        return 1.0 if (p.sum() + t.sum()) == 0 else 2 * (p & t).sum() / (p.sum() + t.sum())

    best = np.mean([dice(np.where(o, t, p), t) for p, o, t in zip(pred, open_, g)])
    worst = np.mean([dice(np.where(o, ~t, p), t) for p, o, t in zip(pred, open_, g)])
    assert m["n"] == len(test)
    assert worst - 1e-6 <= m["dice_mean"] <= best + 1e-6
    if not open_.any():
        assert m["dice_mean"] == pytest.approx(float(np.mean([dice(p, t) for p, t in zip(pred, g)])), abs=1e-6)
    saved = json.loads((root / "run" / "eval-test" / "metrics.json").read_text())
    assert saved["model"] == cfg["name"]
    if ds.spacing_mm is not None:
        assert saved["hd95_mm_mean"] is not None


def test_evaluate_trained_run_bad_inputs(tiny_run, tmp_path):
    root, ds, _ = tiny_run
    small = make_phantom(n_train=2, n_val=1, n_test=2, size=32, seed=1)
    with pytest.raises(KerassegError, match="data ROIs are 32x32 but the model computes at 40x40"):
        evaluate_run(root / "run", data=small, out_dir=tmp_path / "r", verbose=False)
    with pytest.raises(KerassegError, match="unknown split"):
        evaluate_run(root / "run", data=ds, split="validation", out_dir=tmp_path / "r", verbose=False)
