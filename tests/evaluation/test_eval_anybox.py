"""Scoring at any box: ``evaluate --box-margin/--box-shift/--robustness`` and reproduce's worst-margin
column, against independent NumPy references (no training: hand-made threshold models)."""

import json
import re

import matplotlib.image as mpimg
import numpy as np
import pytest
import yaml

from kerasseg.data import transforms
from kerasseg.data.boxes import (ROBUSTNESS_MARGINS, ROBUSTNESS_SHIFT_MARGIN, ROBUSTNESS_SHIFTS,
                                 scoring_draws)
from kerasseg.data.dataset import ROIDataset, save_npz
from kerasseg.errors import KerassegError
from kerasseg.evaluation.report import evaluate_run
from fixtures import REPO as _REPO

SIZE, C = 16, 48       # ROI side, context window side
OPEN = 1e-3            # pixels this close to the threshold may go either way (float32 rounding)


def _threshold_net(slope=20.0):
    """A bare network whose mass probability is sigmoid(slope * (x - 0.5)): mask = ``x >= 0.5``."""
    import keras

    inp = keras.Input((SIZE, SIZE, 1), name="image")
    conv = keras.layers.Conv2D(2, 1, name="logits")
    logits = conv(inp)
    conv.set_weights([np.array([0.0, slope], np.float32).reshape(1, 1, 1, 2),
                      np.array([0.0, -slope / 2], np.float32)])
    return keras.Model(inp, {"net": keras.layers.Softmax(name="probs")(logits)})


def _windowed(n_train=5, n_val=1, n_test=6, seed=4, windows=True):
    """ROIs with context windows: an elliptic mass (value ~1) on a dim gradient with noise; the
    tight box (fractional window pixels) is the ellipse's extent; some windows are only partly
    inside the image (context_valid)."""
    rng = np.random.default_rng(seed)
    n = n_train + n_val + n_test
    yy, xx = np.mgrid[:C, :C] + 0.5
    ctx, cmask, cbox, valid, rois, rmasks = [], [], [], [], [], []
    for i in range(n):
        cy, cx = C / 2 + rng.uniform(-1.5, 1.5, 2)
        ry, rx = rng.uniform(7.0, 11.0, 2)
        m = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0).astype(np.uint8)
        img = m * rng.uniform(0.9, 1.1) + 0.35 * xx / C + rng.normal(0, 0.12, (C, C))
        box = np.array([cy - ry, cx - rx, cy + ry, cx + rx])
        v = np.array([0.0, 0.0, C, C])
        if i % 3 == 1:
            v[1] = rng.uniform(3.0, 7.0)            # the left strip lies outside the image
        if i % 3 == 2:
            v[2] = C - rng.uniform(3.0, 7.0)        # the bottom strip lies outside the image
        y0, x0, y1, x1 = np.floor(box + 0.5).astype(int)
        rois.append(transforms.resize(img[y0:y1, x0:x1][None].astype(np.float32), SIZE)[0].numpy())
        rmasks.append(transforms.resize_mask(m[y0:y1, x0:x1][None].astype(np.float32), SIZE)[0].numpy())
        ctx.append(img)
        cmask.append(m)
        cbox.append(box)
        valid.append(v)
    split = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    extra = {}
    if windows:
        extra = dict(context=np.array(ctx), context_mask=np.array(cmask), context_box=np.array(cbox),
                     context_valid=np.array(valid), context_spacing_mm=np.full(n, 0.1, np.float32))
    return ROIDataset(images=np.array(rois), masks=np.array(rmasks).astype(np.uint8), split=split,
                      ids=[f"case{i}-mass1" for i in range(n)], spacing_mm=np.full(n, 0.2, np.float32),
                      source="unit", **extra)


def _ref_boxes(ds, margin, shift=0.0, seed=0):
    """The integer boxes (y0, x0, y1, x1) of the module rule, in float64 NumPy: the tight box grown
    by ``margin`` per side, moved by ``shift`` (directions of ``scoring_draws``), clipped to the
    valid part, rounded ``floor(v + 0.5)``, at least 2 px inside the valid part."""
    b = ds.context_box.astype(np.float64)
    v = ds.context_valid.astype(np.float64)
    _, shifts = scoring_draws(ds.ids, margin, shift, seed)
    s = shifts.astype(np.float64)
    h, w = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    raw = np.stack([b[:, 0] - margin * h + s[:, 0] * h, b[:, 1] - margin * w + s[:, 1] * w,
                    b[:, 2] + margin * h + s[:, 0] * h, b[:, 3] + margin * w + s[:, 1] * w], 1)
    raw = np.concatenate([np.maximum(raw[:, :2], v[:, :2]), np.minimum(raw[:, 2:], v[:, 2:])], 1)
    frac = raw + 0.5 - np.floor(raw + 0.5)
    assert np.all(np.minimum(frac, 1 - frac) > 1e-3), "a box edge sits on a rounding tie: pick another seed"
    r = np.floor(raw + 0.5).astype(int)
    lo, hi = np.ceil(v[:, :2]).astype(int), np.floor(v[:, 2:]).astype(int)
    end = np.minimum(np.maximum(r[:, 2:], r[:, :2] + 2), hi)
    start = np.maximum(np.minimum(r[:, :2], end - 2), lo)
    return np.concatenate([start, end], 1)


def _ref_view(ds, margin, shift=0.0, seed=0):
    """(images, masks) of every ROI cut at the reference boxes and resized with the one resize."""
    images, masks = [], []
    for win, m, (y0, x0, y1, x1) in zip(ds.context, ds.context_mask, _ref_boxes(ds, margin, shift, seed)):
        images.append(transforms.resize(win[y0:y1, x0:x1][None], SIZE)[0].numpy())
        masks.append(transforms.resize_mask(m[y0:y1, x0:x1][None].astype(np.float32), SIZE)[0].numpy())
    return np.array(images, np.float64), np.array(masks).astype(np.uint8)


def _dice(p, g):
    p, g = np.asarray(p, bool), np.asarray(g, bool)
    s = p.sum() + g.sum()
    return 1.0 if s == 0 else 2.0 * (p & g).sum() / s


def _dice_range(images, masks):
    """The range of the mean Dice of ``image >= 0.5`` when pixels at the threshold go either way."""
    pred, open_, g = images >= 0.5, np.abs(images - 0.5) <= OPEN, masks.astype(bool)
    best = np.mean([_dice(np.where(o, t, p), t) for p, o, t in zip(pred, open_, g)])
    worst = np.mean([_dice(np.where(o, ~t, p), t) for p, o, t in zip(pred, open_, g)])
    return worst, best


def _check_scored(rep, images, masks):
    """The report's ground truth equals the reference masks, its images the reference crops and its
    prediction ``image >= 0.5`` (up to pixels at the threshold)."""
    with np.load(rep / "predictions.npz") as z:
        np.testing.assert_array_equal(z["mask"], masks)
        np.testing.assert_allclose(z["images"], images, atol=1e-5)
        ref = images >= 0.5
        sure = np.abs(images - 0.5) > OPEN
        np.testing.assert_array_equal(z["pred"].astype(bool)[sure], ref[sure])
        return z["pred"].astype(bool)


def _per_image_dice(rep):
    import csv

    with open(rep / "per_image.csv") as fh:
        return np.array([float(r["dice"]) for r in csv.DictReader(fh)])


@pytest.fixture(scope="module")
def data():
    return _windowed()


@pytest.fixture(scope="module")
def net():
    return _threshold_net()


def test_margin_zero_is_exactly_todays_scoring(tmp_path, data, net):
    today = evaluate_run(net, data=data, out_dir=tmp_path / "today", verbose=False, figures=False)
    zero = evaluate_run(net, data=data, out_dir=tmp_path / "zero", verbose=False, figures=False,
                        box_margin=0.0, box_shift=0.0)
    np.testing.assert_array_equal(_per_image_dice(tmp_path / "zero"), _per_image_dice(tmp_path / "today"))
    for key in ("dice_mean", "dice_std", "dice_pooled", "iou_mean", "hd95_px_mean", "hd95_mm_mean",
                "trimap_accuracy", "n", "data_hash"):
        assert zero[key] == today[key], key
    with np.load(tmp_path / "today" / "predictions.npz") as a, np.load(tmp_path / "zero" / "predictions.npz") as b:
        for key in ("ids", "prob", "pred", "mask", "images"):
            np.testing.assert_array_equal(a[key], b[key])
        np.testing.assert_array_equal(b["images"], data.subset("test").images)   # the tight ROIs
    assert (zero["box_margin"], zero["box_shift"]) == (0.0, 0.0)
    assert "baselines" in zero and "baselines" not in today


@pytest.mark.parametrize("margin,shift,seed", [(0.2, 0.0, 0), (0.35, 0.0, 0), (0.2, 0.1, 4)])
def test_scored_masks_equal_an_independent_crop(tmp_path, data, net, margin, shift, seed):
    m = evaluate_run(net, data=data, out_dir=tmp_path / "rep", verbose=False, figures=False,
                     box_margin=margin, box_shift=shift, box_seed=seed)
    images, masks = _ref_view(data, margin, shift, seed)
    test = data.split == "test"
    pred = _check_scored(tmp_path / "rep", images[test], masks[test])
    assert m["dice_mean"] == pytest.approx(np.mean([_dice(p, g) for p, g in zip(pred, masks[test])]), abs=1e-6)
    assert (m["box_margin"], m["box_shift"], m["box_seed"]) == (margin, shift, seed)
    assert m["hd95_mm_mean"] is None        # the pixel size of another box is not the ROI's
    tight = data.subset("test").masks
    assert not np.array_equal(masks[test], tight)   # really another box

    # the prior at the same boxes: the mean TRAIN mask at those boxes >= 0.5; Otsu on the same crops
    from skimage.filters import threshold_otsu

    prior = masks[data.split == "train"].astype(np.float64).mean(0) >= 0.5
    prior_dice = np.array([_dice(prior, g) for g in masks[test]])
    otsu_dice = np.array([_dice(im > threshold_otsu(im), g) for im, g in zip(images[test], masks[test])])
    base = m["baselines"]
    assert base["prior"]["dice_mean"] == pytest.approx(prior_dice.mean(), abs=1e-6)
    assert base["prior"]["dice_std"] == pytest.approx(prior_dice.std(), abs=1e-6)
    assert base["otsu"]["dice_mean"] == pytest.approx(otsu_dice.mean(), abs=1e-4)
    tight_prior = data.subset("train").masks.astype(np.float64).mean(0) >= 0.5
    assert not np.array_equal(prior, tight_prior)   # the prior really moved with the boxes
    saved = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert saved["baselines"] == base and saved["box_margin"] == margin


def test_shift_directions_are_fixed_per_roi_and_seed(tmp_path, data, net):
    runs = {}
    for name, seed in (("a", 4), ("b", 4), ("c", 2)):
        evaluate_run(net, data=data, out_dir=tmp_path / name, verbose=False, figures=False,
                     box_margin=0.1, box_shift=0.2, box_seed=seed)
        with np.load(tmp_path / name / "predictions.npz") as z:
            runs[name] = z["mask"]
    np.testing.assert_array_equal(runs["a"], runs["b"])
    assert not np.array_equal(runs["a"], runs["c"])
    # the same ROI gets the same box whichever split is scored (directions drawn over the whole file)
    evaluate_run(net, data=data, split="train", out_dir=tmp_path / "tr", verbose=False, figures=False,
                 box_margin=0.1, box_shift=0.2, box_seed=4)
    _, masks = _ref_view(data, 0.1, 0.2, 4)
    with np.load(tmp_path / "tr" / "predictions.npz") as z:
        np.testing.assert_array_equal(z["mask"], masks[data.split == "train"])


def test_robustness_table_and_figure(tmp_path, data, net):
    out = tmp_path / "rep"
    m = evaluate_run(net, data=data, out_dir=out, verbose=False, robustness=True)
    rob = m["robustness"]
    assert json.loads((out / "metrics.json").read_text())["robustness"] == rob
    assert [e["margin"] for e in rob["by_margin"]] == list(ROBUSTNESS_MARGINS)
    assert all(e["shift"] == 0.0 for e in rob["by_margin"])
    assert [e["shift"] for e in rob["by_shift"]] == list(ROBUSTNESS_SHIFTS)
    assert all(e["margin"] == ROBUSTNESS_SHIFT_MARGIN for e in rob["by_shift"])
    keys = {f"{w}_dice_{s}" for w in ("model", "prior", "otsu") for s in ("mean", "std")} | {"margin", "shift"}
    assert all(set(e) == keys for e in rob["by_margin"] + rob["by_shift"])
    assert rob["n"] == int((data.split == "test").sum()) and rob["split"] == "test"
    assert rob["by_margin"][0]["model_dice_mean"] == pytest.approx(m["dice_mean"], abs=1e-9)
    assert rob["by_margin"][0]["model_dice_std"] == pytest.approx(m["dice_std"], abs=1e-9)
    # every point against the NumPy reference at its boxes
    test, train = data.split == "test", data.split == "train"
    for e in rob["by_margin"][1:] + rob["by_shift"][1:]:
        images, masks = _ref_view(data, e["margin"], e["shift"], 0)
        lo, hi = _dice_range(images[test], masks[test])
        assert lo - 1e-6 <= e["model_dice_mean"] <= hi + 1e-6   # the one Dice is float32
        if lo == hi:
            model = np.array([_dice(im >= 0.5, g) for im, g in zip(images[test], masks[test])])
            assert e["model_dice_std"] == pytest.approx(model.std(), abs=1e-6)
        prior = masks[train].astype(np.float64).mean(0) >= 0.5
        assert e["prior_dice_mean"] == pytest.approx(np.mean([_dice(prior, g) for g in masks[test]]), abs=1e-6)
    for key in keys - {"margin", "shift"}:
        assert rob["by_shift"][0][key] == rob["by_margin"][ROBUSTNESS_MARGINS.index(ROBUSTNESS_SHIFT_MARGIN)][key]
    png = out / "robustness.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and mpimg.imread(png).shape[:2] == (400, 1000)
    # a re-evaluation without --robustness replaces the set: no stale robustness figure or table
    m2 = evaluate_run(net, data=data, out_dir=out, verbose=False)
    assert "robustness" not in m2 and not png.exists()


def test_robustness_printed_as_a_table(tmp_path, data, net, capsys):
    evaluate_run(net, data=data, out_dir=tmp_path / "rep", figures=False, robustness=True, box_margin=0.1)
    text = capsys.readouterr().out
    assert "Prior (mean train mask)" in text and "Otsu" in text
    rows = [ln for ln in text.splitlines() if re.match(r"^\s+0\.\d\d\s+0\.\d\d\s", ln)]
    assert len(rows) == len(ROBUSTNESS_MARGINS) + len(ROBUSTNESS_SHIFTS) - 1


def test_cli_errors_without_windows_or_with_a_bad_margin(tmp_path, net):
    from click.testing import CliRunner

    from kerasseg.cli.main import cli

    plain = save_npz(_windowed(windows=False), tmp_path / "plain.npz")
    windowed = save_npz(_windowed(), tmp_path / "win.npz")
    net.save(tmp_path / "net.keras")
    runner = CliRunner()
    for flags in (["--box-margin", "0.2"], ["--box-shift", "0.1"], ["--robustness"]):
        res = runner.invoke(cli, ["evaluate", str(tmp_path / "net.keras"), "--data", str(plain),
                                  "--out", str(tmp_path / "rep")] + flags)
        assert res.exit_code == 1, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error:") and "plain.npz" in lines[0], res.output
        assert "kerasseg data prepare" in lines[0] and "Traceback" not in res.output
    assert not (tmp_path / "rep").exists()
    for bad in ("0.7", "-0.1", "nan"):
        res = runner.invoke(cli, ["evaluate", str(tmp_path / "net.keras"), "--data", str(windowed),
                                  "--out", str(tmp_path / "rep"), "--box-margin", bad])
        assert res.exit_code == 1 and "box margin must be a number in [0, 0.5]" in res.output, res.output
    # margin 0 needs no windows: today's scoring
    res = runner.invoke(cli, ["evaluate", str(tmp_path / "net.keras"), "--data", str(plain), "--out",
                              str(tmp_path / "rep0"), "--box-margin", "0", "--no-figures"])
    assert res.exit_code == 0, res.output
    with pytest.raises(KerassegError, match="box seed"):
        evaluate_run(net, data=str(windowed), out_dir=tmp_path / "r", box_margin=0.1, box_seed=-1)


def _write_folds_dir(root, data_file):
    """A folds dir as `kerasseg fit --folds` writes it: cv.json + fold-<k>/ run dirs (two threshold
    members of different slopes: their mean is >= 0.5 exactly where x >= 0.5)."""
    from kerasseg.models import build_segmenter

    root.mkdir(parents=True)
    for k, slope in ((1, 20.0), (2, 8.0)):
        run = root / f"fold-{k}"
        run.mkdir()
        build_segmenter(_threshold_net(slope)).save(run / "model.keras")
        (run / "config.yaml").write_text(yaml.safe_dump({"name": "thresh", "paper": "test"}))
        (run / "run.json").write_text(json.dumps({"status": "finished"}))
    (root / "cv.json").write_text(json.dumps({
        "kind": "kerasseg-cv", "config": "thresh", "folds": 2, "status": "finished", "data": str(data_file),
        "postprocessing": {"largest_component": False, "fill_holes": False}}))
    return root


def test_folds_dir_with_tta_at_a_box_margin(tmp_path, data):
    from click.testing import CliRunner

    from kerasseg.cli.main import cli

    data_file = save_npz(data, tmp_path / "win.npz")
    folds = _write_folds_dir(tmp_path / "cv", data_file)
    res = CliRunner().invoke(cli, ["evaluate", str(folds), "--tta", "flips", "--box-margin", "0.25",
                                   "--no-figures"])
    assert res.exit_code == 0, res.output
    rep = folds / "eval-test-flips-box0.25"
    m = json.loads((rep / "metrics.json").read_text())
    assert (m["members"], m["tta"], m["box_margin"], m["box_shift"]) == (2, "flips", 0.25, 0.0)
    images, masks = _ref_view(data, 0.25)
    test = data.split == "test"
    _check_scored(rep, images[test], masks[test])
    with np.load(rep / "predictions.npz") as z:
        assert z["uncertainty"].max() > 0.01          # two different members
    assert "Prior (mean train mask)" in res.output


def test_docs_box_view_example_runs():
    """The self-contained Python example of docs/evaluation.md's "Scoring at any box" runs as is."""
    text = (_REPO / "docs" / "evaluation.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "# example: any box" in b]
    assert len(blocks) == 1
    exec(compile(blocks[0], "docs/evaluation.md", "exec"), {})  # noqa: S102 - our own docs


# ------------------------------------------------------------------ reproduce's worst-margin column
def _fake_reproduce(monkeypatch, R):
    """Training replaced by a threshold-model run dir; evaluation is the real one."""
    def fake_fit(config, data, out_dir, epochs, seed):
        out_dir.mkdir(parents=True, exist_ok=True)
        from kerasseg.models import build_segmenter

        build_segmenter(_threshold_net(20.0 + seed)).save(out_dir / "model.keras")
        (out_dir / "config.yaml").write_text(yaml.safe_dump({"name": config}))
        (out_dir / "run.json").write_text('{"status": "finished"}')

    monkeypatch.setattr(R, "_fit", fake_fit)
    monkeypatch.setitem(R.TABLES, "crunet-table1", {**R.TABLES["crunet-table1"],
                                                    "rows": R.TABLES["crunet-table1"]["rows"][:2]})


@pytest.mark.slow
def test_reproduce_worst_dice_over_margins(tmp_path, monkeypatch, data):
    from kerasseg.evaluation import reproduce as R

    _fake_reproduce(monkeypatch, R)
    res = R.reproduce_table("crunet-table1", data, seeds=1, out_dir=tmp_path / "w", verbose=False,
                            progress=False)
    assert res["worst_margin"]["margins"] == [0.0, 0.1, 0.2, 0.3] and res["worst_margin"]["reason"] is None
    test = data.split == "test"
    seen = data.split != "test"
    ref_model, ref_prior = {}, {}
    for margin in (0.0, 0.1, 0.2, 0.3):
        images, masks = (data.images.astype(np.float64), data.masks) if margin == 0 else _ref_view(data, margin)
        lo, hi = _dice_range(images[test], masks[test])
        assert hi - lo < 1e-3
        ref_model[margin] = 100 * lo
        prior = masks[seen].astype(np.float64).mean(0) >= 0.5    # reproduce's prior: train + val
        ref_prior[margin] = 100 * np.mean([_dice(prior, g) for g in masks[test]])
    by = {r["config"]: r for r in res["rows"]}
    for cfg in [r[0] for r in R.TABLES["crunet-table1"]["rows"]]:
        assert by[cfg]["dice_worst_margin"] == pytest.approx(min(ref_model.values()), abs=1e-3)
        assert set(by[cfg]["dice_by_margin"]) == {"0", "0.1", "0.2", "0.3"}
    assert by["baseline-prior"]["dice_worst_margin"] == pytest.approx(min(ref_prior.values()), abs=1e-6)
    assert by["baseline-prior"]["worst_margin"] == min(ref_prior, key=ref_prior.get)
    table = json.loads((tmp_path / "w" / "table.json").read_text())
    for key in ("table", "title", "paper_metric", "n_seeds", "folds", "rows", "data", "data_hash"):
        assert key in table
    md = (tmp_path / "w" / "table.md").read_text()
    assert "worst Dice % over box margins 0–0.3" in md and "n/a" not in md


def test_reproduce_without_windows_says_na_once(tmp_path, monkeypatch):
    from kerasseg.evaluation import reproduce as R
    from kerasseg.evaluation.report import evaluate_arrays

    def fake_fit(config, data, out_dir, epochs, seed):
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "model.keras").write_text("x")
        (out_dir / "run.json").write_text('{"status": "finished"}')

    def fake_eval(run_dir, ds, out_dir, figures):
        test = ds.subset("test")
        return evaluate_arrays(test.masks.astype(np.float32), test.masks, test.ids, out_dir,
                               data_hash=ds.data_hash(), split="test", figures=False, verbose=False)

    monkeypatch.setattr(R, "_fit", fake_fit)
    monkeypatch.setattr(R, "_evaluate", fake_eval)
    res = R.reproduce_table("crunet-table1", _windowed(windows=False), seeds=1, out_dir=tmp_path / "p",
                            verbose=False, progress=False)
    assert all(r["dice_worst_margin"] is None and r["worst_margin"] is None for r in res["rows"])
    assert "context windows" in res["worst_margin"]["reason"]
    md = (tmp_path / "p" / "table.md").read_text()
    table_lines = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert all(ln.rstrip(" |").endswith("n/a") for ln in table_lines[1:])
    assert md.count("context windows") == 1                 # the reason, once
    import csv

    rows = list(csv.DictReader(open(tmp_path / "p" / "table.csv")))
    assert all(r["dice_worst_margin"] == "" for r in rows)
