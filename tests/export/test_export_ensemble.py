"""Export of a cross-validation folds dir: one SavedModel with every member, TTA and post-processing."""

import json

import numpy as np
import pytest
import scipy.ndimage as ndi
import yaml

from kerasseg.errors import KerassegError
from kerasseg.export import savedmodel
from kerasseg.export.savedmodel import export_model
from fixtures.export import run_without_kerasseg, tiny_segmenter
from fixtures.export import BLOCKED_LOADER
from fixtures.export import crops as fixture_crops

POST = {"largest_component": True, "fill_holes": True}


def write_folds_dir(root, seeds=(0, 1), postprocessing=POST, status="finished"):
    """A folds dir as `kerasseg fit --folds` writes it: cv.json + fold-<k>/ run dirs."""
    root.mkdir(parents=True, exist_ok=True)
    for k, seed in enumerate(seeds, start=1):
        run = root / f"fold-{k}"
        run.mkdir()
        tiny_segmenter(40, crf=True, seed=seed).save(run / "model.keras")
        (run / "config.yaml").write_text(yaml.safe_dump({"name": "tiny", "paper": "test"}))
        (run / "run.json").write_text(json.dumps({"val_dice": 0.5 + 0.1 * k, "best_epoch": 1,
                                                  "data_hash": f"hash{k}"}))
    (root / "cv.json").write_text(json.dumps({"kind": "kerasseg-cv", "config": "tiny", "folds": len(seeds),
                                              "status": status, "postprocessing": postprocessing,
                                              "cv_dice": 0.61}))
    return root


def crops(seed, shape, n=3):
    return fixture_crops(seed, shape, n, dark_core=True)   # holes in the masks: post-processing acts


@pytest.fixture(scope="module")
def folds(tmp_path_factory):
    return write_folds_dir(tmp_path_factory.mktemp("cv") / "cv-tiny")


@pytest.fixture(scope="module")
def exported(folds, tmp_path_factory):
    base = tmp_path_factory.mktemp("serving") / "massseg"
    return export_model(folds, base, tta="flips")


@pytest.fixture(scope="module")
def reference(folds):
    """The in-Python graph on the fold members, loaded independently of the export."""
    import keras

    import kerasseg.models  # noqa: F401
    from kerasseg.models.ensemble import ensemble_function

    members = [keras.saving.load_model(folds / f"fold-{k}" / "model.keras") for k in (1, 2)]
    return ensemble_function(members, tta="flips", postprocessing=POST)


def test_ensemble_export_equals_ensemble_function(exported, reference):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(exported))
    for shape in ((40, 40), (57, 33)):
        x = crops(1, shape)
        want = {k: v.numpy() for k, v in reference(tf.constant(x)).items()}
        png = [tf.io.encode_png(tf.constant(np.clip(a, 0, 65535).astype(np.uint16)[..., None])).numpy()
               for a in x]
        want_png = {k: v.numpy() for k, v in
                    reference(tf.constant(np.clip(x, 0, 65535).astype(np.uint16).astype(np.float32))).items()}
        outs = [(loaded.signatures["serving_default"](image=tf.constant(x)), want),
                (loaded.signatures["serving_4d"](image=tf.constant(x[..., None])), want),
                (loaded.signatures["serving_bytes"](image_bytes=tf.constant(png)), want_png)]
        for out, ref in outs:
            assert set(out) == {"probability", "mask", "uncertainty"}
            np.testing.assert_allclose(out["probability"].numpy(), ref["probability"], atol=1e-5)
            np.testing.assert_allclose(out["uncertainty"].numpy(), ref["uncertainty"], atol=1e-5)
            np.testing.assert_array_equal(out["mask"].numpy(), ref["mask"])
        assert want["uncertainty"].max() > 1e-3  # two members and four flips disagree somewhere
        # the cv's post-processing is in the graph: largest 8-connected component, holes filled
        raw = (want["probability"] >= 0.5).astype(np.uint8)
        changed = False
        for m, got in zip(raw, want["mask"]):
            lab, n = ndi.label(m, np.ones((3, 3)))
            ref = np.zeros_like(m)
            if n:
                ref = (lab == np.argmax(np.bincount(lab.ravel())[1:]) + 1)
                ref = ndi.binary_fill_holes(ref).astype(np.uint8)
            np.testing.assert_array_equal(got, ref)
            changed |= bool((ref != m).any())
        assert changed


def test_ensemble_export_loads_without_kerasseg(exported, reference, tmp_path):
    import tensorflow as tf

    x = crops(2, (44, 52))
    inp = tmp_path / "in.npz"
    np.savez(inp, serving_default__x=x)
    proc = run_without_kerasseg(BLOCKED_LOADER, exported, inp, tmp_path / "out.npz", tmp_path)
    assert "OK []" in proc.stdout
    res = dict(np.load(tmp_path / "out.npz"))
    want = {k: v.numpy() for k, v in reference(tf.constant(x)).items()}
    np.testing.assert_allclose(res["serving_default__x/probability"], want["probability"], atol=1e-5)
    np.testing.assert_allclose(res["serving_default__x/uncertainty"], want["uncertainty"], atol=1e-5)
    np.testing.assert_array_equal(res["serving_default__x/mask"], want["mask"])


def test_model_card_and_graph(exported, folds):
    from tensorflow.python.framework import op_def_registry

    card = json.loads((exported / "assets" / "model_card.json").read_text())
    ens = card["ensemble"]
    assert [m["run_dir"] for m in ens["members"]] == ["fold-1", "fold-2"]
    assert [m["metrics"]["val_dice"] for m in ens["members"]] == [0.6, 0.7]
    assert ens["tta"] == "flips" and ens["postprocessing"] == POST
    assert ens["cv"]["folds"] == 2 and ens["cv"]["cv_dice"] == 0.61 and ens["cv"]["folds_dir"] == str(folds)
    assert "uncertainty" in card["input_contract"]["outputs"]
    ops = savedmodel.graph_ops(exported)
    assert {"While", "StatelessWhile"} & ops  # the post-processing loops are in the graph
    assert sorted(op for op in ops if op_def_registry.get(op) is None or "PyFunc" in op) == []


def test_bad_tta_and_unfinished_cv_are_refused(folds, tmp_path):
    with pytest.raises(KerassegError, match="unknown TTA mode"):
        export_model(folds, tmp_path / "m", tta="rot")
    assert not (tmp_path / "m").exists()
    unfinished = write_folds_dir(tmp_path / "cv2", seeds=(0,), status="running")
    with pytest.raises(KerassegError, match="not finished"):
        export_model(unfinished, tmp_path / "m2")
