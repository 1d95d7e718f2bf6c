"""DDSM-BCRP reader.

A DDSM case folder holds ``<stem>.ics`` (one line per view: ``LEFT_CC LINES <rows> PIXELS_PER_LINE
<cols> BITS_PER_PIXEL <b> RESOLUTION <microns> OVERLAY``), the images ``<stem>.<VIEW>.LJPEG`` and, for
views with lesions, ``<stem>.<VIEW>.OVERLAY``. LJPEG decoding is not done here (no maintained PyPI
reader): put the images converted to PNG/TIFF/NPY beside the overlay as ``<stem>.<VIEW>.png`` (or
``.tif``, ``.tiff``, ``.npy``, ``.LJPEG.png``...). A converted image whose size differs from the
``.ics`` has the outlines scaled to it (with a warning).

An overlay lists ``ABNORMALITY`` blocks with ``LESION_TYPE`` (only ``MASS`` is used) and outlines:
``BOUNDARY`` followed by a chain code ``x y d1 d2 ... #`` (start column, row, then directions 0..7:
0 up, clockwise in 45 degree steps). The mask is the boundary pixels plus the filled interior.

Official split: ``--train-list`` / ``--test-list`` text files of case names (``case0029`` or the
stem ``A_0029_1``), or the folder layout of the BCRP volumes (a path component named like
``bcrp_mass_0`` / ``mass_0`` / ``train`` -> train, ``bcrp_mass_1`` / ``mass_1`` / ``test`` -> test).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from skimage.draw import polygon

from kerasseg.data.imageio import read_image
from kerasseg.data.readers.records import ImageRecord, existing_source
from kerasseg.data.splits import read_case_list
from kerasseg.errors import KerassegError

# (dx, dy) per chain code: 0 up, clockwise in 45 degree steps (x = column, y = row, down is +y)
CHAIN_STEPS = {0: (0, -1), 1: (1, -1), 2: (1, 0), 3: (1, 1), 4: (0, 1), 5: (-1, 1), 6: (-1, 0), 7: (-1, -1)}
_VIEW_LINE = re.compile(
    r"^\s*((?:LEFT|RIGHT)_(?:CC|MLO))\s+LINES\s+(\d+)\s+PIXELS_PER_LINE\s+(\d+)"
    r"(?:\s+BITS_PER_PIXEL\s+(\d+))?(?:\s+RESOLUTION\s+([\d.]+))?", re.I)
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".npy", ".LJPEG.png", ".LJPEG.tif", ".LJPEG.tiff", ".LJPEG.npy")
TRAIN_DIRS = {"bcrp_mass_0", "mass_0", "train", "training"}
TEST_DIRS = {"bcrp_mass_1", "mass_1", "test", "testing"}


def parse_ics(path) -> dict:
    """View name -> dict(rows, cols, bits, resolution_um) from a DDSM ``.ics`` header."""
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise KerassegError(f"cannot read .ics header ({exc.strerror})", path) from None
    views = {}
    for line in text.splitlines():
        m = _VIEW_LINE.match(line)
        if m:
            views[m.group(1).upper()] = {
                "rows": int(m.group(2)), "cols": int(m.group(3)),
                "bits": int(m.group(4)) if m.group(4) else None,
                "resolution_um": float(m.group(5)) if m.group(5) else None}
    if not views:
        raise KerassegError("no view lines (LEFT_CC LINES ... PIXELS_PER_LINE ...) in .ics header", path)
    return views


def chain_to_points(x0: int, y0: int, codes) -> np.ndarray:
    """The (x, y) pixel path of a chain code starting at (x0, y0), start included."""
    steps = np.array([CHAIN_STEPS[c] for c in codes], dtype=np.int64).reshape(-1, 2)
    pts = np.vstack([[x0, y0], np.array([x0, y0]) + np.cumsum(steps, axis=0)])
    return pts


def parse_overlay(path) -> list[dict]:
    """Abnormalities of a ``.OVERLAY``: dicts with ``lesion`` (str), ``boundaries`` (list of (K, 2) x, y)."""
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise KerassegError(f"cannot read overlay ({exc.strerror})", path) from None
    tokens = text.split()
    abns, cur, i = [], None, 0
    while i < len(tokens):
        tok = tokens[i].upper()
        if tok == "ABNORMALITY":
            cur = {"lesion": "", "boundaries": []}
            abns.append(cur)
            i += 2
            continue
        if tok == "LESION_TYPE" and cur is not None:
            j = i + 1
            words = []
            while j < len(tokens) and tokens[j].upper() not in ("ASSESSMENT", "SUBTLETY", "PATHOLOGY",
                                                              "TOTAL_OUTLINES", "BOUNDARY", "ABNORMALITY"):
                words.append(tokens[j].upper())
                j += 1
            cur["lesion"] += " " + " ".join(words)
            i = j
            continue
        if tok in ("BOUNDARY", "CORE"):
            j = i + 1
            chain = []
            while j < len(tokens) and tokens[j] != "#":
                chain.append(tokens[j])
                j += 1
            if j >= len(tokens):
                raise KerassegError(f"chain code after {tok} does not end with '#'", path)
            try:
                nums = [int(t) for t in chain]
            except ValueError:
                raise KerassegError(f"chain code after {tok} has a non-integer token", path) from None
            if len(nums) < 2:
                raise KerassegError(f"chain code after {tok} has no start point", path)
            bad = [c for c in nums[2:] if c not in CHAIN_STEPS]
            if bad:
                raise KerassegError(f"chain code direction {bad[0]} is not in 0..7", path)
            if tok == "BOUNDARY":
                if cur is None:
                    raise KerassegError("BOUNDARY before any ABNORMALITY", path)
                cur["boundaries"].append(chain_to_points(nums[0], nums[1], nums[2:]))
            i = j + 1
            continue
        i += 1
    return abns


def outline_mask(points: np.ndarray, shape, path=None, summary=None) -> np.ndarray:
    """Boundary pixels plus interior of a closed pixel outline (x, y), clipped to ``shape``."""
    h, w = shape
    x, y = points[:, 0], points[:, 1]
    if x.min() < 0 or y.min() < 0 or x.max() > w - 1 or y.max() > h - 1:
        if summary is not None:
            summary.warn(path, f"outline leaves the {w}x{h} image; clipped")
    mask = np.zeros(shape, dtype=bool)
    if len(points) >= 3:
        rr, cc = polygon(y, x, shape=shape)
        mask[rr, cc] = True
    xi, yi = np.round(x).astype(int), np.round(y).astype(int)
    inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    mask[yi[inside], xi[inside]] = True
    return mask


def find_image(folder: Path, stem: str, view: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        for cand in (folder / f"{stem}.{view}{suffix}", folder / f"{stem}.{view}{suffix.upper()}"):
            if cand.is_file():
                return cand
    return None


def _official(case_dir: Path, stem: str, src: Path, train: set | None, test: set | None):
    names = {case_dir.name.lower(), stem.lower()}
    if train is not None or test is not None:
        if train and names & train:
            return "train"
        if test and names & test:
            return "test"
        return None
    try:
        parts = [p.lower() for p in case_dir.relative_to(src).parts]
    except ValueError:
        parts = []
    parts += [src.name.lower()]
    if any(p in TRAIN_DIRS for p in parts):
        return "train"
    if any(p in TEST_DIRS for p in parts):
        return "test"
    return None


def iter_ddsm(src, summary, train_list=None, test_list=None, **_options):
    """The records (lazily, as a generator): an :class:`ImageRecord` per view with at least one mass outline;
    ``src`` must exist."""
    return _records(existing_source(src), summary, train_list, test_list)


def _records(src, summary, train_list, test_list):
    src = Path(src)
    train = read_case_list(train_list) if train_list else None
    test = read_case_list(test_list) if test_list else None
    ics_files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() == ".ics")
    if not ics_files:
        raise KerassegError("no DDSM .ics headers found", src)
    for ics in ics_files:
        stem = ics.stem
        official = _official(ics.parent, stem, src, train, test)
        if official is None and (train is not None or test is not None):
            summary.skip(ics, "case is in neither --train-list nor --test-list")
            continue
        views = parse_ics(ics)
        for view, info in views.items():
            overlay = next((p for p in (ics.parent / f"{stem}.{view}.OVERLAY", ics.parent / f"{stem}.{view}.overlay")
                            if p.is_file()), None)
            if overlay is None:
                continue
            abns = [a for a in parse_overlay(overlay) if re.search(r"\bMASS\b", a["lesion"])]
            outlines = [b for a in abns for b in a["boundaries"][:1]]
            if not outlines:
                continue
            img_path = find_image(ics.parent, stem, view)
            if img_path is None:
                raise KerassegError(
                    f"no decoded image for {stem}.{view}.LJPEG: convert it to {stem}.{view}.png (or .tif/.npy) "
                    "beside the overlay", ics.parent / f"{stem}.{view}.LJPEG")
            image = read_image(img_path).pixels
            scale = np.array([image.shape[1] / info["cols"], image.shape[0] / info["rows"]])
            if not np.allclose(scale, 1.0):
                summary.warn(img_path, f"image is {image.shape[1]}x{image.shape[0]} but the .ics says "
                                       f"{info['cols']}x{info['rows']}; outlines scaled")
            masks = []
            for pts in outlines:
                m = outline_mask(pts * scale, image.shape, overlay, summary)
                if m.any():
                    masks.append(m)
                else:
                    summary.warn(overlay, "a mass outline lies outside the image; ignored")
            if not masks:
                continue
            res = info["resolution_um"]
            spacing = None
            if res:
                spacing = (res / 1000.0 / scale[1], res / 1000.0 / scale[0])
            yield ImageRecord(image_id=f"{stem}.{view}", image=image, masks=masks, spacing=spacing,
                              laterality="L" if view.startswith("LEFT") else "R",
                              group=ics.parent.name, official=official)
