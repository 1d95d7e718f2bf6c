"""Grouped K-fold cross-validation (kerasseg fit --folds), post-processing chosen on CV, and the
fold ensemble in evaluate."""

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import ndimage

from kerasseg.data.dataset import load_npz, save_npz
from kerasseg.data.phantom import make_phantom
from kerasseg.errors import KerassegError
from kerasseg.training.folds import choose_postprocessing


def _np_dice(p, t):
    p, t = np.asarray(p, bool), np.asarray(t, bool)
    den = p.sum() + t.sum()
    return 1.0 if den == 0 else 2.0 * (p & t).sum() / den


def _np_post(m, lcc, fill):
    m = np.asarray(m, bool)
    if lcc and m.any():
        lab, n = ndimage.label(m, structure=np.ones((3, 3)))
        sizes = ndimage.sum(m, lab, range(1, n + 1))
        m = lab == (1 + int(np.argmax(sizes)))
    if fill:
        m = ndimage.binary_fill_holes(m)
    return m


def _disc(n=24, c=(12, 12), r=6):
    yy, xx = np.mgrid[:n, :n]
    return ((yy - c[0]) ** 2 + (xx - c[1]) ** 2 <= r * r).astype(np.uint8)


def test_choose_postprocessing_follows_the_oof_dice():
    truth = np.stack([_disc(), _disc(c=(10, 13), r=7), _disc(r=5)])
    # predictions: the mass with a spurious blob (LCC helps) and a hole (filling helps)
    prob = truth.astype(np.float32) * 0.9
    prob[0, 1:3, 20:23] = 0.8
    prob[1, 10, 13] = 0.1
    prob[2, 20:23, 1:3] = 0.7
    choice, tried = choose_postprocessing(prob, truth)
    assert choice == {"largest_component": True, "fill_holes": True}
    for name, lcc, fill in (("none", 0, 0), ("largest_component", 1, 0),
                            ("largest_component+fill_holes", 1, 1)):
        ref = np.mean([_np_dice(_np_post(p >= 0.5, lcc, fill), t) for p, t in zip(prob, truth)])
        assert tried[name] == pytest.approx(ref, abs=1e-6)
    # truth with two components: keeping only the largest one lowers the Dice -> not chosen
    two = truth.copy()
    two[:, 0:3, 0:3] = 1
    choice, tried = choose_postprocessing(two.astype(np.float32), two)
    assert choice == {"largest_component": False, "fill_holes": False}
    assert tried["largest_component"] < tried["none"] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory):
    from kerasseg.training.folds import fit_folds

    tmp = tmp_path_factory.mktemp("cv")
    ds = make_phantom(n_train=6, n_val=2, n_test=3, size=40, seed=5)
    groups = np.array([f"p{i // 2}" for i in range(len(ds))])     # two ROIs per patient
    ds.group = groups
    data = str(save_npz(ds, tmp / "grouped.npz"))
    cfg = tmp / "tiny.yaml"
    cfg.write_text("extends: crunet-unet\nname: tiny\nmodel: {filters: [4, 8]}\ntrain: {batch_size: 8}\n")
    res = fit_folds(str(cfg), data, tmp / "cv", folds=2, epochs=1, seed=0, verbose=0)
    return {"dir": tmp / "cv", "data": data, "cfg": str(cfg), "res": res, "ds": load_npz(data)}


@pytest.mark.slow
def test_folds_disjoint_by_group_and_oof_from_the_right_model(cv_run):
    from kerasseg.models.segmenter import predict_probability
    from kerasseg.training.run import load_run

    out, ds = cv_run["dir"], cv_run["ds"]
    cv = json.loads((out / "cv.json").read_text())
    assert cv["status"] == "finished" and cv["folds"] == 2 and cv["n_test"] == 3
    oof = np.load(out / "oof.npz")
    pool = ds.split != "test"
    assert sorted(oof["ids"].tolist()) == sorted(ds.ids[pool].tolist())   # every pool ROI once
    for k in (1, 2):
        fold_ds = load_npz(out / "data" / f"fold-{k}.npz")
        held, train = fold_ds.split == "val", fold_ds.split == "train"
        assert not set(fold_ds.group[held]) & set(fold_ds.group[train])     # no patient on both sides
        assert np.array_equal(fold_ds.split == "test", ds.split == "test")  # test untouched
        assert held.sum() == cv["per_fold"][k - 1]["n_held_out"]
        model, _ = load_run(out / f"fold-{k}")
        sel = np.isin(oof["ids"], fold_ds.ids[held])
        assert (oof["fold"][sel] == k).all()
        order = [int(np.flatnonzero(ds.ids == i)[0]) for i in oof["ids"][sel]]
        np.testing.assert_allclose(oof["prob"][sel], predict_probability(model, ds.images[order]), atol=1e-6)
    ref = [_np_dice(_np_post(p >= 0.5, cv["postprocessing"]["largest_component"],
                             cv["postprocessing"]["fill_holes"]), m) for p, m in zip(oof["prob"], oof["mask"])]
    assert cv["oof"]["dice_mean"] == pytest.approx(np.mean(ref), abs=1e-6)
    assert cv["oof"]["prior_dice_mean"] == pytest.approx(oof["prior_dice"].mean(), abs=1e-9)


@pytest.mark.slow
def test_ensemble_test_dice_and_evaluate_folds_dir(cv_run, tmp_path):
    from kerasseg.evaluation.report import evaluate_run
    from kerasseg.models.segmenter import predict_probability
    from kerasseg.training.run import load_run

    out, ds = cv_run["dir"], cv_run["ds"]
    cv = json.loads((out / "cv.json").read_text())
    test = ds.subset("test")
    probs = [predict_probability(load_run(out / f"fold-{k}")[0], test.images) for k in (1, 2)]
    mean = np.mean(probs, axis=0)
    pp = cv["postprocessing"]
    ref = np.mean([_np_dice(_np_post(p >= 0.5, pp["largest_component"], pp["fill_holes"]), m)
                   for p, m in zip(mean, test.masks)])
    assert cv["test"]["ensemble_dice"] == pytest.approx(ref, abs=1e-6)
    m = evaluate_run(out, out_dir=tmp_path / "rep", figures=True, verbose=False)
    assert m["members"] == 2 and m["dice_mean"] == pytest.approx(ref, abs=1e-6)
    z = np.load(tmp_path / "rep" / "predictions.npz")
    np.testing.assert_allclose(z["prob"], mean, atol=1e-6)
    np.testing.assert_allclose(z["uncertainty"], np.std(probs, axis=0), atol=1e-5)
    assert (tmp_path / "rep" / "uncertainty.png").is_file()
    with pytest.raises(KerassegError, match="only be evaluated on 'test'"):
        evaluate_run(out, split="val", out_dir=tmp_path / "rep2", verbose=False)


@pytest.mark.slow
def test_folds_resume_and_refusals(cv_run):
    from kerasseg.training.folds import fit_folds

    out = cv_run["dir"]
    with pytest.raises(KerassegError, match="finished cross-validation"):
        fit_folds(cv_run["cfg"], cv_run["data"], out, folds=2, epochs=1, verbose=0)
    cv = json.loads((out / "cv.json").read_text())
    cv["status"] = "running"
    (out / "cv.json").write_text(json.dumps(cv))
    with pytest.raises(KerassegError, match="another folds"):
        fit_folds(cv_run["cfg"], cv_run["data"], out, folds=3, epochs=1, verbose=0)
    stamp = os.stat(out / "fold-1" / "model.keras").st_mtime_ns
    fit_folds(cv_run["cfg"], cv_run["data"], out, folds=2, epochs=1, seed=0, verbose=0)
    assert os.stat(out / "fold-1" / "model.keras").st_mtime_ns == stamp   # finished folds are kept
    assert json.loads((out / "cv.json").read_text())["status"] == "finished"


def test_folds_refuse_too_few_groups(tmp_path):
    from kerasseg.training.folds import fit_folds

    ds = make_phantom(n_train=2, n_val=1, n_test=1, size=40, seed=1)
    data = str(save_npz(ds, tmp_path / "d.npz"))
    with pytest.raises(KerassegError, match="5 folds need at least 5 groups"):
        fit_folds("crunet-unet", data, tmp_path / "cv", folds=5, epochs=1, verbose=0)
    assert not (tmp_path / "cv").exists()


def test_cli_fit_folds_option(tmp_path):
    from kerasseg.cli.main import cli

    r = CliRunner().invoke(cli, ["fit", "crunet-unet", "--folds", "1", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "--folds" in r.output
