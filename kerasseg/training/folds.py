"""Grouped K-fold cross-validation: ``kerasseg fit CONFIG --folds K --out DIR``.

The train and val ROIs of the data form the pool; :func:`kerasseg.data.splits.group_kfold` puts
whole groups (patients, contours) into K folds of about equal ROI count. Fold k trains on the
other K-1 folds and chooses its best epoch on fold k (its held-out fold); the test split is never
used for any choice. Layout of ``DIR``::

    cv.json          status, folds, per-fold and pooled out-of-fold Dice beside the model-free
                     baselines, the post-processing chosen on the out-of-fold predictions
    oof.npz          ids, fold, prob (out-of-fold mass probability), mask, dice (per ROI, with
                     the chosen post-processing), prior_dice, otsu_dice
    data/fold-<k>.npz  the data with fold k's split labels (what the fold's run trained on)
    fold-<k>/        an ordinary run directory (:func:`kerasseg.training.fit`), resumable

Post-processing is chosen as nnU-Net does: keeping the largest connected component is adopted
only if it raises the mean out-of-fold Dice, then filling holes (on top of that choice) only if it
raises it again. ``kerasseg evaluate DIR``, ``predict`` and ``export`` use the folds as one
ensemble (mean of the members' probabilities) with that post-processing.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kerasseg.errors import KerassegError, argument_error
from kerasseg.fileio import write_json
from kerasseg.training.metrics import dice_array
from kerasseg.training.run import CV_KIND, NO_POSTPROCESSING


@dataclass
class CVResult:
    """What :func:`fit_folds` returns (a summary of cv.json)."""

    folds_dir: str
    folds: int
    oof_dice: float
    fold_dice_mean: float
    fold_dice_std: float
    prior_dice: float
    otsu_dice: float
    postprocessing: dict
    test: dict | None = None
    per_fold: list = field(default_factory=list)

    def summary(self) -> str:
        pp = [k for k, v in self.postprocessing.items() if v] or ["none"]
        text = (f"{self.folds}-fold cross-validation: out-of-fold Dice {self.oof_dice:.4f} "
                f"(per fold {self.fold_dice_mean:.4f} ± {self.fold_dice_std:.4f}); model-free "
                f"baselines on the same ROIs: mean training mask {self.prior_dice:.4f}, Otsu "
                f"{self.otsu_dice:.4f}; post-processing chosen on CV: {', '.join(pp)}")
        if self.test:
            text += (f"\nfold ensemble on {self.test['n']} test ROIs: Dice {self.test['ensemble_dice']:.4f} "
                     f"(mean training mask {self.test['prior_dice']:.4f}, Otsu {self.test['otsu_dice']:.4f})")
        return text + f"\nfolder {self.folds_dir}"


def fold_labels(split, groups, k: int, seed: int) -> np.ndarray:
    """Fold number (1..k) of every train/val ROI, 0 for test ROIs (grouped, balanced)."""
    from kerasseg.data.splits import group_kfold

    split = np.asarray(split).astype(str)
    pool = np.isin(split, ("train", "val"))
    fold = np.zeros(len(split), np.int64)
    fold[pool] = group_kfold(np.asarray(groups)[pool], k, seed) + 1
    return fold


def _groups_hash(groups) -> str:
    return hashlib.sha256("\x00".join(np.asarray(groups).astype(str).tolist()).encode()).hexdigest()[:16]


def postprocess_masks(masks, choice: dict) -> np.ndarray:
    """``masks`` (N, H, W) after the chosen post-processing (the graph ops of predict/export)."""
    from kerasseg.layers.postprocessing import postprocess

    masks = np.asarray(masks, np.uint8)
    if not any(choice.values()) or len(masks) == 0:
        return masks
    return np.asarray(postprocess(masks, **choice), np.uint8)


def choose_postprocessing(prob, masks) -> tuple[dict, dict]:
    """nnU-Net's rule on out-of-fold predictions: each step kept only if it raises the mean Dice.

    Returns ``(choice, tried)``: the chosen ``{"largest_component", "fill_holes"}`` flags and the
    mean Dice of every variant tried.
    """
    from kerasseg.training.metrics import binarize

    raw = binarize(np.asarray(prob, np.float32))
    choice = dict(NO_POSTPROCESSING)
    best = float(dice_array(raw, masks).mean())
    tried = {"none": best}
    for step in ("largest_component", "fill_holes"):
        trial = {**choice, step: True}
        name = "+".join(k for k, v in trial.items() if v)
        score = float(dice_array(postprocess_masks(raw, trial), masks).mean())
        tried[name] = score
        if score > best:
            choice, best = trial, score
    return choice, tried


def _check_resume(out: Path, expect: dict) -> None:
    path = out / "cv.json"
    if not path.is_file():
        return
    try:
        cv = json.loads(path.read_text())
    except (OSError, ValueError):
        raise KerassegError("cv.json is unreadable; delete the folder or choose another --out", path) from None
    if cv.get("status") == "finished":
        raise KerassegError("holds a finished cross-validation; choose another --out or delete it", out)
    for key, value in expect.items():
        if cv.get(key) != value:
            raise KerassegError(f"holds an unfinished cross-validation with another {key} "
                                f"({cv.get(key)!r}, now {value!r}); rerun the same command or use another --out", out)


def _finished_run(run_dir: Path) -> bool:
    try:
        return (json.loads((run_dir / "run.json").read_text()).get("status") == "finished"
                and (run_dir / "model.keras").is_file())
    except (OSError, ValueError, AttributeError):
        return False


def fit_folds(config="crunet-l067", data=None, out_dir=None, folds=5, epochs=None, seed=None,
              devices=None, dataset=None, verbose="auto") -> CVResult:
    """Grouped ``folds``-fold cross-validation of ``config`` on ``data`` into ``out_dir``.

    Arguments as :func:`kerasseg.training.fit`; ``seed`` (default: the config's) seeds both the
    fold assignment and every fold's training. Rerunning the same command resumes: finished folds
    are kept, an unfinished fold resumes from its checkpoint.
    """
    from kerasseg.config import resolve_config
    from kerasseg.data.sources import load_data
    from kerasseg.errors import Interrupted
    from kerasseg.fileio import folder_lock, output_dir

    t0 = time.time()
    ds = load_data(data)
    cfg = resolve_config(config)
    if seed is not None and (isinstance(seed, bool) or int(seed) != seed or not 0 <= seed < 2**32):
        raise argument_error("seed", f"must be an integer in [0, 2**32 - 1], got {seed!r}")
    seed = int(cfg["train"]["seed"] if seed is None else seed)
    groups = ds.groups()
    if ds.group is None:
        from kerasseg.errors import warn

        warn("the data has no 'group' array: every ROI is its own group, so ROIs of one patient "
             "may land in different folds (prepare the data again to record the groups)", ds.origin)
    try:
        fold = fold_labels(ds.split, groups, folds, seed)
    except KerassegError as exc:
        raise KerassegError(str(exc), ds.origin) from None
    k_folds = int(folds)
    _check_devices(devices, fold, k_folds, ds.origin)   # before cv.json is written
    out = Path(out_dir or f"runs/{cfg['name']}-cv{k_folds}")
    output_dir(out.parent, "folder of the cross-validation folder")
    with folder_lock(out, "cross-validation folder"):
        output_dir(out, "cross-validation folder")
        try:
            return _fit_folds_locked(config, ds, cfg, data, out, fold, groups, k_folds, epochs, seed,
                                     devices, dataset, verbose, t0)
        except Interrupted:
            _mark(out, "interrupted")
            raise


def _check_devices(devices, fold, k_folds: int, origin) -> None:
    """The replicas every fold's training will ask for exist, and every held-out fold (a fold's
    validation split) has at least one ROI per replica: checked once, before anything is written."""
    if devices is None:
        return
    from kerasseg.training.strategy import get_strategy

    replicas = get_strategy(devices).num_replicas_in_sync
    smallest = min(int((fold == k).sum()) for k in range(1, k_folds + 1))
    if replicas > smallest:
        raise argument_error("devices", f"{devices}: {replicas} replicas but the smallest held-out fold has "
                             f"{smallest} ROI(s); use at most {smallest} devices or fewer folds", origin)


def _mark(out: Path, status: str) -> None:
    """Set cv.json's status (an interrupted CV is resumable, never "finished")."""
    try:
        cv = json.loads((out / "cv.json").read_text())
    except (OSError, ValueError):
        return
    if cv.get("status") != "finished":
        write_json(out / "cv.json", {**cv, "status": status})


def _fit_folds_locked(config, ds, cfg, data, out, fold, groups, k_folds, epochs, seed, devices,
                      dataset, verbose, t0) -> CVResult:
    """:func:`fit_folds` once the folder is locked: its stages in order."""
    state = _start_cv(out, ds, cfg, data, fold, groups, k_folds, epochs, seed)
    fold_runs = [_train_fold(config, ds, out, fold, k, k_folds, epochs, seed, devices, dataset, verbose)
                 for k in range(1, k_folds + 1)]
    prob, prior_pred, per_fold = _out_of_fold(ds, fold, fold_runs)
    scores = _score_out_of_fold(ds, fold, prob, prior_pred, per_fold)
    _write_oof(out, ds, fold, groups, prob, scores)
    return _finish_cv(out, state, ds, fold, fold_runs, per_fold, scores, t0)


def _start_cv(out: Path, ds, cfg, data, fold, groups, k_folds, epochs, seed) -> dict:
    """Check a rerun against cv.json and write it saying ``running``; returns its state."""
    from kerasseg.training.fit import recorded_path

    if epochs is not None and (isinstance(epochs, bool) or int(epochs) != epochs or epochs < 1):
        raise KerassegError(f"epochs must be a positive integer, got {epochs!r}")
    # the epoch budget is part of what a rerun must match (else finished folds of another
    # budget would be mixed into one ensemble)
    expect = {"kind": CV_KIND, "config": cfg["name"], "folds": k_folds, "seed": seed,
              "data_hash": ds.data_hash(), "groups_hash": _groups_hash(groups), "epochs": epochs}
    _check_resume(out, expect)
    state = {**expect, "status": "running", "data": recorded_path(data),
             "n_groups": int(len(set(groups[fold > 0].tolist()))), "n_pool": int((fold > 0).sum()),
             "n_test": int((fold == 0).sum())}
    write_json(out / "cv.json", state)
    return state


def _fold_data(out: Path, ds, fold, k: int):
    """``(data/fold-<k>.npz, split labels)``: the data with fold k held out (written once)."""
    from kerasseg.data.dataset import save_npz

    split = np.where(fold == 0, ds.split, np.where(fold == k, "val", "train"))
    (out / "data").mkdir(exist_ok=True)
    npz = out / "data" / f"fold-{k}.npz"
    if not npz.is_file():
        save_npz(ds.with_split(split), npz)
    return npz, split


def _train_fold(config, ds, out: Path, fold, k, k_folds, epochs, seed, devices, dataset,
                verbose) -> Path:
    """Fold k's run directory, trained (or resumed) unless it holds a finished run."""
    from kerasseg.training.fit import fit

    npz, split = _fold_data(out, ds, fold, k)
    run_dir = out / f"fold-{k}"
    if verbose:
        print(f"fold {k}/{k_folds}: {int((split == 'train').sum())} train, "
              f"{int((split == 'val').sum())} held-out ROIs -> {run_dir}", flush=True)
    if not _finished_run(run_dir):
        fit(config, str(npz), run_dir, epochs=epochs, seed=seed, devices=devices,
            dataset=dataset, verbose=verbose)
    return run_dir


def _out_of_fold(ds, fold, fold_runs):
    """``(prob, prior_pred, per_fold)``: each pool ROI predicted by the fold that never saw it,
    the mean-training-mask baseline of that fold, and each fold's run summary."""
    from kerasseg.models.segmenter import predict_probability
    from kerasseg.training.baselines import prior_mask
    from kerasseg.training.run import load_run

    pool = fold > 0
    prob = np.zeros(ds.images.shape, np.float32)
    prior_pred = np.zeros(ds.masks.shape, np.uint8)
    per_fold = []
    for k, run_dir in enumerate(fold_runs, start=1):
        sel = fold == k
        model, _ = load_run(run_dir)
        prob[sel] = predict_probability(model, ds.images[sel])
        prior_pred[sel] = prior_mask(ds.masks[pool & ~sel])
        info = json.loads((run_dir / "run.json").read_text())
        per_fold.append({"fold": k, "n_train": int((pool & ~sel).sum()), "n_held_out": int(sel.sum()),
                         "best_epoch": info.get("best_epoch"), "val_dice": info.get("val_dice")})
    return prob, prior_pred, per_fold


def _score_out_of_fold(ds, fold, prob, prior_pred, per_fold) -> dict:
    """The post-processing chosen on the out-of-fold predictions, the per-ROI Dice with it and of
    the baselines (pool ROIs), each fold's means added to ``per_fold``."""
    from kerasseg.training.baselines import otsu_masks
    from kerasseg.training.metrics import binarize

    pool = fold > 0
    raw_pred = binarize(prob)
    choice, tried = choose_postprocessing(prob[pool], ds.masks[pool])
    pred = raw_pred.copy()
    pred[pool] = postprocess_masks(raw_pred[pool], choice)
    dice = dice_array(pred[pool], ds.masks[pool])
    d_prior = dice_array(prior_pred[pool], ds.masks[pool])
    d_otsu = dice_array(otsu_masks(ds.images[pool]), ds.masks[pool])
    fold_pool = fold[pool]
    for entry in per_fold:
        sel = fold_pool == entry["fold"]
        entry.update({"oof_dice": float(dice[sel].mean()), "prior_dice": float(d_prior[sel].mean()),
                      "otsu_dice": float(d_otsu[sel].mean())})
    return {"choice": choice, "tried": tried, "pred": pred, "dice": dice, "prior": d_prior,
            "otsu": d_otsu, "fold_means": np.array([e["oof_dice"] for e in per_fold])}


def _write_oof(out: Path, ds, fold, groups, prob, scores: dict) -> None:
    """oof.npz: the pool ROIs' out-of-fold predictions and Dice."""
    from kerasseg.fileio import write_npz

    pool = fold > 0
    write_npz(out / "oof.npz", ids=ds.ids[pool], fold=fold[pool], prob=prob[pool], mask=ds.masks[pool],
              pred=scores["pred"][pool], dice=scores["dice"], prior_dice=scores["prior"],
              otsu_dice=scores["otsu"], group=groups[pool])


def _finish_cv(out: Path, state: dict, ds, fold, fold_runs, per_fold, scores: dict, t0) -> CVResult:
    """The fold ensemble on the test ROIs, then cv.json saying ``finished``; the summary."""
    from kerasseg.training.baselines import prior_mask

    choice, dice, fold_means = scores["choice"], scores["dice"], scores["fold_means"]
    d_prior, d_otsu = scores["prior"], scores["otsu"]
    test = None
    if (fold == 0).any():
        test = _ensemble_test(fold_runs, ds, fold == 0, choice, prior_mask(ds.masks[fold > 0]))
    state.update({
        "status": "finished",
        "per_fold": per_fold,
        "oof": {"dice_mean": float(dice.mean()), "dice_std": float(dice.std()),
                "fold_dice_mean": float(fold_means.mean()), "fold_dice_std": float(fold_means.std()),
                "prior_dice_mean": float(d_prior.mean()), "otsu_dice_mean": float(d_otsu.mean()),
                "raw_dice_mean": float(scores["tried"]["none"])},
        "postprocessing": choice,
        "postprocessing_tried": scores["tried"],
        "test": test,
        "seconds": round(time.time() - t0, 1),
    })
    write_json(out / "cv.json", state)
    return CVResult(str(out), len(fold_runs), float(dice.mean()), float(fold_means.mean()),
                    float(fold_means.std()), float(d_prior.mean()), float(d_otsu.mean()), choice,
                    test, per_fold)


def _ensemble_test(fold_runs, ds, sel, choice, prior) -> dict:
    """The fold ensemble (no TTA, the chosen post-processing) on the test ROIs, with the baselines."""
    from kerasseg.models.ensemble import ensemble_function, predict_ensemble
    from kerasseg.training.baselines import otsu_masks
    from kerasseg.training.run import load_run

    members = [load_run(r)[0] for r in fold_runs]
    out = predict_ensemble(ensemble_function(members, tta="none", postprocessing=choice), ds.images[sel])
    masks = ds.masks[sel]
    return {"n": int(sel.sum()),
            "ensemble_dice": float(dice_array(out["mask"], masks).mean()),
            "prior_dice": float(dice_array(np.broadcast_to(prior, masks.shape), masks).mean()),
            "otsu_dice": float(dice_array(otsu_masks(ds.images[sel]), masks).mean())}
