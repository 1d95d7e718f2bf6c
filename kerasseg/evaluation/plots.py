"""Report figures (matplotlib, Agg backend), written atomically as PNG.

- :func:`dice_histogram` -- histogram of per-image Dice and its empirical CDF side by
  side (CRU-Net Fig. 3).
- :func:`contour_grid` -- the best and the hardest cases with the ground-truth contour
  in red and the predicted contour in blue (CRU-Net Fig. 4/5).
- :func:`trimap_plot` -- trimap accuracy versus band width (Zhu Fig. 4).
- :func:`robustness_plot` -- Dice of the model and the prior versus the box margin (left) and
  the box shift (right) (``kerasseg evaluate --robustness``).

Every figure has a fixed pixel size (``figsize * dpi``), so callers know what they get.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
from skimage import measure  # noqa: E402

from kerasseg.errors import KerassegError  # noqa: E402
from kerasseg.fileio import atomic_write  # noqa: E402

DPI = 100


def save_figure(fig, path) -> Path:
    """Save ``fig`` as PNG at ``path`` atomically (temp file beside it, then rename) and close it."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        plt.close(fig)
        raise KerassegError("output folder does not exist", parent)
    try:
        return atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=DPI))
    finally:
        plt.close(fig)


def dice_histogram(dice, path, title="Test Dice", size=(10.0, 4.0)) -> Path:
    """Histogram of per-image Dice (left) and its empirical CDF (right)."""
    d = np.asarray(dice, np.float64).reshape(-1)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=size, dpi=DPI)
    bins = np.linspace(0.0, 1.0, 21)
    ax1.hist(d, bins=bins, color="tab:blue", edgecolor="white")
    ax1.set_xlabel("Dice")
    ax1.set_ylabel("number of ROIs")
    ax1.set_xlim(0, 1)
    ax1.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax1.set_title(f"{title} (n={d.size})")
    if d.size:
        xs = np.sort(d)
        ys = np.arange(1, xs.size + 1) / xs.size
        ax2.step(np.concatenate([[0.0], xs, [1.0]]), np.concatenate([[0.0], ys, [1.0]]),
                 where="post", color="tab:blue")
    ax2.set_xlabel("Dice")
    ax2.set_ylabel("cumulative fraction of ROIs")
    ax2.set_xlim(0, 1)
    ax2.set_ylim(0, 1.02)
    ax2.grid(alpha=0.3)
    ax2.set_title("empirical CDF")
    fig.tight_layout()
    return save_figure(fig, path)


def _contours(mask):
    m = np.pad(np.asarray(mask, np.float64), 1)   # closed contours at the image edge
    return [c - 1.0 for c in measure.find_contours(m, 0.5)]


def contour_grid(images, masks, preds, dice, path, k=5, ids=None, panel=2.0, preds_b=None,
                 dice_b=None, order_by="a") -> Path:
    """Two rows: the ``k`` best (top) and ``k`` hardest (bottom) cases by Dice.

    Ground truth contour red, prediction blue. With ``preds_b`` (a second model, e.g. the
    baseline) its contour is drawn in green, as in CRU-Net Fig. 4/5, and ``order_by="b"`` picks
    the best/hardest cases by ``dice_b``. Figure size is ``(k * panel, 2 * panel)`` inches.
    """
    images = np.asarray(images)
    masks = np.asarray(masks)
    preds = np.asarray(preds)
    d = np.asarray(dice, np.float64).reshape(-1)
    n = len(d)
    if not (len(images) == len(masks) == len(preds) == n):
        raise KerassegError("contour_grid: images, masks, predictions and Dice differ in length")
    k = max(1, int(k))
    db = None if dice_b is None else np.asarray(dice_b, np.float64).reshape(-1)
    order = np.argsort(-(db if (order_by == "b" and db is not None) else d), kind="stable")
    rows = [("best", order[:k]), ("hardest", order[::-1][:k])]
    fig, axes = plt.subplots(2, k, figsize=(k * panel, 2 * panel), dpi=DPI, squeeze=False)
    for r, (label, idx) in enumerate(rows):
        for j in range(k):
            ax = axes[r, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(idx):
                ax.axis("off")
                continue
            i = int(idx[j])
            ax.imshow(images[i], cmap="gray", interpolation="nearest")
            for c in _contours(masks[i]):
                ax.plot(c[:, 1], c[:, 0], color="red", linewidth=1.2)
            for c in _contours(preds[i]):
                ax.plot(c[:, 1], c[:, 0], color="blue", linewidth=1.2)
            if preds_b is not None:
                for c in _contours(preds_b[i]):
                    ax.plot(c[:, 1], c[:, 0], color="green", linewidth=1.2)
            name = "" if ids is None else f"{ids[i]}\n"
            if db is None:
                ax.set_title(f"{name}{label} Dice {d[i]:.3f}", fontsize=7)
            else:
                ax.set_title(f"{name}{label}: Dice A {d[i]:.3f} / B {db[i]:.3f}", fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def trimap_plot(accuracy: dict, path, label="model", size=(5.0, 4.0)) -> Path:
    """Trimap accuracy (y) versus band width in pixels (x); ``accuracy`` maps width -> value or None."""
    return trimap_curves({label: accuracy}, path, size=size)


def trimap_curves(curves: dict, path, size=(5.0, 4.0)) -> Path:
    """One trimap-accuracy curve per model: ``{label: {width: accuracy or None}}`` (Zhu Fig. 4)."""
    fig, ax = plt.subplots(figsize=size, dpi=DPI)
    drawn = False
    for label, accuracy in curves.items():
        items = sorted((int(w), v) for w, v in accuracy.items() if v is not None)
        if items:
            ws, vs = zip(*items)
            ax.plot(ws, np.asarray(vs) * 100.0, marker="o", label=label)
            drawn = True
    if drawn:
        ax.legend(loc="lower right", fontsize=7)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("trimap width (pixels)")
    ax.set_ylabel("pixel accuracy in band (%)")
    ax.grid(alpha=0.3)
    ax.set_title("Accuracy around the boundary")
    fig.tight_layout()
    return save_figure(fig, path)


def uncertainty_grid(images, masks, preds, uncertainty, dice, path, k=5, ids=None, panel=2.0) -> Path:
    """The ``k`` ROIs with the largest mean uncertainty: image with contours (top), the per-pixel
    uncertainty map (bottom: std over ensemble members x TTA transforms, one shared colour scale).

    Ground truth contour red, prediction blue. Uncertainty concentrates on the boundary where the
    members disagree; a bright region away from the contour marks a ROI worth a second look.
    """
    images, masks, preds = np.asarray(images), np.asarray(masks), np.asarray(preds)
    unc = np.asarray(uncertainty, np.float64)
    d = np.asarray(dice, np.float64).reshape(-1)
    if not (len(images) == len(masks) == len(preds) == len(unc) == len(d)):
        raise KerassegError("uncertainty_grid: images, masks, predictions, uncertainty and Dice differ in length")
    k = max(1, min(int(k), len(d)))
    order = np.argsort(-unc.reshape(len(unc), -1).mean(1), kind="stable")[:k]
    vmax = max(float(unc.max()), 1e-6)
    fig, axes = plt.subplots(2, k, figsize=(k * panel, 2 * panel + 0.4), dpi=DPI, squeeze=False)
    im = None
    for j, i in enumerate(order):
        top, bottom = axes[0, j], axes[1, j]
        for ax in (top, bottom):
            ax.set_xticks([])
            ax.set_yticks([])
        top.imshow(images[i], cmap="gray", interpolation="nearest")
        for c in _contours(masks[i]):
            top.plot(c[:, 1], c[:, 0], color="red", linewidth=1.2)
        for c in _contours(preds[i]):
            top.plot(c[:, 1], c[:, 0], color="blue", linewidth=1.2)
        name = "" if ids is None else f"{ids[i]}\n"
        top.set_title(f"{name}Dice {d[i]:.3f}", fontsize=7)
        im = bottom.imshow(unc[i], cmap="magma", vmin=0.0, vmax=vmax, interpolation="nearest")
        bottom.set_title(f"mean std {unc[i].mean():.3f}", fontsize=7)
    fig.colorbar(im, ax=axes[1, :].tolist(), orientation="horizontal", fraction=0.05, pad=0.05,
                 label="std of the mass probability (members x TTA)")
    return save_figure(fig, path)


def robustness_plot(table: dict, path, size=(10.0, 4.0)) -> Path:
    """Dice (%) versus the box margin (left) and versus the box shift at margin
    ``table["shift_margin"]`` (right) for the model, the prior and Otsu, mean ± std over ROIs as a
    band; ``table`` is :func:`kerasseg.evaluation.report.robustness_table`'s dict."""
    fig, axes = plt.subplots(1, 2, figsize=size, dpi=DPI)
    panels = ((axes[0], table["by_margin"], "margin", "box margin (fraction of the box, per side)",
               "Dice vs box margin (shift 0)"),
              (axes[1], table["by_shift"], "shift", "box shift (fraction of the box size)",
               f"Dice vs box shift (margin {table['shift_margin']:g})"))
    styles = (("model", "model", "tab:blue", "-"), ("prior", "prior (mean train mask)", "tab:orange", "-"),
              ("otsu", "Otsu", "tab:gray", "--"))
    for ax, entries, xkey, xlabel, title in panels:
        xs = np.array([e[xkey] for e in entries], np.float64)
        for who, label, color, ls in styles:
            mean = np.array([np.nan if e[f"{who}_dice_mean"] is None else e[f"{who}_dice_mean"]
                             for e in entries], np.float64) * 100.0
            std = np.array([np.nan if e[f"{who}_dice_std"] is None else e[f"{who}_dice_std"]
                            for e in entries], np.float64) * 100.0
            if np.all(np.isnan(mean)):
                continue
            ax.plot(xs, mean, marker="o", color=color, linestyle=ls, label=label)
            if who != "otsu":
                ax.fill_between(xs, mean - std, mean + std, color=color, alpha=0.15, linewidth=0)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("Dice % (mean ± std over ROIs)")
        ax.set_ylim(0, 100)
        ax.set_xticks(xs)
        ax.grid(alpha=0.3)
        ax.set_title(title)
        ax.legend(loc="lower left", fontsize=7)
    fig.suptitle(f"{table['split']} split, n={table['n']}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
