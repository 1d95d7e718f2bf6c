"""What cross-validation ensembles, TTA and post-processing add, on realistic lesions.

Data: ``../shared/data/lesion-dev.npz`` beside the checkout (290 ROIs: 58 real INbreast contours
inserted 5 times each into real mammogram tissue; ``group`` = the contour). Not shipped with the
package: without it this benchmark says so and exits 0.

Protocol (the test ROIs are never used for a choice):

1. whole groups (contours) -> test (``--test-fraction``, seed 0); the rest is the pool;
2. ``kerasseg fit CONFIG --folds K`` on the pool (grouped K-fold: each fold's best epoch chosen
   on its held-out fold; post-processing chosen on the out-of-fold predictions);
3. on the test ROIs: every fold model alone (mean ± std over the K models), the same with
   dihedral TTA, the fold ensemble, ensemble + TTA, ensemble + TTA + the CV's post-processing,
   and the model-free baselines (thresholded mean pool mask, Otsu); paired Wilcoxon signed-rank
   tests on per-ROI Dice against the single model (its per-ROI Dice averaged over the K models)
   and against the prior.

    python -m benchmarks.bench_cv --configs crunet-l067,crunet-unet --folds 5 --epochs 12

Results: ``benchmarks/results/cv.json`` and ``cv.md`` (``--results STEM`` for other names); the fold
runs stay in ``--work``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import atomic_write, machine

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "lesion-dev.npz"
RESULTS = REPO / "benchmarks" / "results"


def lesion_dev_path() -> Path | None:
    """The development set, from $KERASSEG_LESION_DEV or ../shared/data; None if absent."""
    p = Path(os.environ.get("KERASSEG_LESION_DEV", DEFAULT_DATA))
    return p if p.is_file() else None


def split_data(src: Path, dst: Path, test_fraction: float, seed: int = 0) -> Path:
    """lesion-dev with whole groups in test and the rest as train (the CV pool)."""
    from kerasseg.data.dataset import ROIDataset, save_npz
    from kerasseg.data.splits import group_split

    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    split = group_split(arrays["group"], test_fraction, seed)
    ds = ROIDataset(images=arrays["images"], masks=arrays["masks"], split=split, ids=arrays["ids"],
                    group=arrays["group"], source="lesion-dev")
    return save_npz(ds, dst)


def _dice(pred, masks) -> np.ndarray:
    from kerasseg.training.metrics import dice_per_image

    return np.asarray(dice_per_image(np.asarray(pred), np.asarray(masks)), np.float64)


def evaluate_config(folds_dir: Path, data: Path) -> dict:
    """Every variant's per-ROI test Dice and the paired tests."""
    from kerasseg.data.dataset import load_npz
    from kerasseg.evaluation.stats import wilcoxon_dice
    from kerasseg.models.ensemble import ensemble_function, predict_ensemble
    from kerasseg.training.baselines import otsu_masks, prior_mask
    from kerasseg.training.run import load_ensemble_source

    ds = load_npz(data)
    test, pool = ds.subset("test"), ds.select(ds.split != "test")
    src = load_ensemble_source(folds_dir)
    none = {"largest_component": False, "fill_holes": False}

    def run(members, tta, post=none):
        t0 = time.time()
        out = predict_ensemble(ensemble_function(members, tta=tta, postprocessing=post), test.images)
        return _dice(out["mask"], test.masks), time.time() - t0

    single = np.stack([run([m], "none")[0] for m in src.members])          # (K, N)
    single_tta = np.stack([run([m], "dihedral")[0] for m in src.members])
    variants = {
        "single model": single.mean(0),
        "single model + TTA": single_tta.mean(0),
        "fold ensemble": run(src.members, "none")[0],
        "fold ensemble + TTA": run(src.members, "dihedral")[0],
        "fold ensemble + TTA + post-processing": run(src.members, "dihedral", src.postprocessing)[0],
        "prior (mean training mask)": _dice(np.broadcast_to(prior_mask(pool.masks), test.masks.shape), test.masks),
        "Otsu": _dice(otsu_masks(test.images), test.masks),
    }
    rows = []
    for name, d in variants.items():
        row = {"variant": name, "dice_mean": float(d.mean()), "dice_std_rois": float(d.std())}
        if name == "single model":
            per_model = single.mean(1)
            row.update({"dice_mean": float(per_model.mean()), "std_over_models": float(per_model.std())})
        if name == "single model + TTA":
            per_model = single_tta.mean(1)
            row.update({"dice_mean": float(per_model.mean()), "std_over_models": float(per_model.std())})
        if name != "single model":
            row["p_vs_single"] = wilcoxon_dice(d, variants["single model"])["pvalue"]
        if not name.startswith("prior"):
            row["p_vs_prior"] = wilcoxon_dice(d, variants["prior (mean training mask)"])["pvalue"]
        rows.append(row)
    cv = src.cv or {}
    return {"n_test": int(len(test)), "n_test_groups": int(len(set(test.groups().tolist()))),
            "oof": cv.get("oof"), "postprocessing": src.postprocessing,
            "postprocessing_tried": cv.get("postprocessing_tried"), "rows": rows}


def markdown(results: dict) -> str:
    def f(v):
        return "–" if v is None else f"{100 * v:.2f}"

    def p(v):
        return "–" if v is None else (f"{v:.2g}" if v < 0.001 else f"{v:.3f}")

    lines = [f"lesion-dev.npz, {results['folds']}-fold grouped CV on the pool, {results['epochs']} epochs "
             f"per fold; test = {results['test_fraction']:.0%} of the contours (never used for a choice).", ""]
    for cfg, r in results["configs"].items():
        oof = r.get("oof") or {}
        lines += [f"### {cfg}", "",
                  f"Out-of-fold Dice on the pool: {f(oof.get('dice_mean'))} % (per fold "
                  f"{f(oof.get('fold_dice_mean'))} ± {f(oof.get('fold_dice_std'))}); prior "
                  f"{f(oof.get('prior_dice_mean'))} %, Otsu {f(oof.get('otsu_dice_mean'))} %. Post-processing "
                  f"chosen on CV: {[k for k, v in r['postprocessing'].items() if v] or 'none'} "
                  f"(tried: {', '.join(f'{k} {f(v)}' for k, v in (r.get('postprocessing_tried') or {}).items())}).",
                  "", f"Test: {r['n_test']} ROIs from {r['n_test_groups']} contours.", "",
                  "| variant | test Dice % | ± std | p vs single (Wilcoxon) | p vs prior |",
                  "|---|---|---|---|---|"]
        for row in r["rows"]:
            std = row.get("std_over_models")
            lines.append(f"| {row['variant']} | {f(row['dice_mean'])} | "
                         f"{'over models ' + f(std) if std is not None else 'over ROIs ' + f(row['dice_std_rois'])} | "
                         f"{p(row.get('p_vs_single'))} | {p(row.get('p_vs_prior'))} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="crunet-l067,crunet-unet,zhu-adv-multifcn-crf")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--work", default=str(REPO / "runs" / "bench-cv"))
    ap.add_argument("--stage", choices=("train", "eval", "all"), default="all")
    ap.add_argument("--results", default="cv", help="results file stem under benchmarks/results")
    args = ap.parse_args(argv)
    data = lesion_dev_path()
    if data is None:
        print(f"bench_cv skipped: {DEFAULT_DATA} not found (set KERASSEG_LESION_DEV)")
        return 0
    from kerasseg.training.folds import fit_folds

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    split_npz = work / "lesion-dev-split.npz"
    if not split_npz.is_file():
        split_data(data, split_npz, args.test_fraction)
    results = {"machine": machine(), "folds": args.folds, "epochs": args.epochs,
               "test_fraction": args.test_fraction, "configs": {}}
    for cfg in [c for c in args.configs.split(",") if c]:
        folds_dir = work / cfg
        if args.stage in ("train", "all"):
            cv_json = folds_dir / "cv.json"
            done = cv_json.is_file() and json.loads(cv_json.read_text()).get("status") == "finished"
            if not done:
                t0 = time.time()
                res = fit_folds(cfg, str(split_npz), folds_dir, folds=args.folds, epochs=args.epochs,
                                verbose=2)
                print(res.summary(), f"({time.time() - t0:.0f} s)", flush=True)
        if args.stage in ("eval", "all"):
            results["configs"][cfg] = evaluate_config(folds_dir, split_npz)
            print(json.dumps(results["configs"][cfg]["rows"], indent=1), flush=True)
    if args.stage in ("eval", "all"):
        RESULTS.mkdir(exist_ok=True)
        atomic_write(RESULTS / f"{args.results}.json", json.dumps(results, indent=2))
        atomic_write(RESULTS / f"{args.results}.md", markdown(results))
        print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
