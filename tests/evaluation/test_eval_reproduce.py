"""reproduce: table assembly, paired tests, resume (fast, with training replaced) and a real smoke run."""

import csv
import json
import re

import numpy as np
import pytest
from scipy.stats import wilcoxon
from statsmodels.stats.contingency_tables import mcnemar

from kerasseg.data.dataset import ROIDataset
from kerasseg.errors import KerassegError
from kerasseg.evaluation import reproduce as R
from kerasseg.evaluation.report import evaluate_arrays
from fixtures import REPO as _REPO


def _data(n_test=10, size=16):
    rng = np.random.default_rng(5)
    n = 4 + n_test
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        r, c, s = rng.integers(2, 5), rng.integers(2, 5), rng.integers(5, 10)
        masks[i, r:r + s, c:c + s] = 1
    split = ["train"] * 3 + ["val"] + ["test"] * n_test
    return ROIDataset(images=masks + rng.normal(0, 0.2, masks.shape), masks=masks, split=split,
                      ids=[f"m{i}" for i in range(n)], source="unit")


def _install_fakes(monkeypatch, calls):
    rows = [r[0] for r in R.TABLES["crunet-table1"]["rows"]]

    def fake_fit(config, data, out_dir, epochs, seed):
        calls.append((config, seed))
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "model.keras").write_text("x")
        (out_dir / "run.json").write_text('{"status": "finished"}')

    def fake_eval(run_dir, ds, out_dir, figures):
        row, seed = run_dir.parent.name, int(run_dir.name[4:])
        test = ds.subset("test")
        rng = np.random.default_rng(100 * rows.index(row) + seed)
        flip = rng.random(test.masks.shape) < 0.02 * (1 + rows.index(row))
        prob = np.where(flip, 1 - test.masks, test.masks).astype(np.float32)
        return evaluate_arrays(prob, test.masks, test.ids, out_dir, data_hash=ds.data_hash(), split="test",
                               figures=False, verbose=False)

    monkeypatch.setattr(R, "_fit", fake_fit)
    monkeypatch.setattr(R, "_evaluate", fake_eval)


def test_table_numbers_tests_and_resume(tmp_path, monkeypatch):
    calls = []
    _install_fakes(monkeypatch, calls)
    ds = _data()
    out = tmp_path / "rep"
    res = R.reproduce_table("crunet-table1", ds, seeds=2, out_dir=out, verbose=False, progress=False)
    assert len(calls) == 5 * 2
    rows = R.TABLES["crunet-table1"]["rows"]
    assert [r["config"] for r in res["rows"]] == [r[0] for r in rows] + ["baseline-prior", "baseline-otsu"]

    # independent recomputation from the saved predictions
    def dice_img(cfg, s):
        with np.load(out / "runs" / cfg / f"seed{s}" / "eval-test" / "predictions.npz") as z:
            p, g = z["pred"].astype(bool), z["mask"].astype(bool)
        inter = (p & g).sum(axis=(1, 2))
        return 2 * inter / (p.sum(axis=(1, 2)) + g.sum(axis=(1, 2))), p, g

    base = np.mean([dice_img(rows[0][0], s)[0] for s in range(2)], axis=0)
    for r, (cfg, label, inb, ddsm) in zip(res["rows"][:5], rows):
        per_seed = np.array([dice_img(cfg, s)[0].mean() for s in range(2)]) * 100
        # the library's per-image Dice is float32 (kerasseg.training.metrics.dice_per_image):
        # ~1e-7 relative, i.e. ~1e-5 in percent points, absolute
        assert r["dice_mean"] == pytest.approx(per_seed.mean(), abs=1e-5)
        assert r["dice_mean_std"] == pytest.approx(per_seed.std(ddof=1), abs=1e-5)
        assert (r["paper_inbreast"], r["paper_ddsm"]) == (inb[0], ddsm[0])
        if cfg == rows[0][0]:
            assert r["vs_baseline"] is None
            continue
        mine = np.mean([dice_img(cfg, s)[0] for s in range(2)], axis=0)
        assert r["vs_baseline"]["wilcoxon"]["pvalue"] == pytest.approx(wilcoxon(mine, base).pvalue)
        assert r["vs_baseline"]["bootstrap"]["mean_diff"] == pytest.approx((mine - base).mean())
        tab = np.zeros((2, 2))
        for s in range(2):
            _, pa, g = dice_img(cfg, s)
            _, pb, _ = dice_img(rows[0][0], s)
            ok_a, ok_b = pa == g, pb == g
            tab += [[np.sum(ok_a & ok_b), np.sum(ok_a & ~ok_b)], [np.sum(~ok_a & ok_b), np.sum(~ok_a & ~ok_b)]]
        assert r["vs_baseline"]["mcnemar"]["pvalue"] == pytest.approx(mcnemar(tab, exact=True).pvalue, rel=1e-9)

    # the model-free baselines: independent NumPy recomputation on the same test ROIs
    test = ds.subset("test")
    seen = ds.select(ds.split != "test").masks.astype(np.float64).mean(0) >= 0.5
    g = test.masks.astype(bool)
    prior_img = 2 * (seen & g).sum(axis=(1, 2)) / (seen.sum() + g.sum(axis=(1, 2)))
    from skimage.filters import threshold_otsu

    otsu = np.stack([im > threshold_otsu(im) for im in test.images.astype(np.float64)])
    otsu_img = 2 * (otsu & g).sum(axis=(1, 2)) / (otsu.sum(axis=(1, 2)) + g.sum(axis=(1, 2)))
    by = {r["config"]: r for r in res["rows"]}
    assert by["baseline-prior"]["dice_mean"] == pytest.approx(100 * prior_img.mean(), abs=1e-5)
    assert by["baseline-otsu"]["dice_mean"] == pytest.approx(100 * otsu_img.mean(), abs=1e-5)
    for cfg, *_ in rows:
        mine = np.mean([dice_img(cfg, s)[0] for s in range(2)], axis=0)
        assert by[cfg]["vs_prior"]["wilcoxon"]["pvalue"] == pytest.approx(wilcoxon(mine, prior_img).pvalue)
        assert by[cfg]["vs_prior"]["bootstrap"]["mean_diff"] == pytest.approx((mine - prior_img).mean())

    md = (out / "table.md").read_text()
    assert "93.32 ± 0.12" in md and "90.08 ± 0.62" in md
    assert len([ln for ln in md.splitlines() if ln.startswith("| ")]) == 1 + 5 + 2
    assert "Mean training mask (model-free prior)" in md and "Otsu threshold" in md
    table = list(csv.DictReader(open(out / "table.csv")))
    assert [t["config"] for t in table] == [r[0] for r in rows] + ["baseline-prior", "baseline-otsu"]
    assert float(table[3]["paper_inbreast"]) == 93.66
    assert json.loads((out / "table.json").read_text())["n_seeds"] == 2
    import matplotlib.image as mpimg

    assert mpimg.imread(out / "trimap.png").shape[:2] == (450, 600)
    t1 = [json.loads((out / "runs" / rows[1][0] / f"seed{s}" / "eval-test" / "metrics.json").read_text())
          ["trimap_accuracy"]["2"] for s in range(2)]
    assert res["rows"][1]["trimap_accuracy"]["2"] == pytest.approx(np.mean(t1))

    # resume: nothing is retrained or re-evaluated, the table is the same
    monkeypatch.setattr(R, "_fit", lambda *a: pytest.fail("retrained a finished row"))
    monkeypatch.setattr(R, "_evaluate", lambda *a: pytest.fail("re-evaluated a finished row"))
    res2 = R.reproduce_table("crunet-table1", ds, seeds=2, out_dir=out, verbose=False, progress=False)
    assert [r["dice_mean"] for r in res2["rows"]] == [r["dice_mean"] for r in res["rows"]]
    # a resume with another epoch budget would mix budgets in one table: refused
    with pytest.raises(KerassegError, match="epochs = None"):
        R.reproduce_table("crunet-table1", ds, seeds=2, epochs=3, out_dir=out, verbose=False, progress=False)

    # other data in the same folder is refused (a folds run too)
    other = _data(n_test=8)
    with pytest.raises(KerassegError, match="other data"):
        R.reproduce_table("crunet-table1", other, seeds=2, out_dir=out, verbose=False, progress=False)


def test_reproduce_bad_arguments(tmp_path):
    with pytest.raises(KerassegError, match="unknown table"):
        R.reproduce_table("table9", _data(), out_dir=tmp_path)
    with pytest.raises(KerassegError, match="seeds"):
        R.reproduce_table("zhu-table2", _data(), seeds=0, out_dir=tmp_path)


def test_published_numbers_match_papers():
    """The dict's numbers appear in the paper texts next to the row names."""
    from pathlib import Path

    papers = _REPO.parent / "shared" / "papers"
    if not papers.is_dir():
        pytest.skip("paper texts not available")
    zhu = (papers / "adversarial-fcn-crf-zhu-2018.txt").read_text()
    for _, label, inb, ddsm in R.TABLES["zhu-table2"]["rows"]:
        assert re.search(rf"^{re.escape(label)} {inb[0]:.2f} {ddsm[0]:.2f}$", zhu, re.M), label
    li = (papers / "crunet-li-2018.txt").read_text()
    for _, _, inb, ddsm in R.TABLES["crunet-table1"]["rows"]:
        assert re.search(rf"{inb[0]:.2f} ?± ?{inb[1]:.2f} {ddsm[0]:.2f} ± {ddsm[1]:.2f}", li)


@pytest.mark.slow
def test_reproduce_quick_on_phantom_writes_complete_table(tmp_path):
    from click.testing import CliRunner

    from kerasseg.cli.main import cli

    out = tmp_path / "q"
    res = CliRunner().invoke(cli, ["reproduce", "crunet-table1", "--data", "phantom", "--quick", "--seeds", "1",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    md = (out / "table.md").read_text()
    for _, label, *_ in R.TABLES["crunet-table1"]["rows"]:
        assert label in md
    table = json.loads((out / "table.json").read_text())
    assert [r["config"] for r in table["rows"]] == ([r[0] for r in R.TABLES["crunet-table1"]["rows"]]
                                                    + ["baseline-prior", "baseline-otsu"])
    for r in table["rows"]:
        assert 0.0 <= r["dice_mean"] <= 100.0
        assert r["n_test"] == R.QUICK_COUNTS["test"]
        assert r.get("baseline") or (out / "runs" / r["config"] / "seed0" / "model.keras").is_file()
    assert all(r["vs_baseline"]["mcnemar"]["pvalue"] <= 1.0 for r in table["rows"][1:5])
    assert all(0.0 <= r["vs_prior"]["wilcoxon"]["pvalue"] <= 1.0 for r in table["rows"][:5])


def test_table_with_folds_reports_oof_and_the_ensemble(tmp_path, monkeypatch):
    """--folds: one fold-ensemble report per row, out-of-fold Dice mean ± std (ddof=1) over folds."""
    calls = []
    rows = [r[0] for r in R.TABLES["crunet-table1"]["rows"]]

    def fake_fit_folds(config, data, out_dir, epochs, folds):
        calls.append((config, folds))
        out_dir.mkdir(parents=True, exist_ok=True)
        oof = [0.5 + 0.01 * rows.index(config) + 0.02 * k for k in range(folds)]
        (out_dir / "cv.json").write_text(json.dumps({
            "status": "finished", "per_fold": [{"fold": k + 1, "oof_dice": d} for k, d in enumerate(oof)],
            "oof": {"dice_mean": float(np.mean(oof))}, "postprocessing": {"largest_component": True,
                                                                          "fill_holes": False}}))

    def fake_eval(run_dir, ds, out_dir, figures):
        assert run_dir.name == "cv3"
        test = ds.subset("test")
        return evaluate_arrays(test.masks.astype(np.float32), test.masks, test.ids, out_dir,
                               data_hash=ds.data_hash(), split="test", figures=False, verbose=False)

    monkeypatch.setattr(R, "_fit_folds", fake_fit_folds)
    monkeypatch.setattr(R, "_evaluate", fake_eval)
    monkeypatch.setattr(R, "_fit", lambda *a: pytest.fail("seed runs in folds mode"))
    res = R.reproduce_table("crunet-table1", _data(), seeds=4, folds=3, out_dir=tmp_path / "f",
                            verbose=False, progress=False)
    assert sorted(calls) == sorted((r, 3) for r in rows)
    for r in res["rows"][:5]:
        oof = 100 * np.array([0.5 + 0.01 * rows.index(r["config"]) + 0.02 * k for k in range(3)])
        assert r["oof_dice_mean"] == pytest.approx(oof.mean()) and r["oof_dice_std"] == pytest.approx(oof.std(ddof=1))
        assert r["dice_mean"] == pytest.approx(100.0)
    md = (tmp_path / "f" / "table.md").read_text()
    assert "out-of-fold Dice % (± std over 3 folds)" in md and "fold ensemble" in md
    with pytest.raises(KerassegError, match="folds must be an integer >= 2"):
        R.reproduce_table("crunet-table1", _data(), folds=1, out_dir=tmp_path / "g", verbose=False,
                          progress=False)
