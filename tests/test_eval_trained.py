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


def test_evaluate_trained_run_matches_direct_prediction(tiny_run):
    from kerasseg.training import load_run

    root, ds, data = tiny_run
    m = evaluate_run(root / "run", verbose=False)          # data taken from run.json
    assert m["data_hash"] == ds.data_hash()
    assert (root / "run" / "eval-test" / "metrics.json").is_file()
    model, norm, cfg = load_run(root / "run")
    test = ds.subset("test")
    out = model.predict(norm(test.images)[..., None], verbose=0)
    prob = np.asarray(out["crf" if "crf" in out else "net"])[..., 1]
    pred = prob >= 0.5
    g = test.masks.astype(bool)
    ref = [1.0 if (p.sum() + t.sum()) == 0 else 2 * (p & t).sum() / (p.sum() + t.sum()) for p, t in zip(pred, g)]
    assert m["n"] == len(test)
    assert m["dice_mean"] == pytest.approx(float(np.mean(ref)), abs=1e-6)
    saved = json.loads((root / "run" / "eval-test" / "metrics.json").read_text())
    assert saved["model"] == cfg["name"]
    if ds.spacing_mm is not None:
        assert saved["hd95_mm_mean"] is not None


def test_evaluate_trained_run_bad_inputs(tiny_run, tmp_path):
    root, ds, _ = tiny_run
    small = make_phantom(n_train=2, n_val=1, n_test=2, size=32, seed=1)
    with pytest.raises(KerassegError, match="data ROIs are 32x32 but the model expects 40x40"):
        evaluate_run(root / "run", data=small, out_dir=tmp_path / "r", verbose=False)
    with pytest.raises(KerassegError, match="unknown split"):
        evaluate_run(root / "run", data=ds, split="validation", out_dir=tmp_path / "r", verbose=False)
