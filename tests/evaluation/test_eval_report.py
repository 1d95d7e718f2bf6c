"""Report writing, figures and compare (with a hand-made Keras model, no training needed)."""

import csv
import json

import matplotlib.image as mpimg
import numpy as np
import pytest

from kerasseg.data.dataset import ROIDataset
from kerasseg.errors import KerassegError
from kerasseg.evaluation import plots
from kerasseg.evaluation.compare import compare_reports
from kerasseg.evaluation.report import evaluate_arrays, evaluate_run


def _threshold_model(size=16, with_crf=False):
    """Mass probability = sigmoid(20 * (x - 0.5)): predicts exactly ``x >= 0.5``."""
    import keras

    inp = keras.Input((size, size, 1), name="image")
    conv = keras.layers.Conv2D(2, 1, name="logits")
    logits = conv(inp)
    conv.set_weights([np.array([0.0, 20.0], np.float32).reshape(1, 1, 1, 2),
                      np.array([0.0, -10.0], np.float32)])
    probs = keras.layers.Softmax(name="probs")(logits)
    outputs = {"net": probs}
    if with_crf:
        outputs = {"net": keras.layers.Lambda(lambda t: 1.0 - t, name="inverted")(probs), "crf": probs}
    return keras.Model(inp, outputs)


def _dataset(rng, n=6, size=16):
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        r, c, s = rng.integers(2, 6), rng.integers(2, 6), rng.integers(4, 9)
        masks[i, r:r + s, c:c + s] = 1
    images = masks + rng.normal(0, 0.3, masks.shape)
    split = np.array(["train"] * 2 + ["test"] * (n - 2))
    return ROIDataset(images=images, masks=masks, split=split, ids=[f"img{i}-mass1" for i in range(n)],
                      spacing_mm=np.full(n, 0.5, np.float32), source="unit")


def _dice(p, g):
    p, g = p.astype(bool), g.astype(bool)
    s = p.sum() + g.sum()
    return 1.0 if s == 0 else 2.0 * (p & g).sum() / s


def test_figures_are_pngs_of_expected_size(tmp_path, rng):
    d = rng.random(12)
    p = plots.dice_histogram(d, tmp_path / "h.png", size=(6.0, 3.0))
    assert mpimg.imread(p).shape[:2] == (300, 600)
    assert open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    masks = (rng.random((12, 16, 16)) > 0.5).astype(np.uint8)
    p = plots.contour_grid(rng.random((12, 16, 16)), masks, masks[::-1], d, tmp_path / "c.png", k=3)
    assert mpimg.imread(p).shape[:2] == (400, 600)
    p = plots.trimap_plot({1: 0.8, 2: 0.85, 3: None}, tmp_path / "t.png", size=(5.0, 4.0))
    assert mpimg.imread(p).shape[:2] == (400, 500)
    assert not list(tmp_path.glob(".*tmp"))          # no temporary files left behind


def test_evaluate_run_with_model_matches_independent_metrics(tmp_path, rng):
    ds = _dataset(rng)
    out = tmp_path / "rep"
    m = evaluate_run(_threshold_model(), data=ds, split="test", out_dir=out, verbose=False)
    test = ds.subset("test")
    pred = (test.images >= 0.5).astype(np.uint8)
    ref = np.array([_dice(p, g) for p, g in zip(pred, test.masks)])
    assert m["n"] == 4
    assert m["dice_mean"] == pytest.approx(ref.mean(), abs=1e-6)
    assert m["dice_pooled"] == pytest.approx(_dice(pred, test.masks), abs=1e-6)
    assert m["hd95_mm_mean"] == pytest.approx(0.5 * m["hd95_px_mean"])
    assert m["data_hash"] == ds.data_hash()
    saved = json.loads((out / "metrics.json").read_text())
    for key in ("dice_mean", "dice_std", "dice_pooled", "iou_mean", "hd95_px_mean", "hd95_mm_mean",
                "sensitivity_mean", "precision_mean", "trimap_accuracy", "n", "split", "data_hash"):
        assert key in saved
    assert sorted(saved["trimap_accuracy"]) == ["1", "2", "3", "4", "5"]
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    assert [r["id"] for r in rows] == list(test.ids)
    assert np.allclose([float(r["dice"]) for r in rows], ref, atol=1e-6)
    with np.load(out / "predictions.npz") as z:
        assert np.array_equal(z["pred"], pred)
        assert np.array_equal(z["mask"], test.masks)
        assert z["prob"].shape == test.masks.shape
        assert str(z["data_hash"]) == ds.data_hash()
    for f in ("dice_hist.png", "contours.png", "trimap.png"):
        assert (out / f).stat().st_size > 1000


def test_evaluate_uses_crf_output_when_present(tmp_path, rng):
    ds = _dataset(rng)
    m = evaluate_run(_threshold_model(with_crf=True), data=ds, out_dir=tmp_path / "r", verbose=False,
                     figures=False)
    assert m["final_output"] == "crf"
    test = ds.subset("test")
    ref = np.mean([_dice(p >= 0.5, g) for p, g in zip(test.images, test.masks)])
    assert m["dice_mean"] == pytest.approx(ref, abs=1e-6)


def test_evaluate_bad_inputs(tmp_path, rng):
    ds = _dataset(rng)
    with pytest.raises(KerassegError, match="no model.keras here"):
        evaluate_run(tmp_path, data=ds, out_dir=tmp_path / "r")
    with pytest.raises(KerassegError, match="no such run"):
        evaluate_run(tmp_path / "nope", data=ds)
    with pytest.raises(KerassegError, match="data ROIs are 16x16 but the model computes at 20x20"):
        evaluate_run(_threshold_model(size=20), data=ds, out_dir=tmp_path / "r")
    with pytest.raises(KerassegError, match="no 'val' ROIs"):
        evaluate_run(_threshold_model(), data=ds, split="val", out_dir=tmp_path / "r")
    with pytest.raises(KerassegError, match="unknown split"):
        evaluate_run(_threshold_model(), data=ds, split="tst", out_dir=tmp_path / "r")


def _report(tmp_path, name, rng, masks, flip_prob, data_hash="h1", ids=None):
    noise = rng.random(masks.shape) < flip_prob
    prob = np.where(noise, 1 - masks, masks).astype(np.float32)
    ids = ids if ids is not None else [f"r{i}" for i in range(len(masks))]
    evaluate_arrays(prob, masks, ids, tmp_path / name, data_hash=data_hash, figures=False, verbose=False)
    return tmp_path / name


def test_compare_reports_and_refusals(tmp_path, rng):
    from statsmodels.stats.contingency_tables import mcnemar
    from scipy.stats import wilcoxon

    masks = np.zeros((10, 16, 16), np.uint8)
    masks[:, 4:12, 4:12] = 1
    a = _report(tmp_path, "a", rng, masks, 0.02)
    b = _report(tmp_path, "b", rng, masks, 0.10)
    res = compare_reports(a, b, out=tmp_path / "cmp.json", verbose=False, n_boot=2000)
    with np.load(a / "predictions.npz") as za, np.load(b / "predictions.npz") as zb:
        ok_a, ok_b = za["pred"] == masks, zb["pred"] == masks
        da = np.array([_dice(p, g) for p, g in zip(za["pred"], masks)])
        db = np.array([_dice(p, g) for p, g in zip(zb["pred"], masks)])
    table = [[np.sum(ok_a & ok_b), np.sum(ok_a & ~ok_b)], [np.sum(~ok_a & ok_b), np.sum(~ok_a & ~ok_b)]]
    assert res["mcnemar"]["pvalue"] == pytest.approx(mcnemar(np.array(table), exact=True).pvalue, rel=1e-9)
    assert res["wilcoxon"]["pvalue"] == pytest.approx(wilcoxon(da, db).pvalue)
    assert res["bootstrap"]["mean_diff"] == pytest.approx((da - db).mean())
    assert res["bootstrap"]["mean_diff"] > 0
    assert json.loads((tmp_path / "cmp.json").read_text())["mcnemar"]["b"] == res["mcnemar"]["b"]
    assert mpimg.imread(tmp_path / "cmp.png").shape[:2] == (400, 1000)   # 2 rows x 5 panels of 2 in

    other = _report(tmp_path, "c", rng, masks, 0.05, data_hash="h2")
    with pytest.raises(KerassegError, match="different data"):
        compare_reports(a, other, verbose=False)
    renamed = _report(tmp_path, "d", rng, masks, 0.05, ids=[f"x{i}" for i in range(10)])
    with pytest.raises(KerassegError, match="ids differ"):
        compare_reports(a, renamed, verbose=False)
    with pytest.raises(KerassegError, match="not an evaluation report"):
        compare_reports(a, tmp_path, verbose=False)
    with pytest.raises(KerassegError, match="output folder does not exist"):
        compare_reports(a, b, out=tmp_path / "nope" / "x.json", verbose=False)


def test_cli_compare_and_evaluate_errors(tmp_path, rng):
    from click.testing import CliRunner

    from kerasseg.cli.main import cli

    masks = np.zeros((6, 16, 16), np.uint8)
    masks[:, 3:10, 3:10] = 1
    a = _report(tmp_path, "a", rng, masks, 0.02)
    b = _report(tmp_path, "b", rng, masks, 0.08)
    c = _report(tmp_path, "c", rng, masks, 0.08, data_hash="other")
    runner = CliRunner()
    res = runner.invoke(cli, ["compare", str(a), str(b), "--out", str(tmp_path / "x.json"), "--n-boot", "500"])
    assert res.exit_code == 0, res.output
    assert "McNemar" in res.output and (tmp_path / "x.json").is_file()
    res = runner.invoke(cli, ["compare", str(a), str(c)])
    assert res.exit_code == 1
    assert "Error:" in res.output and "different data" in res.output and "Traceback" not in res.output
    res = runner.invoke(cli, ["evaluate", str(tmp_path), "--data", "phantom"])
    assert res.exit_code == 1 and "no model.keras here" in res.output


def _numpy_image_norm(images):
    """Independent float64 reference of the per-image normalisation: (x - mean) / max(std, 1e-6)."""
    x = np.asarray(images, np.float64)
    mean = x.mean(axis=(1, 2), keepdims=True)
    std = np.maximum(x.std(axis=(1, 2), keepdims=True), 1e-6)
    return (x - mean) / std


def test_evaluate_keras_file_of_segmenter_and_of_bare_network(tmp_path, rng):
    """A saved segmenter (preprocessing inside model.keras): same numbers as normalising in NumPy
    and running the network by hand. A .keras of a bare network is evaluated on the raw pixels."""
    import keras

    from kerasseg.layers import ImagePreprocessor
    from kerasseg.models import build_model, build_segmenter

    keras.utils.set_random_seed(3)
    ds = _dataset(rng, n=5, size=40)
    ds.images[:] = ds.images * 300.0 + 1200.0  # raw intensities, far from the normalised range
    net = build_model("unet", input_size=40)
    pre = ImagePreprocessor(40, enhancement="none", normalization="image", name="preprocessor")
    pre.adapt(ds.subset("train").images)
    build_segmenter(net, pre).save(tmp_path / "seg.keras")
    net.save(tmp_path / "net.keras")
    test = ds.subset("test")

    def reference(x):
        """The network's mass probability on ``x``, and the range of the mean Dice of its
        ``>= 0.5`` masks: pixels within 1e-4 of the threshold may go either way with float32
        rounding (best case: they agree with the ground truth, worst case: they do not)."""
        prob = np.asarray(net(np.asarray(x, np.float32)[..., None], training=False)["net"])[..., 1]
        pred = prob.astype(np.float64) >= 0.5
        open_ = np.abs(prob.astype(np.float64) - 0.5) <= 1e-4
        g = test.masks.astype(bool)
        best = np.mean([_dice(np.where(o, t, p), t) for p, o, t in zip(pred, open_, g)])
        worst = np.mean([_dice(np.where(o, ~t, p), t) for p, o, t in zip(pred, open_, g)])
        return prob, pred, open_, (worst, best)

    m = evaluate_run(tmp_path / "seg.keras", data=ds, out_dir=tmp_path / "rep", verbose=False, figures=False)
    prob, pred, open_, (lo, hi) = reference(_numpy_image_norm(test.images))
    assert m["final_output"] == "net" and m["n"] == len(test)
    assert 0 < pred.sum() < pred.size and open_.mean() < 0.01   # non-trivial masks, few open pixels
    with np.load(tmp_path / "rep" / "predictions.npz") as z:
        np.testing.assert_allclose(z["prob"], prob, atol=1e-5)
        np.testing.assert_array_equal(z["pred"], (z["prob"] >= 0.5).astype(np.uint8))
        np.testing.assert_array_equal(z["pred"][~open_], pred[~open_])
        np.testing.assert_array_equal(z["images"], test.images)   # the raw ROIs were given to the model
    assert lo - 1e-6 <= m["dice_mean"] <= hi + 1e-6

    # a bare network: wrapped with the resize-only preprocessor, i.e. no normalisation of the input
    m2 = evaluate_run(tmp_path / "net.keras", data=ds, out_dir=tmp_path / "rep2", verbose=False, figures=False)
    prob_raw, pred_raw, open_raw, (lo, hi) = reference(test.images)
    with np.load(tmp_path / "rep2" / "predictions.npz") as z:
        np.testing.assert_allclose(z["prob"], prob_raw, atol=1e-5)
        np.testing.assert_array_equal(z["pred"][~open_raw], pred_raw[~open_raw])
        assert np.abs(z["prob"] - prob).max() > 1e-2       # it really did not normalise
    assert lo - 1e-6 <= m2["dice_mean"] <= hi + 1e-6


def test_a_failed_report_leaves_no_folder(tmp_path, monkeypatch):
    """A new report folder appears complete or not at all (built in a hidden sibling, renamed)."""
    from kerasseg.evaluation import plots

    rng = np.random.default_rng(0)
    masks = (rng.random((3, 16, 16)) > 0.5).astype(np.uint8)

    def boom(*a, **k):
        raise RuntimeError("figure failed")

    monkeypatch.setattr(plots, "trimap_plot", boom)
    with pytest.raises(RuntimeError, match="figure failed"):
        evaluate_arrays(masks.astype(np.float32), masks, ["a", "b", "c"], tmp_path / "rep", verbose=False)
    assert list(tmp_path.iterdir()) == []            # no report folder, no hidden staging folder
    monkeypatch.undo()
    m = evaluate_arrays(masks.astype(np.float32), masks, ["a", "b", "c"], tmp_path / "rep", verbose=False)
    assert m["dice_mean"] == pytest.approx(1.0)
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == sorted(
        ["metrics.json", "per_image.csv", "predictions.npz", "dice_hist.png", "contours.png", "trimap.png"])


def test_reevaluating_replaces_the_report_as_one_set(tmp_path, monkeypatch):
    """Into an existing report folder: a failed re-evaluation changes nothing; a successful one
    replaces every report file, drops the old uncertainty figure it no longer draws, and keeps a
    compare result that lives beside the report."""
    rng = np.random.default_rng(1)
    masks = (rng.random((3, 16, 16)) > 0.5).astype(np.uint8)
    rep = tmp_path / "rep"
    unc = rng.random(masks.shape).astype(np.float32)
    evaluate_arrays(masks.astype(np.float32), masks, ["a", "b", "c"], rep, uncertainty=unc, verbose=False)
    (rep / "compare-other.json").write_text("{}")
    before = {p.name: p.read_bytes() for p in rep.iterdir()}
    assert "uncertainty.png" in before

    def boom(*a, **k):
        raise RuntimeError("figure failed")

    wrong = 1.0 - masks.astype(np.float32)  # a different report (Dice 0)
    monkeypatch.setattr(plots, "trimap_plot", boom)
    with pytest.raises(RuntimeError, match="figure failed"):
        evaluate_arrays(wrong, masks, ["a", "b", "c"], rep, verbose=False)
    assert {p.name: p.read_bytes() for p in rep.iterdir()} == before  # untouched, no staging folder
    monkeypatch.undo()

    m = evaluate_arrays(wrong, masks, ["a", "b", "c"], rep, verbose=False)
    assert m["dice_mean"] == pytest.approx(0.0)
    names = sorted(p.name for p in rep.iterdir())
    assert names == sorted(["metrics.json", "per_image.csv", "predictions.npz", "dice_hist.png",
                            "contours.png", "trimap.png", "compare-other.json"])
    assert json.loads((rep / "metrics.json").read_text())["dice_mean"] == pytest.approx(0.0)
    with np.load(rep / "predictions.npz") as z:
        assert "uncertainty" not in z.files and np.array_equal(z["pred"], 1 - masks)
