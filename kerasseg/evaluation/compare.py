"""Comparing two evaluation reports on the same data: :func:`compare_reports` (paired tests of
:mod:`kerasseg.evaluation.stats`) and :func:`load_predictions` (a report's predictions.npz)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from kerasseg.errors import KerassegError
from kerasseg.evaluation import metrics as M
from kerasseg.evaluation import plots
from kerasseg.evaluation import stats as S
from kerasseg.evaluation.formatting import format_p, pct
from kerasseg.fileio import write_json


def load_predictions(report) -> dict:
    """Read ``predictions.npz`` of a report folder (or the .npz itself) with clear errors."""
    path = Path(str(report))
    if path.is_dir():
        if (path / "predictions.npz").is_file() and not (path / "metrics.json").is_file():
            raise KerassegError("no metrics.json: an incomplete evaluation report (interrupted while "
                                "being replaced); run kerasseg evaluate again", path)
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
    except KerassegError:
        raise
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
    buf.write(f"  Dice mean   A {pct(r['dice_mean_a'])} %  B {pct(r['dice_mean_b'])} %\n")
    buf.write(f"  Dice pooled A {pct(r['dice_pooled_a'])} %  B {pct(r['dice_pooled_b'])} %\n")
    buf.write(f"  McNemar exact (pixels): b={mc['b']} c={mc['c']}  p={format_p(mc['pvalue'])}\n")
    buf.write(f"  Wilcoxon signed-rank (per-image Dice): W={wx['statistic']:.4g}  p={format_p(wx['pvalue'])}\n")
    buf.write(f"  Mean Dice difference A-B: {100 * bs['mean_diff']:+.2f} %  "
              f"{int(100 * bs['level'])}% bootstrap CI [{100 * bs['ci_low']:+.2f}, {100 * bs['ci_high']:+.2f}] %")
    return buf.getvalue()
