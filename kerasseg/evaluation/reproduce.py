"""Reproduce the papers' tables: train and evaluate every row for several seeds, then tabulate.

``reproduce_table("crunet-table1" | "zhu-table2", data, seeds=5, epochs=None, quick=False, out_dir=...)``

Layout of the output folder::

    OUT/runs/<config>/seed<k>/            a training run (kerasseg.training.fit)
    OUT/runs/<config>/seed<k>/eval-test/  its evaluation report (metrics.json marks the cell as done)
    OUT/table.md, OUT/table.csv, OUT/table.json, OUT/trimap.png (trimap accuracy of every row)

With ``folds=K`` every row is instead trained as a grouped K-fold cross-validation on the train
and val ROIs (``OUT/runs/<config>/cv<K>/``, :mod:`kerasseg.training.folds`): the table shows its
out-of-fold Dice (mean ± std over the K folds) and the fold ensemble's test Dice.

Every table ends with the model-free baselines on the same test ROIs: the mean mask of the train and
val ROIs thresholded at 0.5 (a pure position prior) and per-ROI Otsu thresholding; every model row
gets a paired Wilcoxon test and bootstrap CI against the prior.

When the data file has context windows (:mod:`kerasseg.data.boxes`), every report also holds
the robustness table of ``kerasseg evaluate --robustness`` and every row of the table gets its
worst Dice over the box margins :data:`WORST_MARGINS` (0 to 0.3 per side, shift 0; per margin the
mean over seeds, then the minimum over margins; the baseline rows at the same boxes). Without
windows the column says n/a and the table says why, once.

Rows whose report already exists are skipped (resume). Each row is compared with the table's
baseline (its first row) on the test images: Wilcoxon signed-rank and a paired bootstrap CI on the
per-image Dice averaged over seeds, and McNemar's exact test on the pixel-wise discordant counts
summed over seeds (seed k of a row paired with seed k of the baseline).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kerasseg.errors import KerassegError, argument_error
from kerasseg.evaluation import metrics as M
from kerasseg.evaluation import stats as S
from kerasseg.evaluation.compare import load_predictions
from kerasseg.data.boxes import ROBUSTNESS_MARGINS
from kerasseg.evaluation.report import evaluate_run
from kerasseg.fileio import write_csv, write_json

# Published Dice (%) per row: (INbreast, DDSM-BCRP), each (mean, std or None).
TABLES: dict = {
    "crunet-table1": {
        "title": "Li et al. 2018 (CRU-Net), Table 1: Dice (DI, %) on the test sets",
        "metric": "dice_mean",
        "rows": [
            ("crunet-unet", "U-Net", (92.99, 0.23), (90.08, 0.62)),
            ("crunet-l0", "CRU-Net (λ = 0)", (92.72, 0.09), (91.43, 0.02)),
            ("crunet-l1", "CRU-Net (λ = 1)", (92.60, 0.24), (91.41, 0.02)),
            ("crunet-nor-l067", "CRU-Net, No R (λ = 0.67)", (93.66, 0.10), (91.14, 0.09)),
            ("crunet-l067", "CRU-Net (λ = 0.67)", (93.32, 0.12), (90.95, 0.26)),
        ],
    },
    "zhu-table2": {
        "title": "Zhu et al. 2018 (adversarial FCN-CRF), Table 2: Dice (%) on the test sets",
        "metric": "dice_pooled",
        "rows": [
            ("zhu-fcn", "FCN", (89.48, None), (90.21, None)),
            ("zhu-adv-fcn", "Adversarial FCN", (89.71, None), (90.78, None)),
            ("zhu-fcn-crf", "Joint FCN-CRF", (89.78, None), (90.97, None)),
            ("zhu-adv-fcn-crf", "Adversarial FCN-CRF", (90.07, None), (91.03, None)),
            ("zhu-multifcn", "Multi-FCN", (90.47, None), (91.17, None)),
            ("zhu-adv-multifcn", "Adversarial multi-FCN", (90.71, None), (91.20, None)),
            ("zhu-multifcn-crf", "Joint multi-FCN-CRF", (90.76, None), (91.26, None)),
            ("zhu-adv-multifcn-crf", "Adversarial multi-FCN-CRF", (90.97, None), (91.30, None)),
        ],
    },
}

QUICK_COUNTS = {"train": 8, "val": 4, "test": 8}
#: the box margins of the "worst Dice over margins" column (shift 0)
WORST_MARGINS = tuple(m for m in ROBUSTNESS_MARGINS if m <= 0.3)
NO_WINDOWS = ("the data file has no context windows around the boxes, so no other box can be cut "
              "(re-run `kerasseg data prepare`, which writes them)")


def quick_subset(ds, counts=QUICK_COUNTS):
    """The first few ROIs of each split (a tiny dataset for smoke runs)."""
    keep = np.zeros(len(ds), bool)
    for split, n in counts.items():
        idx = np.flatnonzero(ds.split == split)[:n]
        keep[idx] = True
    if not (ds.split[keep] == "test").any() or not (ds.split[keep] == "train").any():
        raise KerassegError("the dataset needs 'train' and 'test' ROIs for a reproduction")
    return ds.select(keep)


# Indirections so that tests can replace training by something fast.
def _fit(config, data, out_dir, epochs, seed):
    from kerasseg.training import fit

    return fit(config, data, out_dir, epochs=epochs, seed=seed)


def _fit_folds(config, data, out_dir, epochs, folds):
    from kerasseg.training.folds import fit_folds

    return fit_folds(config, data, out_dir, folds=folds, epochs=epochs, seed=0, verbose=0)


def _cv_finished(folds_dir) -> bool:
    try:
        return json.loads((folds_dir / "cv.json").read_text()).get("status") == "finished"
    except (OSError, ValueError, AttributeError):
        return False


def _report_dirs(out: Path, row: str, seeds: int, folds) -> list:
    """The evaluation report folder(s) of a row: one per seed, or the fold ensemble's."""
    if folds:
        return [out / "runs" / row / f"cv{int(folds)}" / "eval-test"]
    return [out / "runs" / row / f"seed{s}" / "eval-test" for s in range(seeds)]


def baselines(ds, margin: float = 0.0, views=None) -> dict:
    """The model-free baselines on the test ROIs of ``ds``: per-image Dice and predicted masks.

    ``prior``: the mean mask of the train and val ROIs (everything a model may learn from)
    thresholded at 0.5; ``otsu``: per-ROI Otsu thresholding. ``margin``: every ROI (train, val and
    test) cut at its tight box grown by that margin (:func:`kerasseg.data.boxes.box_view`; 0: the
    ROIs of ``ds`` themselves); ``views``: a cache of the crops
    (:func:`kerasseg.evaluation.report.cached_view`).
    """
    from kerasseg.evaluation.report import cached_view
    from kerasseg.training.baselines import otsu_masks, prior_mask

    ds = cached_view(ds, margin, 0.0, 0, views)
    test = ds.subset("test")
    seen = ds.select(ds.split != "test")
    preds = {"prior": np.broadcast_to(prior_mask(seen.masks), test.masks.shape).astype(np.uint8),
             "otsu": otsu_masks(test.images).astype(np.uint8)}
    return {k: {"pred": p, "mask": test.masks, "ids": test.ids,
                "dice_img": np.array([M.dice(a, b) for a, b in zip(p, test.masks)])}
            for k, p in preds.items()}


BASELINE_ROWS = (("prior", "Mean training mask (model-free prior)"), ("otsu", "Otsu threshold (model-free)"))


def _finished(run_dir) -> bool:
    """True when ``fit`` completed this run (model.keras and run.json with status "finished")."""
    try:
        status = json.loads((run_dir / "run.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return False
    return status == "finished" and (run_dir / "model.keras").is_file()


#: the crops at other boxes of the data being reproduced (kerasseg.evaluation.report.cached_view):
#: cut once per reproduce_table call, not once per row and seed
_VIEWS: dict = {}


def _evaluate(run_dir, ds, out_dir, figures):
    # with context windows the report also scores the model at other boxes (worst Dice over margins)
    return evaluate_run(run_dir, data=ds, split="test", out_dir=out_dir, figures=figures, verbose=False,
                        robustness=ds.has_context, views=_VIEWS if ds.has_context else None)


def _fmt(mean, std=None, digits=2):
    if mean is None:
        return "–"
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _p(v):
    if v is None:
        return "–"
    if v == 0:
        return "< 1e-300"
    return f"{v:.2g}" if v < 0.001 else f"{v:.3f}"


def reproduce_table(table: str, data="phantom", *, seeds: int = 5, epochs=None, quick=False,
                    out_dir=None, verbose=True, progress=True, folds=None) -> dict:
    """Train and evaluate every row of ``table`` for ``seeds`` seeds; write table.md/.csv/.json.

    ``quick``: a smoke run on a few ROIs (see :data:`QUICK_COUNTS`) with 1 epoch unless
    ``epochs`` is given. ``folds``: K-fold cross-validation per row instead of seeds (see the
    module docstring). Returns the table as a dict.
    """
    from kerasseg.data.dataset import ROIDataset, save_npz
    from kerasseg.data.sources import load_data

    if table not in TABLES:
        raise KerassegError(f"unknown table {table!r}; choose one of {sorted(TABLES)}")
    seeds = int(seeds)
    if seeds < 1:
        raise argument_error("seeds", f"must be at least 1, got {seeds}")
    if epochs is not None and int(epochs) < 1:
        raise argument_error("epochs", f"must be at least 1, got {epochs}")
    spec = TABLES[table]
    out = Path(out_dir or f"reproduce-{table}")
    from kerasseg.fileio import output_dir

    output_dir(out, create=False)  # checked before the data loads, created after
    ds = data if isinstance(data, ROIDataset) else load_data(data)
    data_spec = None if (data is None or str(data) == "phantom") else str(data)
    if quick:
        ds = quick_subset(ds)
        epochs = 1 if epochs is None else epochs
    ds.subset("test")  # clear error if there is no test split
    if folds is not None and (isinstance(folds, bool) or int(folds) != folds or folds < 2):
        raise argument_error("folds", f"must be an integer >= 2, got {folds!r}")
    if folds:
        seeds = 1   # one fold ensemble per row; the spread is over folds
    output_dir(out)
    state = out / "reproduce.json"
    if state.is_file():
        try:
            old = json.loads(state.read_text())
        except (OSError, ValueError):
            old = {}
        if old.get("data_hash") not in (None, ds.data_hash()) or old.get("table") not in (None, table):
            raise KerassegError(
                f"this folder holds a reproduction of {old.get('table')} on other data (hash "
                f"{old.get('data_hash')}, now {ds.data_hash()}); use another --out", out)
        # one epoch budget per table: a resume with another --epochs would mix budgets in one table
        for key, now in (("epochs", epochs), ("folds", folds)):
            if key in old and old[key] != now:
                raise KerassegError(f"this folder holds a reproduction with {key} = {old[key]!r} (now "
                                    f"{now!r}); resume with the same {key} or use another --out", out)
    write_json(state, {"table": table, "data_hash": ds.data_hash(), "quick": bool(quick), "folds": folds,
                       "epochs": epochs})
    if isinstance(data, ROIDataset) or quick:
        data_file = out / ("quick-data.npz" if quick else "data.npz")
        if not data_file.is_file():
            save_npz(ds, data_file)
        data_spec = str(data_file)

    _VIEWS.clear()   # views of this call's data only
    try:
        return _run_cells(table, spec, ds, out, seeds, epochs, folds, quick, data_spec, progress, verbose)
    finally:
        _VIEWS.clear()


def _run_cells(table, spec, ds, out, seeds, epochs, folds, quick, data_spec, progress, verbose) -> dict:
    """Train and evaluate the missing cells of a reproduction, then tabulate (reproduce_table's body)."""
    cells = [(row, s, rep) for row, *_ in spec["rows"] for s, rep in enumerate(_report_dirs(out, row, seeds, folds))]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(cells), desc=f"reproduce {table}", unit="row" if folds else "run")
    for row, s, rep in cells:
        run_dir = rep.parent
        if bar is not None:
            bar.set_postfix_str(f"{row} {f'{folds} folds' if folds else f'seed {s}'}")
        if not (rep / "metrics.json").is_file():
            if folds and not _cv_finished(run_dir):
                _fit_folds(row, data_spec, run_dir, epochs, folds)
            elif not folds and not _finished(run_dir):
                _fit(row, data_spec, run_dir, epochs, s)
            _evaluate(run_dir, ds, rep, not quick)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()

    if ds.has_context:
        worst = {"margins": WORST_MARGINS,
                 "baselines": {m: baselines(ds, m, views=_VIEWS) for m in WORST_MARGINS}}
    else:
        worst = {"margins": WORST_MARGINS, "reason": NO_WINDOWS}
    result = tabulate(table, out, seeds, baselines=baselines(ds), folds=folds, worst=worst)
    result.update({"data": data_spec or "phantom", "data_hash": ds.data_hash(), "quick": bool(quick),
                   "epochs": epochs})
    write_tables(result, out)
    if verbose:
        print((out / "table.md").read_text())
    return result


def tabulate(table: str, out, seeds: int, baselines=None, folds=None, worst=None) -> dict:
    """Collect the reports under ``out/runs`` into the table dict (with paired tests vs row 1 and,
    given :func:`baselines`, vs the model-free prior, whose rows are appended).

    ``worst``: ``{"margins": (...), "baselines": {margin: baselines(ds, margin)}}`` adds every row's
    worst Dice over those box margins (``dice_worst_margin`` %, ``worst_margin``, ``dice_by_margin``;
    a model row from its reports' robustness tables), or ``{"margins": ..., "reason": why not}``:
    those keys are None and ``result["worst_margin"]["reason"]`` says why.
    """
    spec = TABLES[table]
    out = Path(out)
    rows = []
    preds = {}
    for row, label, inb, ddsm in spec["rows"]:
        per_seed, dice_img, pr, robust = [], [], [], []
        for s, rep in enumerate(_report_dirs(out, row, seeds, folds)):
            m = json.loads((rep / "metrics.json").read_text())
            robust.append(m.get("robustness"))
            p = load_predictions(rep)
            per_seed.append({"seed": s, "dice_mean": m["dice_mean"], "dice_pooled": m["dice_pooled"],
                             "hd95_px_mean": m["hd95_px_mean"], "trimap_accuracy": m["trimap_accuracy"],
                             "data_hash": m["data_hash"]})
            dice_img.append([M.dice(a, b) for a, b in zip(p["pred"], p["mask"])])
            pr.append(p)
        preds[row] = pr
        dm = np.array([r["dice_mean"] for r in per_seed]) * 100
        dp = np.array([r["dice_pooled"] for r in per_seed]) * 100
        sd = (lambda a: float(a.std(ddof=1)) if a.size > 1 else 0.0)
        trimap = {}
        for w in (str(k) for k in M.TRIMAP_WIDTHS):
            vals = [r["trimap_accuracy"].get(w) for r in per_seed]
            trimap[w] = None if any(v is None for v in vals) else float(np.mean(vals))
        rows.append({
            "config": row, "row": label, "trimap_accuracy": trimap,
            "dice_mean": float(dm.mean()), "dice_mean_std": sd(dm),
            "dice_pooled": float(dp.mean()), "dice_pooled_std": sd(dp),
            "paper_inbreast": inb[0], "paper_inbreast_std": inb[1],
            "paper_ddsm": ddsm[0], "paper_ddsm_std": ddsm[1],
            "seeds": per_seed, "_dice_img": np.mean(np.array(dice_img), axis=0),
            **_worst_from_reports(robust, worst),
        })
        if folds:
            cv = json.loads((out / "runs" / row / f"cv{int(folds)}" / "cv.json").read_text())
            oof = np.array([f["oof_dice"] for f in cv["per_fold"]]) * 100
            rows[-1].update({"oof_dice_mean": float(oof.mean()), "oof_dice_std": float(oof.std(ddof=1)),
                             "oof_dice_pooled_rois": 100 * cv["oof"]["dice_mean"],
                             "postprocessing": cv["postprocessing"]})
    hashes = {r["data_hash"] for row in rows for r in row["seeds"]}
    if len(hashes) != 1:
        raise KerassegError(f"the runs under {out} were evaluated on different data ({sorted(hashes)})")
    base = rows[0]
    for r in rows:
        if r is base:
            r["vs_baseline"] = None
        else:
            b = c = 0
            for pa, pb in zip(preds[r["config"]], preds[base["config"]]):
                if not np.array_equal(pa["ids"], pb["ids"]):
                    raise KerassegError(f"{r['config']} and {base['config']} were tested on different ROIs")
                bb, cc = S.discordant_counts(pa["pred"], pb["pred"], pa["mask"])
                b, c = b + bb, c + cc
            r["vs_baseline"] = {
                "baseline": base["config"],
                "mcnemar": S.mcnemar_exact_from_counts(b, c),
                "wilcoxon": S.wilcoxon_dice(r["_dice_img"], base["_dice_img"]),
                "bootstrap": S.bootstrap_ci(r["_dice_img"], base["_dice_img"], seed=0),
            }
    if baselines is not None:
        prior = baselines["prior"]
        for r in rows:
            if not np.array_equal(preds[r["config"]][0]["ids"], prior["ids"]):
                raise KerassegError(f"{r['config']} was tested on other ROIs than the data's test split")
            r["vs_prior"] = {"wilcoxon": S.wilcoxon_dice(r["_dice_img"], prior["dice_img"]),
                             "bootstrap": S.bootstrap_ci(r["_dice_img"], prior["dice_img"], seed=0)}
        for key, label in BASELINE_ROWS:
            b = baselines[key]
            dm = 100 * float(b["dice_img"].mean())
            rows.append({"config": f"baseline-{key}", "row": label, "baseline": True,
                         "trimap_accuracy": {str(w): v for w, v in M.trimap_accuracy(b["pred"], b["mask"]).items()},
                         "dice_mean": dm, "dice_mean_std": 0.0,
                         "dice_pooled": 100 * M.pooled_dice(b["pred"], b["mask"]), "dice_pooled_std": 0.0,
                         "paper_inbreast": None, "paper_inbreast_std": None, "paper_ddsm": None,
                         "paper_ddsm_std": None, "seeds": [], "vs_baseline": None, "vs_prior": None,
                         "_dice_img": b["dice_img"], **_worst_of_baseline(key, worst)})
    for r in rows:
        r["n_test"] = int(r.pop("_dice_img").size)
    info = None
    if worst is not None:
        reason = worst.get("reason")
        if reason is None and any(r["dice_worst_margin"] is None for r in rows):
            reason = ("some reports were made without the robustness table (evaluated before it "
                      "existed); delete their eval-test folders and run again to score them")
        info = {"margins": [float(m) for m in worst["margins"]], "shift": 0.0, "reason": reason,
                "definition": "per margin: the mean over seeds of the per-image mean Dice (%) at the "
                              "tight box grown by that margin per side; the column is the minimum "
                              "over margins (the baseline rows at the same boxes)"}
    return {"table": table, "title": spec["title"], "paper_metric": spec["metric"], "n_seeds": seeds,
            "folds": folds, "rows": rows, "worst_margin": info}


def _worst(by_margin: dict) -> dict:
    """The worst-margin keys of a row from ``{margin: Dice %}`` (None values: not available)."""
    if not by_margin or any(v is None for v in by_margin.values()):
        return {"dice_worst_margin": None, "worst_margin": None, "dice_by_margin": None}
    m = min(by_margin, key=lambda k: (by_margin[k], k))
    return {"dice_worst_margin": float(by_margin[m]), "worst_margin": float(m),
            "dice_by_margin": {f"{k:g}": float(v) for k, v in by_margin.items()}}


def _worst_from_reports(robust: list, worst) -> dict:
    """A model row's worst Dice over ``worst["margins"]`` from its reports' robustness tables
    (mean over seeds per margin)."""
    if worst is None or worst.get("reason"):
        return _worst({})
    by_margin = {}
    for margin in worst["margins"]:
        vals = []
        for table in robust:
            entry = next((e for e in (table or {}).get("by_margin", ())
                          if abs(e["margin"] - margin) < 1e-9 and e["shift"] == 0), None)
            vals.append(None if entry is None else entry["model_dice_mean"])
        by_margin[margin] = None if any(v is None for v in vals) else 100 * float(np.mean(vals))
    return _worst(by_margin)


def _worst_of_baseline(key: str, worst) -> dict:
    if worst is None or worst.get("reason"):
        return _worst({})
    return _worst({m: 100 * float(worst["baselines"][m][key]["dice_img"].mean()) for m in worst["margins"]})


def _margins(worst: dict) -> str:
    ms = worst["margins"]
    return f"{min(ms):g}–{max(ms):g}"


def write_tables(result: dict, out) -> None:
    """table.md, table.csv and table.json for a :func:`tabulate` result."""
    out = Path(out)
    n = result["n_seeds"]
    folds = result.get("folds")
    spread = (" (fold ensemble)" if folds else f" (± std over {n} seeds)" if n > 1 else " (1 seed)")
    head = ["Method", "config", f"Dice % per-image mean{spread}", f"Dice % pooled{spread}",
            "paper INbreast", "paper DDSM-BCRP", "Δ Dice vs row 1 (pp)", "95% CI (pp)",
            "Wilcoxon p", "McNemar p", "Δ vs prior (pp)", "Wilcoxon p vs prior"]
    worst = result.get("worst_margin")
    if worst is not None:
        head.append(f"worst Dice % over box margins {_margins(worst)}")
    if folds:
        head.insert(2, f"out-of-fold Dice % (± std over {folds} folds)")
    md = [f"# {result['title']}", "",
          f"Ours: data `{result.get('data', '')}` (hash {result.get('data_hash', '')}), "
          + (f"{folds}-fold grouped cross-validation per row (out-of-fold Dice on the train+val ROIs; "
             "the test columns are the fold ensemble's)" if folds else f"{n} seed(s)")
          + f"{', QUICK smoke run' if result.get('quick') else ''}. "
          f"The paper's numbers are {'per-image mean' if result['paper_metric'] == 'dice_mean' else 'pooled'} "
          "Dice. Paired tests are against the first row and against the model-free prior (the mean "
          "train+val mask) on the test ROIs; the last rows are the model-free baselines.", "",
          "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    csv_rows = []
    for r in result["rows"]:
        vp = r.get("vs_prior")
        prior_cells = (["–", "–"] if not vp else
                       [f"{100 * vp['bootstrap']['mean_diff']:+.2f}", _p(vp["wilcoxon"]["pvalue"])])
        vs = r["vs_baseline"]
        if vs is None:
            diff = ci = pw = pm = None
        else:
            bs = vs["bootstrap"]
            diff = 100 * bs["mean_diff"]
            ci = (100 * bs["ci_low"], 100 * bs["ci_high"])
            pw, pm = vs["wilcoxon"]["pvalue"], vs["mcnemar"]["pvalue"]
        one = n == 1   # no spread to show with a single seed
        cells = [r["row"], r["config"], _fmt(r["dice_mean"], None if one else r["dice_mean_std"]),
                 _fmt(r["dice_pooled"], None if one else r["dice_pooled_std"]),
                 _fmt(r["paper_inbreast"], r["paper_inbreast_std"]), _fmt(r["paper_ddsm"], r["paper_ddsm_std"]),
                 ("–" if r.get("baseline") else "row 1") if diff is None else f"{diff:+.2f}",
                 "–" if ci is None else f"[{ci[0]:+.2f}, {ci[1]:+.2f}]", _p(pw), _p(pm)] + prior_cells
        if worst is not None:
            cells.append("n/a" if r.get("dice_worst_margin") is None else
                         f"{r['dice_worst_margin']:.2f} (at {r['worst_margin']:g})")
        if folds:
            cells.insert(2, "–" if r.get("baseline") else _fmt(r["oof_dice_mean"], r["oof_dice_std"]))
        md.append("| " + " | ".join(cells) + " |")
        csv_rows.append([r["row"], r["config"], f"{r['dice_mean']:.4f}", f"{r['dice_mean_std']:.4f}",
                         f"{r['dice_pooled']:.4f}", f"{r['dice_pooled_std']:.4f}",
                         r["paper_inbreast"], "" if r["paper_inbreast_std"] is None else r["paper_inbreast_std"],
                         r["paper_ddsm"], "" if r["paper_ddsm_std"] is None else r["paper_ddsm_std"],
                         "" if diff is None else f"{diff:.4f}",
                         "" if ci is None else f"{ci[0]:.4f}", "" if ci is None else f"{ci[1]:.4f}",
                         "" if pw is None else f"{pw:.6g}", "" if pm is None else f"{pm:.6g}",
                         len(r["seeds"]),
                         "" if not vp else f"{100 * vp['bootstrap']['mean_diff']:.4f}",
                         "" if not vp else f"{vp['wilcoxon']['pvalue']:.6g}",
                         "" if r.get("oof_dice_mean") is None else f"{r['oof_dice_mean']:.4f}",
                         "" if r.get("oof_dice_std") is None else f"{r['oof_dice_std']:.4f}",
                         "" if r.get("dice_worst_margin") is None else f"{r['dice_worst_margin']:.4f}",
                         "" if r.get("worst_margin") is None else f"{r['worst_margin']:g}"])
    if worst is not None:
        md += ["", f"Worst Dice over box margins {_margins(worst)}: the tight box grown by each margin "
                   "per side (shift 0), Dice averaged over seeds per margin, the lowest shown with its "
                   "margin (`kerasseg evaluate --robustness` has the full curves)."
               + ("" if not worst.get("reason") else f" n/a: {worst['reason']}.")]
    from kerasseg.fileio import atomic_write

    atomic_write(out / "table.md", lambda fh: fh.write("\n".join(md) + "\n"), "w")
    write_csv(out / "table.csv",
              ["method", "config", "dice_mean", "dice_mean_std", "dice_pooled", "dice_pooled_std",
               "paper_inbreast", "paper_inbreast_std", "paper_ddsm", "paper_ddsm_std",
               "diff_vs_baseline", "ci_low", "ci_high", "wilcoxon_p", "mcnemar_p", "n_seeds",
               "diff_vs_prior", "wilcoxon_p_vs_prior", "oof_dice_mean", "oof_dice_std",
               "dice_worst_margin", "worst_margin"], csv_rows)
    write_json(out / "table.json", result)
    from kerasseg.evaluation.plots import trimap_curves

    trimap_curves({r["row"]: r["trimap_accuracy"] for r in result["rows"]}, out / "trimap.png",
                  size=(6.0, 4.5))
