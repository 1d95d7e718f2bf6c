"""What ``kerasseg predict`` writes per input: mask / uncertainty / overlay PNGs (atomic), the
measurements of a predicted mask (area, perimeter, in mm where the spacing is known), and the output
names of a run (:func:`unique_stems`: two inputs never share their output files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kerasseg.fileio import atomic_path


def measure(mask: np.ndarray, spacing_mm=None) -> dict:
    """Area (px and mm^2) and perimeter (px and mm for isotropic spacing) of a binary mask."""
    from skimage.measure import perimeter

    mask = np.asarray(mask).astype(bool)
    area = int(mask.sum())
    perim = float(perimeter(mask)) if area else 0.0
    out = {"area_px": area, "perimeter_px": perim, "area_mm2": None, "perimeter_mm": None}
    if spacing_mm is not None:
        sr, sc = (float(spacing_mm), float(spacing_mm)) if np.isscalar(spacing_mm) else map(float, spacing_mm)
        out["area_mm2"] = area * sr * sc
        if np.isclose(sr, sc):
            out["perimeter_mm"] = perim * sr
    return out


def unique_stems(inputs) -> list[str]:
    """The output stem of each input of one ``predict`` run: unique within the run, in input order.

    An input's outputs are named after its file stem (``scan.png`` -> ``scan_mask.png``, ``scan.json``).
    When several inputs share a stem (compared ignoring case, so the rule holds on case-insensitive
    file systems too) - ``a/scan.png`` and ``b/scan.png``, or ``scan.png`` and ``scan.npz`` - the first
    keeps it and each later one gets the first free ``<stem>-2``, ``<stem>-3``, ... : free means no
    earlier input got it and no input of the run has it as its own stem (``c/scan-2.png`` keeps
    ``scan-2``). Every output name is ``<stem>`` plus a suffix that no other output's suffix ends with,
    so unique stems give unique files.

    >>> unique_stems(["a/scan.png", "b/scan.png", "scan.npz", "c/scan-2.png", "x.dcm"])
    ['scan', 'scan-3', 'scan-4', 'scan-2', 'x']
    """
    stems = [Path(str(p)).stem for p in inputs]
    taken = {s.casefold() for s in stems}  # every input's own stem is reserved for it
    seen, out = set(), []
    for stem in stems:
        key = stem.casefold()
        if key not in seen:
            seen.add(key)
            out.append(stem)
            continue
        k = 2
        while f"{stem}-{k}".casefold() in taken:
            k += 1
        name = f"{stem}-{k}"
        taken.add(name.casefold())
        out.append(name)
    return out


def _atomic(path: Path, writer) -> None:
    """``writer(tmp_path)``; the temp path keeps the suffix so writers pick the format by it."""
    with atomic_path(path, suffix=Path(path).suffix) as tmp:
        writer(tmp)


def write_png(path, arr) -> None:
    import skimage.io

    _atomic(Path(path), lambda tmp: skimage.io.imsave(tmp, np.asarray(arr), check_contrast=False))


def uncertainty_to_uint8(std: np.ndarray) -> np.ndarray:
    """Uncertainty map (std of probabilities, in [0, 0.5]) -> uint8 ``round(255 * std / 0.5)``."""
    return np.clip(np.round(np.asarray(std, np.float64) * 510.0), 0, 255).astype(np.uint8)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Grey image to uint8 with a 0.5-99.5 percentile window."""
    img = np.asarray(img, dtype=np.float64)
    lo, hi = np.percentile(img, [0.5, 99.5]) if img.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    return (np.clip((img - lo) / (hi - lo), 0, 1) * 255).round().astype(np.uint8)


def overlay(img: np.ndarray, mask: np.ndarray, box=None) -> np.ndarray:
    """RGB uint8: the grey image, the mask tinted red, the mask's border and the ROI box(es) in yellow
    (``box``: one ``(x0, y0, x1, y1)`` or a list of them)."""
    grey = to_uint8(img).astype(np.float64)
    rgb = np.stack([grey] * 3, axis=-1)
    m = np.asarray(mask).astype(bool)
    rgb[m] = 0.55 * rgb[m] + 0.45 * np.array([255.0, 0.0, 0.0])
    if m.any():
        inner = m.copy()
        inner[1:, :] &= m[:-1, :]
        inner[:-1, :] &= m[1:, :]
        inner[:, 1:] &= m[:, :-1]
        inner[:, :-1] &= m[:, 1:]
        rgb[m & ~inner] = (255.0, 60.0, 60.0)
    boxes = [] if box is None else np.asarray(box, dtype=np.int64).reshape(-1, 4).tolist()
    for x0, y0, x1, y1 in boxes:
        yellow = (255.0, 220.0, 0.0)
        rgb[y0, x0:x1] = yellow
        rgb[y1 - 1, x0:x1] = yellow
        rgb[y0:y1, x0] = yellow
        rgb[y0:y1, x1 - 1] = yellow
    return rgb.round().astype(np.uint8)
