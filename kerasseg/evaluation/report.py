"""Evaluation reports: ``evaluate_run`` (a trained run -> report folder) and ``compare_reports``.

A report folder (Contract 5) holds

- ``metrics.json``   summary numbers (keys in :data:`METRIC_KEYS`, documented in docs/evaluation.md)
- ``per_image.csv``  one row per ROI: id, dice, iou, sensitivity, precision, hd95_px, hd95_mm, areas
- ``predictions.npz`` ids, prob (N,H,W) float32 (mass probability), pred uint8, mask uint8, data_hash
- ``dice_hist.png``, ``contours.png``, ``trimap.png``

Every file is written atomically (temporary name beside the target, then rename).
"""

from __future__ import annotations

import csv
import io
import json
import time
import zipfile
from pathlib import Path

import numpy as np

from kerasseg.errors import KerassegError
from kerasseg.fileio import atomic_write
from kerasseg.evaluation import metrics as M
from kerasseg.evaluation import plots
from kerasseg.evaluation import stats as S
from kerasseg.training.metrics import THRESHOLD, binarize  # the one threshold

METRIC_KEYS = ("dice_mean", "dice_std", "dice_pooled", "iou_mean", "hd95_px_mean", "hd95_mm_mean",
               "sensitivity_mean", "precision_mean", "trimap_accuracy", "n", "split", "data_hash")
FIGURES = ("dice_hist.png", "contours.png", "trimap.png")
DEFINITIONS = {
    "dice_mean": "mean over ROIs of the per-image Dice 2TP/(2TP+FP+FN) (CRU-Net's DI)",
    "dice_std": "population standard deviation (ddof=0) of the per-image Dice",
    "dice_pooled": "Dice of TP/FP/FN summed over all pixels of the split (what Zhu et al.'s code reports)",
    "hd95": "95th percentile of the symmetric boundary-to-boundary distances; "
            "both masks empty -> 0, one empty -> image diagonal",
    "empty": "0/0 ratios are 1 when prediction and ground truth are both empty, else 0",
    "trimap_accuracy": "pixel accuracy within w px of the ground-truth boundary on either side "
                       "(w = 1..5), pooled over ROIs; null if no ROI has a boundary",
    "threshold": "mass where the final output's channel 1 >= 0.5",
}


# ------------------------------------------------------------------ atomic files
def _atomic(path, write_fn, mode="w"):
    return atomic_write(path, write_fn, mode)


def _json_safe(obj):
    """``obj`` with every NaN/inf float replaced by ``None`` (valid JSON: ``null``)."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)) and not np.isfinite(obj):
        return None
    return obj


def write_json(path, obj) -> Path:
    """JSON (indented) written atomically; non-finite numbers become ``null`` (strict JSON)."""
    text = json.dumps(_json_safe(obj), indent=2, sort_keys=False, allow_nan=False)
    return _atomic(path, lambda fh: fh.write(text + "\n"))


def write_csv(path, header, rows) -> Path:
    """CSV written atomically."""
    def w(fh):
        wr = csv.writer(fh)
        wr.writerow(header)
        wr.writerows(rows)
    return _atomic(path, w)


def write_npz(path, **arrays) -> Path:
    """Compressed .npz written atomically."""
    return _atomic(path, lambda fh: np.savez_compressed(fh, **arrays), mode="wb")


def _make_dir(out_dir) -> Path:
    from kerasseg.fileio import output_dir

    return output_dir(out_dir, "report folder")


# ------------------------------------------------------------------ inference
def predict_probabilities(model, images, batch_size=32, verbose=True) -> tuple[np.ndarray, str]:
    """Mass probability maps (N,H,W) float32 of raw ROIs (N,H,W) through the one inference graph
    (:func:`kerasseg.models.segmenter.segment_function`, the same one export serves), and the
    output key used."""
    from kerasseg.models.segmenter import predict_probability, segment_function

    fn = segment_function(model)
    return predict_probability(fn, images, batch_size=batch_size, progress=verbose), fn.final_key


def _default_data(config, run_dir):
    """The data spec recorded by training (run.json / config), else the phantom."""
    if run_dir is not None and (run_dir / "run.json").is_file():
        try:
            info = json.loads((run_dir / "run.json").read_text())
        except (OSError, ValueError):
            info = {}
        for key in ("data", "data_path", "data_spec"):
            spec = info.get(key)
            if isinstance(spec, str) and spec:
                return spec
    spec = config.get("data_spec") or (config.get("data") if isinstance(config.get("data"), str) else None)
    return spec or "phantom"


# ------------------------------------------------------------------ evaluate
def evaluate_arrays(prob, masks, ids, out_dir, *, images=None, spacing_mm=None, split="test",
                    data_hash="", model_label="", run=None, final_output="", extra=None,
                    figures=True, verbose=True, pred=None, uncertainty=None) -> dict:
    """Write a complete report from probability maps and masks; returns the metrics dict.

    ``pred``: the predicted masks when they are not just ``binarize(prob)`` (an ensemble's
    post-processed masks); ``uncertainty``: per-pixel std over ensemble members x TTA transforms
    (saved in predictions.npz and drawn as ``uncertainty.png``).
    """
    prob = np.asarray(prob, np.float32)
    masks = np.asarray(masks).astype(np.uint8)
    ids = np.asarray(ids).astype(str)
    if prob.shape != masks.shape or prob.ndim != 3:
        raise KerassegError(f"probabilities {prob.shape} and masks {masks.shape} must both be (N, H, W)")
    if len(ids) != len(prob):
        raise KerassegError(f"{len(ids)} ids for {len(prob)} images")
    if len(prob) == 0:
        raise KerassegError(f"no ROIs to evaluate in split {split!r}")
    pred = binarize(np.asarray(prob)) if pred is None else np.asarray(pred).astype(np.uint8)
    if pred.shape != prob.shape:
        raise KerassegError(f"predicted masks {pred.shape} and probabilities {prob.shape} differ in shape")
    summary, per = M.summarize(pred, masks, spacing_mm)
    out = _make_dir(out_dir)
    result = {
        **{k: summary[k] for k in ("dice_mean", "dice_std", "dice_pooled", "iou_mean", "hd95_px_mean",
                                   "hd95_mm_mean", "sensitivity_mean", "precision_mean",
                                   "trimap_accuracy", "n")},
        "split": split,
        "data_hash": data_hash,
        "model": model_label,
        "run": None if run is None else str(run),
        "final_output": final_output,
        "threshold": THRESHOLD,
        "definitions": DEFINITIONS,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if extra:
        result.update(extra)
    areas_gt = masks.reshape(len(masks), -1).sum(1)
    areas_pred = pred.reshape(len(pred), -1).sum(1)
    header = ["id", "dice", "iou", "sensitivity", "precision", "hd95_px", "hd95_mm", "gt_area_px",
              "pred_area_px"]
    rows = []
    for i in range(len(ids)):
        mm = "" if "hd95_mm" not in per else f"{per['hd95_mm'][i]:.6g}"
        rows.append([ids[i], f"{per['dice'][i]:.6f}", f"{per['iou'][i]:.6f}",
                     f"{per['sensitivity'][i]:.6f}", f"{per['precision'][i]:.6f}",
                     f"{per['hd95_px'][i]:.6g}", mm, int(areas_gt[i]), int(areas_pred[i])])
    write_csv(out / "per_image.csv", header, rows)
    arrays = {"ids": ids, "prob": prob, "pred": pred, "mask": masks, "data_hash": np.asarray(data_hash),
              "split": np.asarray(split)}
    if spacing_mm is not None:
        arrays["spacing_mm"] = np.asarray(spacing_mm, np.float32)
    if images is not None:
        arrays["images"] = np.asarray(images, np.float32)   # raw ROIs, for comparison figures
    if uncertainty is not None:
        arrays["uncertainty"] = np.asarray(uncertainty, np.float32)
        result["uncertainty_mean"] = float(np.mean(arrays["uncertainty"]))
    write_npz(out / "predictions.npz", **arrays)
    if figures:
        plots.dice_histogram(per["dice"], out / "dice_hist.png", title=f"{split} Dice")
        shown = images if images is not None else prob
        plots.contour_grid(shown, masks, pred, per["dice"], out / "contours.png",
                           k=min(5, len(ids)), ids=ids)
        plots.trimap_plot({int(k): v for k, v in summary["trimap_accuracy"].items()},
                          out / "trimap.png", label=model_label or "model")
        if uncertainty is not None:
            plots.uncertainty_grid(shown, masks, pred, uncertainty, per["dice"], out / "uncertainty.png",
                                   k=min(5, len(ids)), ids=ids)
    write_json(out / "metrics.json", result)
    if verbose:
        print(format_summary(result))
        print(f"report written to {out}")
    return result


def format_p(p) -> str:
    """A p-value for people: 4 significant digits, and '< 1e-300' where it underflows to 0."""
    if p is None:
        return "n/a"
    return "< 1e-300" if p == 0 else f"{p:.4g}"


def _pct(v):
    return "n/a" if v is None else f"{100 * v:.2f}"


def format_summary(m: dict) -> str:
    """A short text table of the main numbers of a metrics dict."""
    lines = [
        f"split {m.get('split')}  n={m.get('n')}  data {m.get('data_hash')}",
        f"  Dice (per-image mean ± std)  {_pct(m['dice_mean'])} ± {_pct(m['dice_std'])} %",
        f"  Dice (pooled over pixels)    {_pct(m['dice_pooled'])} %",
        f"  IoU (mean)                   {_pct(m['iou_mean'])} %",
        f"  Sensitivity / precision      {_pct(m['sensitivity_mean'])} / {_pct(m['precision_mean'])} %",
        f"  HD95 (mean)                  {m['hd95_px_mean']:.2f} px"
        + ("" if m.get("hd95_mm_mean") is None else f" / {m['hd95_mm_mean']:.2f} mm"),
        "  Trimap accuracy w=1..5       "
        + " ".join(_pct(m["trimap_accuracy"].get(str(w))) for w in M.TRIMAP_WIDTHS) + " %",
    ]
    return "\n".join(lines)


def evaluate_run(run_or_model, data=None, split="test", out_dir=None, *, tta="none",
                 batch_size=32, figures=True, verbose=True) -> dict:
    """Evaluate a run directory, a cross-validation folder, a ``.keras`` file or a ``keras.Model``.

    A cross-validation folder (``kerasseg fit --folds``) is evaluated as the ensemble of its folds
    (mean probability) with the post-processing its cross-validation chose; ``tta`` ("none",
    "flips", "dihedral") averages over flipped/rotated copies of every ROI
    (:mod:`kerasseg.models.ensemble`). Ensembles and TTA add a per-pixel ``uncertainty`` map.
    ``data``: an :class:`~kerasseg.data.dataset.ROIDataset`, ``"phantom"``, a ``.npz`` path, or
    ``None`` (the data recorded by the run, else the phantom). ``out_dir`` defaults to
    ``<run>/eval-<split>`` (``-<tta>`` appended with TTA). Returns the metrics dict written to
    ``metrics.json``.
    """
    from kerasseg.data.dataset import SPLITS, ROIDataset
    from kerasseg.data.sources import load_data
    from kerasseg.models.ensemble import TTA_MODES

    if split not in SPLITS:  # before the (slow) model loading
        raise KerassegError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
    if tta not in TTA_MODES:
        raise KerassegError(f"unknown --tta {tta!r}; choose one of {list(TTA_MODES)}")
    from kerasseg.training.run import is_folds_dir

    folds_dir = isinstance(run_or_model, (str, Path)) and is_folds_dir(run_or_model)
    if folds_dir and split != "test":
        raise KerassegError(f"a cross-validation ensemble trained on every train and val ROI, so it can "
                            f"only be evaluated on 'test' (not {split!r}); its out-of-fold results are "
                            "in cv.json and oof.npz", run_or_model)
    if out_dir is not None:
        from kerasseg.fileio import output_dir

        output_dir(out_dir, "report folder", create=False)  # before the slow model loading
    src, label = _load_ensemble(run_or_model)
    home = src.folds_dir or src.run_dir
    if data is None:
        data = _default_data(src.config, src.run_dir) if src.folds_dir is None else \
            (src.cv or {}).get("data") or "phantom"
    ds = data if isinstance(data, ROIDataset) else load_data(data)
    full_hash = ds.data_hash()
    sub = ds.subset(split)
    from kerasseg.models.segmenter import model_size

    size = model_size(src.members[0])
    if (size, size) != sub.images.shape[1:]:
        raise KerassegError(
            f"data ROIs are {sub.images.shape[1]}x{sub.images.shape[2]} but the model computes at "
            f"{size}x{size} (its masks are compared at that size); prepare the data with the model's ROI size")
    if out_dir is None:
        if home is None:
            raise KerassegError("an output folder (--out) is needed when evaluating a model file")
        out_dir = home / (f"eval-{split}" if tta == "none" else f"eval-{split}-{tta}")
    from kerasseg.fileio import output_dir

    output_dir(out_dir, "report folder", create=False)  # before the inference
    from kerasseg.models import final_key
    from kerasseg.models.ensemble import ensemble_function, predict_ensemble

    fn = ensemble_function(src.members, tta=tta, postprocessing=src.postprocessing)
    res = predict_ensemble(fn, sub.images, batch_size=batch_size, progress=verbose)
    ensemble = len(src.members) > 1 or tta != "none"
    extra = {"data_source": ds.source, "members": len(src.members), "tta": tta,
             "postprocessing": dict(src.postprocessing)}
    return evaluate_arrays(
        res["probability"], sub.masks, sub.ids, out_dir, images=sub.images, spacing_mm=sub.spacing_mm,
        split=split, data_hash=full_hash, model_label=str(src.config.get("name") or label),
        run=home or label, final_output=final_key(src.members[0]), extra=extra, figures=figures,
        verbose=verbose, pred=res["mask"], uncertainty=res["uncertainty"] if ensemble else None)


def _load_ensemble(source):
    """(EnsembleSource, label) of what the user named as the model."""
    import keras

    from kerasseg.training.run import load_ensemble_source

    label = getattr(source, "name", "model") if isinstance(source, keras.Model) else str(source)
    return load_ensemble_source(source), label


# ------------------------------------------------------------------ compare
def load_predictions(report) -> dict:
    """Read ``predictions.npz`` of a report folder (or the .npz itself) with clear errors."""
    path = Path(str(report))
    if path.is_dir():
        path = path / "predictions.npz"
    if not path.is_file():
        raise KerassegError("no predictions.npz: not an evaluation report (run kerasseg evaluate first)",
                            path)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("ids", "pred", "mask", "data_hash") if k not in z.files]
            if missing:
                raise KerassegError(f"not an evaluation report: missing {missing}", path)
            out = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise KerassegError(f"cannot read predictions ({exc})", path) from None
    out["ids"] = out["ids"].astype(str)
    out["data_hash"] = str(out["data_hash"])
    out["split"] = str(out.get("split", ""))
    out["path"] = str(path)
    return out


def compare_reports(report_a, report_b, out=None, *, seed=0, n_boot=10000, figures=True,
                    verbose=True) -> dict:
    """Paired tests of report A against report B on the same data (see :mod:`kerasseg.evaluation.stats`).

    Refuses reports made on different data (data hash, ids or masks differ). Writes the
    result as JSON to ``out`` (default ``<report_a>/compare-<name of b>.json``) and, with
    ``figures``, a contour grid beside it (same name, ``.png``): the best and hardest ROIs of B,
    ground truth red, A blue, B green (CRU-Net Fig. 4/5).
    """
    a, b = load_predictions(report_a), load_predictions(report_b)
    if a["data_hash"] != b["data_hash"]:
        raise KerassegError(f"reports were made on different data (data hash {a['data_hash']} vs "
                            f"{b['data_hash']}): {report_a} vs {report_b}")
    if a["split"] != b["split"]:
        raise KerassegError(f"reports are on different splits ({a['split']!r} vs {b['split']!r})")
    if a["ids"].shape != b["ids"].shape or not np.array_equal(a["ids"], b["ids"]):
        raise KerassegError(f"reports cover different ROIs (ids differ): {report_a} vs {report_b}")
    if a["mask"].shape != b["mask"].shape or not np.array_equal(a["mask"], b["mask"]):
        raise KerassegError(f"reports have different ground-truth masks: {report_a} vs {report_b}")
    gt = a["mask"]
    dice_a = np.array([M.dice(p, g) for p, g in zip(a["pred"], gt)])
    dice_b = np.array([M.dice(p, g) for p, g in zip(b["pred"], gt)])
    tests = S.paired_tests(a["pred"], b["pred"], gt, dice_a, dice_b, seed=seed, n_boot=n_boot)
    result = {
        "a": str(report_a), "b": str(report_b),
        "data_hash": a["data_hash"], "split": a["split"], "n_images": int(len(gt)),
        "n_pixels": int(gt.size),
        "dice_mean_a": float(dice_a.mean()), "dice_mean_b": float(dice_b.mean()),
        "dice_pooled_a": M.pooled_dice(a["pred"], gt), "dice_pooled_b": M.pooled_dice(b["pred"], gt),
        **tests,
        "notes": ("mcnemar: exact two-sided binomial test on pixel-wise discordant counts b (only A "
                  "correct) and c (only B correct); pixels are not independent, so prefer the "
                  "per-image wilcoxon and bootstrap (mean Dice A - B)"),
    }
    if out is None:
        ra = Path(str(report_a))
        out = (ra if ra.is_dir() else ra.parent) / f"compare-{Path(str(report_b)).resolve().name}.json"
    out = Path(out)
    if not (out.parent if str(out.parent) else Path(".")).is_dir():
        raise KerassegError("output folder does not exist", out.parent)
    if figures:
        shown = a["images"] if "images" in a else a.get("prob", a["pred"])
        fig = out.with_suffix(".png")
        plots.contour_grid(shown, gt, a["pred"], dice_a, fig, k=min(5, len(gt)), ids=a["ids"],
                           preds_b=b["pred"], dice_b=dice_b, order_by="b")
        result["figure"] = str(fig)
    write_json(out, result)
    result["out"] = str(out)
    if verbose:
        print(format_compare(result))
        print(f"written to {out}")
    return result


def format_compare(r: dict) -> str:
    """Short text of a comparison result."""
    mc, wx, bs = r["mcnemar"], r["wilcoxon"], r["bootstrap"]
    buf = io.StringIO()
    buf.write(f"A: {r['a']}\nB: {r['b']}\n")
    buf.write(f"  n={r['n_images']} ROIs, {r['n_pixels']} pixels, data {r['data_hash']}\n")
    buf.write(f"  Dice mean   A {_pct(r['dice_mean_a'])} %  B {_pct(r['dice_mean_b'])} %\n")
    buf.write(f"  Dice pooled A {_pct(r['dice_pooled_a'])} %  B {_pct(r['dice_pooled_b'])} %\n")
    buf.write(f"  McNemar exact (pixels): b={mc['b']} c={mc['c']}  p={format_p(mc['pvalue'])}\n")
    buf.write(f"  Wilcoxon signed-rank (per-image Dice): W={wx['statistic']:.4g}  p={format_p(wx['pvalue'])}\n")
    buf.write(f"  Mean Dice difference A-B: {100 * bs['mean_diff']:+.2f} %  "
              f"{int(100 * bs['level'])}% bootstrap CI [{100 * bs['ci_low']:+.2f}, {100 * bs['ci_high']:+.2f}] %")
    return buf.getvalue()
