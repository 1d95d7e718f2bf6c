"""INbreast reader.

The release folder holds ``AllDICOMs/*.dcm`` (named ``<image id>_<patient hash>_MG_<L|R>_<view>_ANON.dcm``)
and ``AllXML/<image id>.xml``: OsiriX plists, a dict with key ``Images``, a list of dicts each with
``ROIs``, a list of dicts with ``Name``, ``NumberOfPoints`` and ``Point_px`` (strings ``"(x, y)"``
in pixel coordinates, x = column). Only ROIs named ``Mass`` are used; each is filled as a
polygon (:func:`skimage.draw.polygon`) into one mask. Images without an XML have no masses and are
not read; an XML without a matching DICOM is skipped with a warning (counted in the summary).
"""

from __future__ import annotations

import plistlib
import re
from pathlib import Path
from xml.parsers.expat import ExpatError

import numpy as np
from skimage.draw import polygon

from kerasseg.data.imageio import read_dicom
from kerasseg.data.readers.records import ImageRecord, existing_source
from kerasseg.errors import KerassegError

_FLOAT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def parse_point(text, path=None) -> tuple[float, float]:
    """``"(x, y)"`` -> (x, y) floats."""
    nums = _FLOAT.findall(str(text))
    if len(nums) < 2:
        raise KerassegError(f"cannot parse point {text!r}", path)
    return float(nums[0]), float(nums[1])


def read_mass_polygons(xml_path) -> list[np.ndarray]:
    """The polygons (each (K, 2) float array of x, y) of the ROIs named "Mass" in one OsiriX XML."""
    xml_path = Path(xml_path)
    try:
        with open(xml_path, "rb") as fh:
            plist = plistlib.load(fh)
    except (plistlib.InvalidFileException, ExpatError, ValueError, OSError) as exc:
        raise KerassegError(f"XML does not parse as an OsiriX plist ({' '.join(str(exc).split())})",
                            xml_path) from None
    if not isinstance(plist, dict) or not isinstance(plist.get("Images"), list):
        raise KerassegError("not an OsiriX ROI file: no 'Images' list", xml_path)
    polygons = []
    for image in plist["Images"]:
        rois = image.get("ROIs", []) if isinstance(image, dict) else []
        for roi in rois:
            if not isinstance(roi, dict) or str(roi.get("Name", "")).strip().lower() != "mass":
                continue
            pts = roi.get("Point_px", [])
            if not isinstance(pts, list):
                raise KerassegError(f"Mass ROI #{len(polygons) + 1}: Point_px is not a list of \"(x, y)\" "
                                    f"strings (got {type(pts).__name__})", xml_path)
            points = np.array([parse_point(p, xml_path) for p in pts], dtype=np.float64).reshape(-1, 2)
            if len(points) < 3:
                raise KerassegError(
                    f"Mass ROI #{len(polygons) + 1} has {len(points)} point(s); a contour needs at least 3",
                    xml_path)
            polygons.append(points)
    return polygons


def fill_polygon(points: np.ndarray, shape, path=None, summary=None) -> np.ndarray:
    """Bool mask of ``shape`` with the polygon (x, y points) filled; clipped (with a warning) at the border."""
    h, w = shape
    x, y = points[:, 0], points[:, 1]
    if x.min() < 0 or y.min() < 0 or x.max() > w - 1 or y.max() > h - 1:
        msg = f"contour leaves the {w}x{h} image (x {x.min():g}..{x.max():g}, y {y.min():g}..{y.max():g}); clipped"
        if summary is not None:
            summary.warn(path, msg)
    rr, cc = polygon(y, x, shape=shape)
    mask = np.zeros(shape, dtype=bool)
    mask[rr, cc] = True
    return mask


def index_dicoms(src: Path) -> dict:
    """Image id (file name up to the first ``_``) -> DICOM path."""
    folder = src / "AllDICOMs" if (src / "AllDICOMs").is_dir() else src
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix.lower() in (".dcm", ".dicom"):
            out.setdefault(p.name.split("_", 1)[0], p)
    return out


def xml_files(src: Path) -> list[Path]:
    folder = src / "AllXML" if (src / "AllXML").is_dir() else src
    return sorted((p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() == ".xml"),
                  key=lambda p: p.stem)


def name_fields(dicom_path: Path):
    """(patient hash, laterality) from ``<id>_<hash>_MG_<L|R>_...``; None where absent."""
    parts = dicom_path.stem.split("_")
    patient = parts[1] if len(parts) > 1 else None
    lat = next((p for p in parts[2:] if p in ("L", "R")), None)
    return patient, lat


def iter_inbreast(src, summary, **_options):
    """The records (lazily, as a generator): an :class:`ImageRecord` per image that has at least one Mass ROI;
    ``src`` must exist."""
    return _records(existing_source(src), summary)


def _records(src, summary):
    src = Path(src)
    xmls = xml_files(src)
    if not xmls:
        raise KerassegError("no XML annotations found (expected AllXML/*.xml)", src)
    dicoms = index_dicoms(src)
    for xml in xmls:
        image_id = xml.stem
        polygons = read_mass_polygons(xml)
        if not polygons:
            continue
        dcm = dicoms.get(image_id)
        if dcm is None:
            summary.skip(xml, f"no DICOM named {image_id}_*.dcm")
            continue
        image = read_dicom(dcm)
        pixels = image.pixels
        patient, lat = name_fields(dcm)
        masks = []
        for points in polygons:
            m = fill_polygon(points, pixels.shape, xml, summary)
            if not m.any():
                summary.warn(xml, "a Mass contour lies outside the image; ignored")
                continue
            masks.append(m)
        if not masks:
            continue
        yield ImageRecord(image_id=image_id, image=pixels, masks=masks, spacing=image.spacing_mm,
                          laterality=lat or image.laterality,
                          group=patient or image.meta.get("patient_id") or image_id)
