"""Evaluation reports: ``evaluate_run`` (a run, CV folder or model -> report folder) and
``evaluate_arrays`` (probabilities -> report folder). Comparing two reports: :mod:`.compare`.

A report folder (Contract 5) holds

- ``metrics.json``   summary numbers (keys in :data:`METRIC_KEYS`, documented in docs/evaluation.md)
- ``per_image.csv``  one row per ROI: id, dice, iou, sensitivity, precision, hd95_px, hd95_mm, areas
- ``predictions.npz`` ids, prob (N,H,W) float32 (mass probability), pred uint8, mask uint8, data_hash
- ``dice_hist.png``, ``contours.png``, ``trimap.png``
- ``robustness.png`` (``evaluate_run(..., robustness=True)``): Dice vs box margin and vs shift

Every file is written atomically (temporary name beside the target, then rename).

Scoring at any box (:mod:`kerasseg.data.boxes`): ``evaluate_run(..., box_margin=M, box_shift=S)``
scores the ROIs cut again from their context windows at the tight box grown by ``M`` per side and
moved by ``S`` (:func:`~kerasseg.data.boxes.box_view`; ``M = S = 0`` is the dataset itself, i.e.
exactly the papers' protocol), beside the model-free baselines at the same boxes
(:func:`baseline_dice`). ``robustness=True`` adds :func:`robustness_table` (Dice vs margin and vs
shift) to metrics.json and draws it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from kerasseg.errors import KerassegError, argument_error
from kerasseg.fileio import write_csv, write_json, write_npz
from kerasseg.evaluation import metrics as M
from kerasseg.evaluation import plots
from kerasseg.evaluation.formatting import format_summary
from kerasseg.training.metrics import THRESHOLD, binarize, dice_array  # the one threshold and Dice

METRIC_KEYS = ("dice_mean", "dice_std", "dice_pooled", "iou_mean", "hd95_px_mean", "hd95_mm_mean",
               "sensitivity_mean", "precision_mean", "trimap_accuracy", "n", "split", "data_hash")
FIGURES = ("dice_hist.png", "contours.png", "trimap.png")
ROBUSTNESS_FIGURE = "robustness.png"
#: every file a report writes (metrics.json, its record, is written last); a re-evaluation into the
#: same folder replaces them as one set and removes those it no longer writes
REPORT_FILES = ("metrics.json", "per_image.csv", "predictions.npz") + FIGURES + ("uncertainty.png",
                                                                                 ROBUSTNESS_FIGURE)
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
BOX_DEFINITIONS = {
    "box_margin": "every side of the tight box grown by this fraction of the box's height (top, bottom) "
                  "or width (left, right); 0 = the papers' tight box",
    "box_shift": "the box centre moved by this fraction of the box size, in a direction drawn once "
                 "per ROI from box_seed",
    "baselines": "at the same boxes: prior = the mean TRAIN mask at those boxes thresholded at 0.5; "
                 "otsu = per-ROI Otsu threshold (bright = mass); per-image Dice mean and std (ddof=0)",
}


# ------------------------------------------------------------------ inference
def predict_probabilities(model, images, batch_size=32, verbose=True) -> tuple[np.ndarray, str]:
    """Mass probability maps (N,H,W) float32 of raw ROIs (N,H,W) through the one inference graph
    (:func:`kerasseg.models.segmenter.segment_function`, the same one export serves), and the
    output key used."""
    from kerasseg.models.segmenter import predict_probability, segment_function

    fn = segment_function(model)
    return predict_probability(fn, images, batch_size=batch_size, progress=verbose), fn.final_key


def _recorded_data(src) -> tuple[str, str | None]:
    """``(data spec, data hash)`` that training recorded: run.json's (or a CV folder's cv.json's)
    ``data`` (an absolute path, or "phantom") and ``data_hash``; the phantom without a record."""
    info = src.cv if src.folds_dir is not None else {}
    if src.folds_dir is None and src.run_dir is not None and (src.run_dir / "run.json").is_file():
        try:
            info = json.loads((src.run_dir / "run.json").read_text())
        except (OSError, ValueError):
            info = {}
    info = info if isinstance(info, dict) else {}
    spec = info.get("data")
    if not isinstance(spec, str) or not spec:
        return "phantom", None
    if spec != "phantom" and not Path(spec).is_absolute():
        # runs trained before paths were recorded absolute: relative to the run folder's parent
        # would be a guess as good as the current folder; refuse to guess
        raise KerassegError(f"the run recorded its data as a relative path ({spec!r}); pass the data "
                            "explicitly", src.folds_dir or src.run_dir)
    return spec, info.get("data_hash")


def _check_recorded_hash(ds, recorded_hash, spec, home) -> None:
    if recorded_hash and ds.data_hash() != recorded_hash:
        raise KerassegError(f"the data the run was trained on ({spec}) has changed since (data hash "
                            f"{ds.data_hash()}, recorded {recorded_hash}); pass the data explicitly to score other data", home)


# ------------------------------------------------------------------ evaluate
def evaluate_arrays(prob, masks, ids, out_dir, *, images=None, spacing_mm=None, split="test",
                    data_hash="", model_label="", run=None, final_output="", extra=None,
                    figures=True, verbose=True, pred=None, uncertainty=None, robustness=None) -> dict:
    """Write a complete report from probability maps and masks; returns the metrics dict.

    ``pred``: the predicted masks when they are not just ``binarize(prob)`` (an ensemble's
    post-processed masks); ``uncertainty``: per-pixel std over ensemble members x TTA transforms
    (saved in predictions.npz and drawn as ``uncertainty.png``); ``robustness``: a
    :func:`robustness_table`, saved as ``metrics.json["robustness"]`` and drawn as
    ``robustness.png`` (in the same staged set as every other file).
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
        if robustness is not None:
            result["robustness"] = robustness
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
            if robustness is not None:
                plots.robustness_plot(robustness, out / ROBUSTNESS_FIGURE)
        write_json(out / "metrics.json", result)
        return result

    final = Path(out_dir)
    from kerasseg.fileio import folder_lock, output_dir, staged_dir

    output_dir(final.parent if str(final.parent) else Path("."), "folder of the report folder")
    with folder_lock(final, "report folder"):   # one evaluation writes a report folder at a time
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
        boxes = format_boxes(result)
        if boxes:
            print(boxes)
        print(f"report written to {out}")
    return result


def report_name(split="test", tta="none", box_margin=0.0, box_shift=0.0) -> str:
    """The default report folder name of :func:`evaluate_run`: ``eval-<split>``, ``-<tta>`` with TTA,
    ``-box<M>`` / ``-shift<S>`` at a box margin / shift other than 0."""
    name = f"eval-{split}" if tta == "none" else f"eval-{split}-{tta}"
    if box_margin:
        name += f"-box{float(box_margin):g}"
    if box_shift:
        name += f"-shift{float(box_shift):g}"
    return name


def baseline_dice(view, split="test") -> dict:
    """The model-free baselines on the ``split`` ROIs of ``view`` (a dataset, or its
    :func:`~kerasseg.data.boxes.box_view` at some box): per-image Dice float64 (N,) of

    - ``"prior"``: :func:`kerasseg.training.baselines.prior_mask` of the TRAIN ROIs of the same
      view (the mean train mask at the same boxes, thresholded at 0.5); ``None`` without train ROIs;
    - ``"otsu"``: :func:`kerasseg.training.baselines.otsu_masks` of each ROI.
    """
    from kerasseg.training.baselines import otsu_masks, prior_mask

    sub = view.subset(split)
    train = view.split == "train"
    prior = None
    if train.any():
        prior = dice_array(np.broadcast_to(prior_mask(view.masks[train]), sub.masks.shape), sub.masks)
    return {"prior": prior, "otsu": dice_array(otsu_masks(sub.images), sub.masks)}


def _mean_std(d):
    return (None, None) if d is None or len(d) == 0 else (float(np.mean(d)), float(np.std(d)))


def _baseline_summary(base: dict) -> dict:
    out = {}
    for key, d in base.items():
        mean, std = _mean_std(d)
        out[key] = {"dice_mean": mean, "dice_std": std}
    if base.get("prior") is None:
        out["prior"]["note"] = "no train ROIs in the data: no prior"
    return out


def cached_view(ds, margin, shift=0.0, seed=0, views=None):
    """:func:`kerasseg.data.boxes.box_view` of ``ds``, kept in ``views`` (a dict the caller owns,
    for ONE dataset; ``None``: no cache) under ``(margin, shift, seed)``: the crops depend on the
    data and the box only, so several models scored on the same data cut them once."""
    from kerasseg.data.boxes import box_view

    if views is None:
        return box_view(ds, margin, shift, seed)
    key = (float(margin), float(shift), int(seed))
    if key not in views:
        views[key] = box_view(ds, margin, shift, seed)
    return views[key]


def robustness_table(fn, ds, split="test", *, seed=0, batch_size=32, known=None, views=None) -> dict:
    """Dice of the model ``fn`` (an :func:`~kerasseg.models.ensemble.ensemble_function`) and of the
    baselines (:func:`baseline_dice`) vs the box margin (:data:`~kerasseg.data.boxes.ROBUSTNESS_MARGINS`,
    shift 0) and vs the shift (:data:`~kerasseg.data.boxes.ROBUSTNESS_SHIFTS` at margin
    :data:`~kerasseg.data.boxes.ROBUSTNESS_SHIFT_MARGIN`) on the ``split`` ROIs of ``ds``.

    ``known``: ``{(margin, shift): {"model": dice (N,), "prior": ..., "otsu": ...}}`` already scored
    (not scored again); ``views``: see :func:`cached_view`. Returns ``{"split", "n", "seed",
    "shift_margin", "by_margin": [...], "by_shift": [...], "definition"}``; every entry holds ``margin``, ``shift`` and
    ``{model,prior,otsu}_dice_{mean,std}`` (per-image Dice over ROIs, std ddof=0; prior ``None``
    without train ROIs).
    """
    from kerasseg.data.boxes import (ROBUSTNESS_MARGINS, ROBUSTNESS_SHIFT_MARGIN, ROBUSTNESS_SHIFTS,
                                     need_context)
    from kerasseg.models.ensemble import predict_ensemble

    need_context(ds, "--robustness")
    cache = {(float(m), float(s)): v for (m, s), v in (known or {}).items()}

    def point(margin, shift):
        key = (float(margin), float(shift))
        if key not in cache:
            view = cached_view(ds, margin, shift, seed, views)
            sub = view.subset(split)
            res = predict_ensemble(fn, sub.images, batch_size=batch_size, progress=False)
            cache[key] = {"model": dice_array(res["mask"], sub.masks), **baseline_dice(view, split)}
        entry = {"margin": key[0], "shift": key[1]}
        for who in ("model", "prior", "otsu"):
            entry[f"{who}_dice_mean"], entry[f"{who}_dice_std"] = _mean_std(cache[key][who])
        return entry

    by_margin = [point(m, 0.0) for m in ROBUSTNESS_MARGINS]
    by_shift = [point(ROBUSTNESS_SHIFT_MARGIN, s) for s in ROBUSTNESS_SHIFTS]
    return {"split": split, "n": int((ds.split == split).sum()), "seed": int(seed),
            "shift_margin": float(ROBUSTNESS_SHIFT_MARGIN), "by_margin": by_margin, "by_shift": by_shift,
            "definition": "per-image Dice (mean and std ddof=0 over the ROIs) at boxes grown by `margin` "
                          "per side and moved by `shift` (kerasseg.data.boxes.box_view); prior = mean "
                          "train mask at the same boxes >= 0.5; otsu = per-ROI Otsu"}


def format_boxes(m: dict) -> str:
    """Text lines of the box scoring of a metrics dict: the box, the baselines, the robustness
    table ("" when the report has none of them)."""
    from kerasseg.evaluation.formatting import pct

    lines = []
    if m.get("baselines") is not None:
        lines.append(f"  Box margin / shift           {m.get('box_margin', 0.0):g} / {m.get('box_shift', 0.0):g}"
                     f" (seed {m.get('box_seed', 0)})")
        for key, label in (("prior", "Prior (mean train mask)"), ("otsu", "Otsu")):
            b = m["baselines"].get(key) or {}
            lines.append(f"  {label:<29}{pct(b.get('dice_mean'))} ± {pct(b.get('dice_std'))} %")
    rob = m.get("robustness")
    if rob:
        lines.append(f"Dice % at other boxes ({rob['split']}, n={rob['n']}; mean ± std over ROIs)")
        lines.append(f"  {'margin':>6} {'shift':>6}  {'model':>15}  {'prior':>15}  {'Otsu':>15}")
        for e in rob["by_margin"] + rob["by_shift"][1:]:
            cells = [f"{pct(e[f'{w}_dice_mean'])} ± {pct(e[f'{w}_dice_std'])}" for w in ("model", "prior", "otsu")]
            lines.append(f"  {e['margin']:>6.2f} {e['shift']:>6.2f}  " + "  ".join(f"{c:>15}" for c in cells))
    return "\n".join(lines)


def _need_windows(ds, margin, shift, robustness) -> None:
    from kerasseg.data.boxes import need_context

    if margin or shift:
        need_context(ds, "scoring at a box margin or shift")
    if robustness:
        need_context(ds, "--robustness")


def evaluate_run(run_or_model, data=None, split="test", out_dir=None, *, tta="none",
                 batch_size=32, figures=True, verbose=True, box_margin=None, box_shift=None,
                 box_seed=0, robustness=False, views=None) -> dict:
    """Evaluate a run directory, a cross-validation folder, a ``.keras`` file or a ``keras.Model``.

    A cross-validation folder (``kerasseg fit --folds``) is evaluated as the ensemble of its folds
    (mean probability) with the post-processing its cross-validation chose; ``tta`` ("none",
    "flips", "dihedral") averages over flipped/rotated copies of every ROI
    (:mod:`kerasseg.models.ensemble`). Ensembles and TTA add a per-pixel ``uncertainty`` map.
    ``data``: an :class:`~kerasseg.data.dataset.ROIDataset`, ``"phantom"``, a ``.npz`` path, or
    ``None`` (the data recorded by the run, else the phantom). ``out_dir`` defaults to
    ``<run>/``:func:`report_name` (``eval-<split>``, ``-<tta>`` appended with TTA, ``-box<M>`` /
    ``-shift<S>`` at another box). Returns the metrics dict written to ``metrics.json``.

    ``box_margin`` / ``box_shift`` (fractions of the tight box, module docstring): score the ROIs
    at that box (:func:`kerasseg.data.boxes.box_view`, shift directions drawn from ``box_seed``)
    and add the baselines at the same boxes (``metrics.json["baselines"]``); margin and shift 0
    score exactly the dataset's ROIs. A margin or shift other than 0 needs a dataset with context
    windows (a one-line error naming the file otherwise). ``robustness``: also
    :func:`robustness_table` (``metrics.json["robustness"]``, ``robustness.png``). ``views``: a
    cache of the crops for callers that score several models on the same data (:func:`cached_view`).
    """
    from kerasseg.data.boxes import scoring_draws
    from kerasseg.data.dataset import SPLITS, ROIDataset
    from kerasseg.data.sources import load_data
    from kerasseg.models.ensemble import TTA_MODES

    if split not in SPLITS:  # before the (slow) model loading
        raise KerassegError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
    if tta not in TTA_MODES:
        raise argument_error("tta", f"must be one of {list(TTA_MODES)}, got {tta!r}")
    at_box = box_margin is not None or box_shift is not None
    margin = 0.0 if box_margin is None else box_margin
    shift = 0.0 if box_shift is None else box_shift
    if isinstance(box_seed, bool) or not isinstance(box_seed, (int, np.integer)) or box_seed < 0:
        raise KerassegError(f"box seed must be an integer >= 0, got {box_seed!r}")
    scoring_draws([], margin, shift, int(box_seed))   # the margin / shift are checked before the model loads
    margin, shift, box_seed = float(margin), float(shift), int(box_seed)
    from kerasseg.training.run import is_folds_dir

    folds_dir = isinstance(run_or_model, (str, Path)) and is_folds_dir(run_or_model)
    if folds_dir and split != "test":
        raise KerassegError(f"a cross-validation ensemble trained on every train and val ROI, so it can "
                            f"only be evaluated on 'test' (not {split!r}); its out-of-fold results are "
                            "in cv.json and oof.npz", run_or_model)
    if out_dir is not None:
        from kerasseg.fileio import output_dir

        output_dir(out_dir, "report folder", create=False)  # before the slow model loading
    ds = None
    if data is not None and (margin or shift or robustness):
        ds = data if isinstance(data, ROIDataset) else load_data(data)
        _need_windows(ds, margin, shift, robustness)   # before the slow model loading
    src, label = _load_ensemble(run_or_model)
    home = src.folds_dir or src.run_dir
    recorded_hash = None
    if data is None:
        data, recorded_hash = _recorded_data(src)
    if ds is None:
        ds = data if isinstance(data, ROIDataset) else load_data(data)
        _check_recorded_hash(ds, recorded_hash, data, home)
        _need_windows(ds, margin, shift, robustness)
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
            raise argument_error("out_dir", "is needed when evaluating a model file (an output folder)")
        out_dir = home / report_name(split, tta, margin, shift)
    from kerasseg.fileio import output_dir

    output_dir(out_dir, "report folder", create=False)  # before the inference
    from kerasseg.models import final_key
    from kerasseg.models.ensemble import ensemble_function, predict_ensemble

    view = cached_view(ds, margin, shift, box_seed, views)   # the dataset itself at margin = shift = 0
    sub = view.subset(split)
    fn = ensemble_function(src.members, tta=tta, postprocessing=src.postprocessing)
    res = predict_ensemble(fn, sub.images, batch_size=batch_size, progress=verbose)
    ensemble = len(src.members) > 1 or tta != "none"
    extra = {"data_source": ds.source, "members": len(src.members), "tta": tta,
             "postprocessing": dict(src.postprocessing),
             "box_margin": margin, "box_shift": shift, "box_seed": box_seed}
    table = None
    if at_box or robustness:
        base = baseline_dice(view, split)
        if at_box:
            extra["baselines"] = _baseline_summary(base)
            extra["box_definitions"] = BOX_DEFINITIONS
        if robustness:
            known = {(margin, shift): {"model": dice_array(res["mask"], sub.masks), **base}}
            table = robustness_table(fn, ds, split, seed=box_seed, batch_size=batch_size, known=known,
                                     views=views)
    return evaluate_arrays(
        res["probability"], sub.masks, sub.ids, out_dir, images=sub.images, spacing_mm=sub.spacing_mm,
        split=split, data_hash=full_hash, model_label=str(src.config.get("name") or label),
        run=home or label, final_output=final_key(src.members[0]), extra=extra, figures=figures,
        verbose=verbose, pred=res["mask"], uncertainty=res["uncertainty"] if ensemble else None,
        robustness=table)


def _load_ensemble(source):
    """(EnsembleSource, label) of what the user named as the model."""
    import keras

    from kerasseg.training.run import load_ensemble_source

    label = getattr(source, "name", "model") if isinstance(source, keras.Model) else str(source)
    return load_ensemble_source(source), label


