"""Every table row trains, evaluates, exports and serves; the served graph computes what evaluate
and predict compute, on raw crops of any size, in a process where kerasseg cannot be imported."""

import os
import subprocess
import sys

import numpy as np
import pytest

from kerasseg.config import list_configs

ROWS = list_configs()
CROP_SHAPES = ((40, 40), (57, 71), (300, 260))

SERVE = r"""
import sys, os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
sys.modules["kerasseg"] = None  # `import kerasseg` raises ImportError in this process
import numpy as np, tensorflow as tf
export, inp, outp = sys.argv[1:4]
loaded = tf.saved_model.load(export)
fn = loaded.signatures["serving_default"]
res = {k: fn(image=tf.constant(v))["probability"].numpy() for k, v in np.load(inp).items()}
np.savez(outp, **res)
print("OK", sorted(m for m in sys.modules if m.startswith("kerasseg") and sys.modules[m] is not None))
"""


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from kerasseg.data.dataset import save_npz
    from kerasseg.data.phantom import make_phantom

    path = tmp_path_factory.mktemp("rows") / "tiny.npz"
    save_npz(make_phantom(n_train=8, n_val=4, n_test=4, seed=5), path)
    return path


def cfg_has_jitter(row) -> bool:
    from kerasseg.config import resolve_config

    return resolve_config(row)["data"]["box_jitter"] is not None


def test_the_thirteen_rows_are_all_here():
    # the 13 table rows of the two papers, and the two any-box configs (box jitter; not table rows)
    assert len([r for r in ROWS if not r.endswith("-anybox")]) == 13
    assert sorted(r for r in ROWS if r.endswith("-anybox")) == ["crunet-l067-anybox", "crunet-unet-anybox"]


@pytest.mark.slow
@pytest.mark.parametrize("row", ROWS)
def test_row_trains_evaluates_exports_and_serves(row, tiny_data, tmp_path):
    import json

    from kerasseg.data import transforms
    from kerasseg.data.roi import resize_image
    from kerasseg.evaluation.report import evaluate_run, predict_probabilities
    from kerasseg.export import Segmenter, export_model
    from kerasseg.training import fit, load_run

    run = tmp_path / "run"
    res = fit(row, data=str(tiny_data), out_dir=run, epochs=1, verbose=0)
    assert res.status == "finished"
    metrics = evaluate_run(run, split="val", out_dir=tmp_path / "eval", figures=False, verbose=False)
    # one threshold and one Dice: the val Dice of run.json (and of the best epoch's training log)
    # is what `evaluate --split val` measures on the saved model
    assert metrics["dice_mean"] == pytest.approx(json.loads((run / "run.json").read_text())["val_dice"], abs=1e-6)
    best = json.loads((run / "best_state.json").read_text())
    if not cfg_has_jitter(row):   # box jitter chooses its best epoch on the tight + jittered val ROIs
        assert metrics["dice_mean"] == pytest.approx(best["best"], abs=1e-6)
    path = export_model(run, tmp_path / "export" / row)

    model, cfg = load_run(run)
    rng = np.random.default_rng(0)
    crops = {f"c{h}x{w}": rng.gamma(4.0, 300.0, (2, h, w)).astype(np.float32) for h, w in CROP_SHAPES}
    np.savez(tmp_path / "in.npz", **crops)
    (tmp_path / "serve.py").write_text(SERVE)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, str(tmp_path / "serve.py"), str(path), str(tmp_path / "in.npz"),
                           str(tmp_path / "out.npz")], capture_output=True, text=True, env=env, timeout=600,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OK []" in proc.stdout
    served = dict(np.load(tmp_path / "out.npz"))
    seg = Segmenter(run)  # `kerasseg predict RUN`
    for key, x in crops.items():
        # the evaluate path: data prepare's resize, the saved model, the probability resized back
        small = np.stack([resize_image(c, 40) for c in x])
        prob40, _ = predict_probabilities(model, small, verbose=False)
        ref = transforms.resize(prob40, x.shape[1:], method="bilinear").numpy()
        np.testing.assert_allclose(seg(x)[0], served[key], atol=1e-5, err_msg=f"{row} {key} predict")
        np.testing.assert_allclose(served[key], np.clip(ref, 0, 1), atol=1e-5, err_msg=f"{row} {key}")
    assert cfg["name"] == row
