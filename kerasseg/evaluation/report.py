"""Evaluation reports: ``evaluate_run`` (a run, CV folder or model -> report folder) and
``evaluate_arrays`` (probabilities -> report folder). Comparing two reports: :mod:`.compare`.

A report folder (Contract 5) holds

- ``metrics.json``   summary numbers (keys in :data:`METRIC_KEYS`, documented in docs/evaluation.md)
- ``per_image.csv``  one row per ROI: id, dice, iou, sensitivity, precision, hd95_px, hd95_mm, areas
- ``predictions.npz`` ids, prob (N,H,W) float32 (mass probability), pred uint8, mask uint8, data_hash
- ``dice_hist.png``, ``contours.png``, ``trimap.png``

Every file is written atomically (temporary name beside the target, then rename).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from kerasseg.errors import KerassegError
from kerasseg.fileio import write_csv, write_json, write_npz
from kerasseg.evaluation import metrics as M
from kerasseg.evaluation import plots
from kerasseg.evaluation.formatting import format_summary
from kerasseg.training.metrics import THRESHOLD, binarize  # the one threshold

METRIC_KEYS = ("dice_mean", "dice_std", "dice_pooled", "iou_mean", "hd95_px_mean", "hd95_mm_mean",
               "sensitivity_mean", "precision_mean", "trimap_accuracy", "n", "split", "data_hash")
FIGURES = ("dice_hist.png", "contours.png", "trimap.png")
#: every file a report writes (metrics.json, its record, is written last); a re-evaluation into the
#: same folder replaces them as one set and removes those it no longer writes
REPORT_FILES = ("metrics.json", "per_image.csv", "predictions.npz") + FIGURES + ("uncertainty.png",)
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
    def write(out: Path) -> dict:
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
        return result

    final = Path(out_dir)
    from kerasseg.fileio import output_dir, staged_dir

    if final.exists():  # an earlier report (perhaps beside compare results) is replaced as one set
        from kerasseg.fileio import staged_update

        out = output_dir(final, "report folder")
        with staged_update(out, commit="metrics.json", owned=REPORT_FILES, what="report folder") as tmp:
            result = write(tmp)
    else:               # a new report folder appears complete or not at all
        with staged_dir(final, what="report folder") as tmp:
            result = write(tmp)
        out = final
    if verbose:
        print(format_summary(result))
        print(f"report written to {out}")
    return result


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
            f"{size}x{size} (its masks are compared at that size); prepare the data with the model's ROI size",
            None if isinstance(data, ROIDataset) else data)
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


