"""CBIS-DDSM reader.

SRC is the folder holding the mass CSV(s) (``mass_case_description_{train,test}_set.csv``, found
anywhere below it) and the DICOM tree, or one CSV file (the DICOMs are then searched below its
folder). The CSV's ``image file path`` / ``ROI mask file path`` are used as they are when those
files exist; otherwise (the TCIA download renames the folders below the first one) the DICOMs are
found below the folder named by the path's first component, wherever it is. The ROI mask is the
DICOM of that ROI folder whose size equals the full image's (the folder also holds the cropped
image, and the CSV sometimes swaps the two). Rows whose files cannot be found are skipped with a
warning. The split is the CSV's own (``train``/``test`` in its name or ``Mass-Training``/``Mass-Test``
in the paths); ``--split patient`` groups by ``patient_id``.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

from kerasseg.data.imageio import read_dicom
from kerasseg.data.readers.records import ImageRecord, existing_source
from kerasseg.errors import KerassegError


def _norm(name: str) -> str:
    return " ".join(str(name).strip().lower().replace("_", " ").split())


def read_csv_rows(path) -> list[dict]:
    """Rows of a CBIS-DDSM description CSV with normalised column names."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = [{_norm(k): (v or "").strip() for k, v in r.items() if k is not None}
                    for r in csv.DictReader(fh)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise KerassegError(f"cannot read CSV ({' '.join(str(exc).split())})", path) from None
    need = {"patient id", "image file path", "roi mask file path"}
    if rows and not need <= set(rows[0]):
        raise KerassegError(f"not a CBIS-DDSM description CSV: missing column(s) {sorted(need - set(rows[0]))}", path)
    return rows


class _DicomIndex:
    """Every DICOM below ``root``, findable by the name of any folder above it."""

    def __init__(self, root: Path):
        self.root = root
        self.by_dir = defaultdict(list)
        for p in sorted(root.rglob("*")):
            if p.is_file() and p.suffix.lower() in (".dcm", ".dicom"):
                for parent in p.relative_to(root).parents:
                    if str(parent) != ".":
                        self.by_dir[parent.name.lower()].append(p)

    def candidates(self, rel: str) -> list[Path]:
        rel = rel.strip().replace("\\", "/")
        if not rel:
            return []
        exact = self.root / rel
        first = rel.split("/", 1)[0].lower()
        out = [exact] if exact.is_file() else []
        out += [p for p in self.by_dir.get(first, []) if p != exact]
        return out


def _official(csv_path: Path, rel: str):
    name = csv_path.name.lower()
    if "train" in name:
        return "train"
    if "test" in name:
        return "test"
    first = rel.split("/", 1)[0].lower()
    if "training" in first:
        return "train"
    if "test" in first:
        return "test"
    return None


def iter_cbis(src, summary, **_options):
    """The records (lazily, as a generator): an :class:`ImageRecord` per full image (its masses
    from all rows naming it); ``src`` must exist."""
    return _records(existing_source(src), summary)


def _records(src, summary):
    src = Path(src)
    if src.is_file():
        csvs, root = [src], src.parent
    else:
        root = src
        csvs = sorted(p for p in src.rglob("*.csv") if "mass" in p.name.lower())
        if not csvs:
            raise KerassegError("no CBIS-DDSM mass CSV (mass_case_description_*.csv) found", src)
    index = _DicomIndex(root)
    images = {}  # image id -> dict(rows, csv)
    for csv_path in csvs:
        for row in read_csv_rows(csv_path):
            if "mass" not in row.get("abnormality type", "mass").lower():
                continue
            rel = row["image file path"].replace("\\", "/")
            image_id = rel.split("/", 1)[0] or row["patient id"]
            entry = images.setdefault(image_id, {"rows": [], "csv": csv_path, "rel": rel})
            entry["rows"].append(row)
    if not images:
        raise KerassegError("the CSV lists no masses", csvs[0])
    for image_id, entry in images.items():
        csv_path, rel = entry["csv"], entry["rel"]
        cands = index.candidates(rel)
        if not cands:
            summary.skip(csv_path, f"full image {rel} not found below {root}")
            continue
        full_path = max(cands, key=lambda p: p.stat().st_size) if not (root / rel).is_file() else root / rel
        full = read_dicom(full_path)
        pixels = full.pixels
        masks, names = [], []
        for row in entry["rows"]:
            mask = None
            for cand in index.candidates(row["roi mask file path"]) + index.candidates(
                    row.get("cropped image file path", "")):
                if cand == full_path:
                    continue
                try:
                    arr = read_dicom(cand).pixels
                except KerassegError as exc:
                    summary.warn(cand, f"unreadable ROI DICOM ignored ({exc})")
                    continue
                if arr.shape == pixels.shape and len(np.unique(arr)) <= 2:
                    mask = arr > arr.min()
                    break
            if mask is None or not mask.any():
                summary.skip(csv_path, f"no ROI mask of the full image's size for {row['roi mask file path']}")
                continue
            masks.append(mask)
            names.append(f"mass{row.get('abnormality id', len(names) + 1) or len(names) + 1}")
        if not masks:
            continue
        side = entry["rows"][0].get("left or right breast", "").upper()[:1]
        yield ImageRecord(image_id=image_id, image=pixels, masks=masks, spacing=full.spacing_mm,
                          laterality=side if side in ("L", "R") else None,
                          group=entry["rows"][0]["patient id"], official=_official(csv_path, rel),
                          mass_ids=names)
