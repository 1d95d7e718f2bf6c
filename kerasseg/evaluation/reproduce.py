"""Reproduce the papers' tables: train and evaluate every row for several seeds, then tabulate.

``reproduce_table("crunet-table1" | "zhu-table2", data, seeds=5, epochs=None, quick=False, out_dir=...)``

Layout of the output folder::

    OUT/runs/<config>/seed<k>/            a training run (kerasseg.training.fit)
    OUT/runs/<config>/seed<k>/eval-test/  its evaluation report (metrics.json marks the cell as done)
    OUT/table.md, OUT/table.csv, OUT/table.json, OUT/trimap.png (trimap accuracy of every row)

Rows whose report already exists are skipped (resume). Each row is compared with the table's
baseline (its first row) on the test images: Wilcoxon signed-rank and a paired bootstrap CI on the
per-image Dice averaged over seeds, and McNemar's exact test on the pixel-wise discordant counts
summed over seeds (seed k of a row paired with seed k of the baseline).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kerasseg.errors import KerassegError
from kerasseg.evaluation import metrics as M
from kerasseg.evaluation import stats as S
from kerasseg.evaluation.report import evaluate_run, load_predictions, write_csv, write_json

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


def _finished(run_dir) -> bool:
    """True when ``fit`` completed this run (model.keras and run.json with status "finished")."""
    try:
        status = json.loads((run_dir / "run.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return False
    return status == "finished" and (run_dir / "model.keras").is_file()


def _evaluate(run_dir, ds, out_dir, figures):
    return evaluate_run(run_dir, data=ds, split="test", out_dir=out_dir, figures=figures, verbose=False)


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
                    out_dir=None, verbose=True, progress=True) -> dict:
    """Train and evaluate every row of ``table`` for ``seeds`` seeds; write table.md/.csv/.json.

    ``quick``: a smoke run on a few ROIs (see :data:`QUICK_COUNTS`) with 1 epoch unless
    ``epochs`` is given. Returns the table as a dict.
    """
    from kerasseg.data.dataset import ROIDataset, load_data, save_npz

    if table not in TABLES:
        raise KerassegError(f"unknown table {table!r}; choose one of {sorted(TABLES)}")
    seeds = int(seeds)
    if seeds < 1:
        raise KerassegError(f"--seeds must be at least 1, got {seeds}")
    if epochs is not None and int(epochs) < 1:
        raise KerassegError(f"--epochs must be at least 1, got {epochs}")
    spec = TABLES[table]
    out = Path(out_dir or f"reproduce-{table}")
    from kerasseg.fileio import output_dir

    output_dir(out)

    ds = data if isinstance(data, ROIDataset) else load_data(data)
    data_spec = None if (data is None or str(data) == "phantom") else str(data)
    if quick:
        ds = quick_subset(ds)
        epochs = 1 if epochs is None else epochs
    ds.subset("test")  # clear error if there is no test split
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
    write_json(state, {"table": table, "data_hash": ds.data_hash(), "quick": bool(quick)})
    if isinstance(data, ROIDataset) or quick:
        data_file = out / ("quick-data.npz" if quick else "data.npz")
        if not data_file.is_file():
            save_npz(ds, data_file)
        data_spec = str(data_file)

    cells = [(row, s) for row, *_ in spec["rows"] for s in range(seeds)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(cells), desc=f"reproduce {table}", unit="run")
    for row, s in cells:
        run_dir = out / "runs" / row / f"seed{s}"
        rep = run_dir / "eval-test"
        if bar is not None:
            bar.set_postfix_str(f"{row} seed {s}")
        if not (rep / "metrics.json").is_file():
            if not _finished(run_dir):
                _fit(row, data_spec, run_dir, epochs, s)
            _evaluate(run_dir, ds, rep, not quick)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()

    result = tabulate(table, out, seeds)
    result.update({"data": data_spec or "phantom", "data_hash": ds.data_hash(), "quick": bool(quick),
                   "epochs": epochs})
    write_tables(result, out)
    if verbose:
        print((out / "table.md").read_text())
    return result


def tabulate(table: str, out, seeds: int) -> dict:
    """Collect the reports under ``out/runs`` into the table dict (with paired tests vs row 1)."""
    spec = TABLES[table]
    out = Path(out)
    rows = []
    preds = {}
    for row, label, inb, ddsm in spec["rows"]:
        per_seed, dice_img, pr = [], [], []
        for s in range(seeds):
            rep = out / "runs" / row / f"seed{s}" / "eval-test"
            m = json.loads((rep / "metrics.json").read_text())
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
        })
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
    for r in rows:
        r["n_test"] = int(r.pop("_dice_img").size)
    return {"table": table, "title": spec["title"], "paper_metric": spec["metric"], "n_seeds": seeds,
            "rows": rows}


def write_tables(result: dict, out) -> None:
    """table.md, table.csv and table.json for a :func:`tabulate` result."""
    out = Path(out)
    n = result["n_seeds"]
    spread = f" (± std over {n} seeds)" if n > 1 else " (1 seed)"
    head = ["Method", "config", f"Dice % per-image mean{spread}", f"Dice % pooled{spread}",
            "paper INbreast", "paper DDSM-BCRP", "Δ Dice vs baseline (pp)", "95% CI (pp)",
            "Wilcoxon p", "McNemar p"]
    md = [f"# {result['title']}", "",
          f"Ours: data `{result.get('data', '')}` (hash {result.get('data_hash', '')}), "
          f"{n} seed(s){', QUICK smoke run' if result.get('quick') else ''}. "
          f"The paper's numbers are {'per-image mean' if result['paper_metric'] == 'dice_mean' else 'pooled'} "
          "Dice. Paired tests are against the first row on the test ROIs.", "",
          "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    csv_rows = []
    for r in result["rows"]:
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
                 "baseline" if diff is None else f"{diff:+.2f}",
                 "–" if ci is None else f"[{ci[0]:+.2f}, {ci[1]:+.2f}]", _p(pw), _p(pm)]
        md.append("| " + " | ".join(cells) + " |")
        csv_rows.append([r["row"], r["config"], f"{r['dice_mean']:.4f}", f"{r['dice_mean_std']:.4f}",
                         f"{r['dice_pooled']:.4f}", f"{r['dice_pooled_std']:.4f}",
                         r["paper_inbreast"], "" if r["paper_inbreast_std"] is None else r["paper_inbreast_std"],
                         r["paper_ddsm"], "" if r["paper_ddsm_std"] is None else r["paper_ddsm_std"],
                         "" if diff is None else f"{diff:.4f}",
                         "" if ci is None else f"{ci[0]:.4f}", "" if ci is None else f"{ci[1]:.4f}",
                         "" if pw is None else f"{pw:.6g}", "" if pm is None else f"{pm:.6g}",
                         len(r["seeds"])])
    from kerasseg.evaluation.report import _atomic

    _atomic(out / "table.md", lambda fh: fh.write("\n".join(md) + "\n"))
    write_csv(out / "table.csv",
              ["method", "config", "dice_mean", "dice_mean_std", "dice_pooled", "dice_pooled_std",
               "paper_inbreast", "paper_inbreast_std", "paper_ddsm", "paper_ddsm_std",
               "diff_vs_baseline", "ci_low", "ci_high", "wilcoxon_p", "mcnemar_p", "n_seeds"], csv_rows)
    write_json(out / "table.json", result)
    from kerasseg.evaluation.plots import trimap_curves

    trimap_curves({r["row"]: r["trimap_accuracy"] for r in result["rows"]}, out / "trimap.png",
                  size=(6.0, 4.5))
