"""Dataset summaries: a text summary and a PNG thumbnail grid with mask contours."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kerasseg.data.dataset import SPLITS, ROIDataset
from kerasseg.errors import KerassegError


def _stats(values) -> str:
    v = np.asarray(values, dtype=np.float64)
    return (f"min {v.min():.4g}  median {np.median(v):.4g}  mean {v.mean():.4g}  "
            f"max {v.max():.4g}")


def _context_line(ds: ROIDataset) -> str:
    """One line: whether the file has context windows (:mod:`kerasseg.data.dataset`), their size C."""
    if not ds.has_context:
        return "context windows: none"
    c = ds.context.shape[1]
    line = f"context windows: {c}x{c} pixels (side twice the tight box's longer side)"
    valid = ds.context_valid
    padded = int(np.sum(np.any(valid != np.asarray([0, 0, c, c], np.float32), axis=1)))
    return line + (f", {padded} partly outside the image (edge-padded)" if padded else "")


def summarize(ds: ROIDataset) -> str:
    """A multi-line text summary: counts per split, mask areas, intensity range."""
    n = len(ds)
    if n == 0:
        return f"source: {ds.source}\nROIs: 0 (empty dataset)"
    h, w = ds.images.shape[1:]
    lines = [f"source: {ds.source}", f"ROIs: {n} of {h}x{w} pixels   data hash: {ds.data_hash()}"]
    counts = ds.counts()
    lines.append("split: " + "  ".join(f"{s} {counts[s]}" for s in SPLITS))
    lines.append(_context_line(ds))
    if ds.group is not None:
        from kerasseg.data.splits import groups_across_splits

        _, per = np.unique(ds.group, return_counts=True)
        lines.append(f"groups: {len(per)} (ROIs per group: min {per.min()}, max {per.max()})")
        leak = groups_across_splits(ds.split, ds.group)
        if leak:
            lines.append(f"warning: {len(leak)} group(s) have ROIs in more than one split "
                         f"(e.g. '{str(leak[0])}'); `kerasseg data split` re-splits by whole groups")
    else:
        lines.append("groups: none recorded (each ROI counts as its own group)")
    area = ds.masks.reshape(n, -1).sum(axis=1).astype(np.float64)
    lines.append("mask area, pixels:   " + _stats(area))
    lines.append("mask area, % of ROI: " + _stats(100.0 * area / (h * w)))
    if ds.spacing_mm is not None:
        mm2 = area * ds.spacing_mm.astype(np.float64) ** 2
        lines.append("mask area, mm^2:     " + _stats(mm2))
        lines.append("ROI pixel size, mm:  " + _stats(ds.spacing_mm))
    empty = int((area == 0).sum())
    if empty:
        lines.append(f"warning: {empty} ROI(s) have an empty mask")
    lines.append(f"intensity: min {ds.images.min():.6g}  max {ds.images.max():.6g}  "
                 f"mean {ds.images.mean():.6g}  std {ds.images.std():.6g}")
    return "\n".join(lines)


def thumbnail_grid(ds: ROIDataset, path, n: int = 32, *, cols: int = 8, dpi: int = 100) -> Path:
    """Write a PNG grid of the first ``n`` ROIs (grey, per-ROI contrast) with the mask contour
    in red and the id as title. The PNG is written atomically; returns its path."""
    path = Path(path)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise KerassegError(f"thumbnail count must be a positive integer, got {n!r}")
    if len(ds) == 0:
        raise KerassegError("cannot draw thumbnails of an empty dataset", path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise KerassegError("output folder does not exist", parent)

    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    k = min(int(n), len(ds))
    cols = max(1, min(int(cols), k))
    rows = int(np.ceil(k / cols))
    fig = Figure(figsize=(1.6 * cols, 1.75 * rows), dpi=dpi)
    FigureCanvasAgg(fig)
    for i in range(k):
        ax = fig.add_subplot(rows, cols, i + 1)
        img = ds.images[i]
        lo, hi = np.percentile(img, [1, 99])
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
        if ds.masks[i].any() and not ds.masks[i].all():
            ax.contour(ds.masks[i].astype(float), levels=[0.5], colors="r", linewidths=0.8)
        ax.set_title(f"{ds.ids[i]}\n{ds.split[i]}", fontsize=5)
        ax.set_axis_off()
    fig.tight_layout(pad=0.3)

    from kerasseg.fileio import atomic_write

    return atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=dpi))
