"""Builders of small dataset fixtures in the real on-disk formats (DICOM, OsiriX plist, DDSM
overlay + .ics, CBIS-DDSM CSV, folders of PNGs), used by the reader and data CLI tests."""

from __future__ import annotations

import csv
import plistlib
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from skimage.io import imsave

# chain-code steps (dx, dy): 0 up, then clockwise in 45 degree steps
CHAIN = {0: (0, -1), 1: (1, -1), 2: (1, 0), 3: (1, 1), 4: (0, 1), 5: (-1, 1), 6: (-1, 0), 7: (-1, -1)}


def write_dicom(path, pixels, spacing=(0.07, 0.07), laterality=None, photometric="MONOCHROME2",
                pixel_data=True, patient_id="P1", slope=None, intercept=None):
    """A minimal valid DICOM file holding a uint16 image (written with pydicom)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"  # digital mammography
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID = patient_id
    ds.Modality = "MG"
    if laterality:
        ds.ImageLaterality = laterality
    if pixel_data:
        arr = np.asarray(pixels, dtype=np.uint16)
        ds.Rows, ds.Columns = arr.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.PixelData = arr.tobytes()
    if spacing is not None:
        ds.PixelSpacing = [float(spacing[0]), float(spacing[1])]
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    ds.save_as(path, enforce_file_format=True)
    return path


def osirix_plist(rois):
    """OsiriX plist bytes; ``rois`` is a list of (name, [(x, y), ...])."""
    roi_dicts = [{"Name": name, "NumberOfPoints": len(pts),
                  "Point_px": [f"({x:.2f}, {y:.2f})" for x, y in pts],
                  "Point_mm": [f"({x * 0.07:.3f}, {y * 0.07:.3f}, 0.0)" for x, y in pts]}
                 for name, pts in rois]
    return plistlib.dumps({"Images": [{"ImageIndex": 0, "NumberOfROIs": len(rois), "ROIs": roi_dicts}]},
                          fmt=plistlib.FMT_XML)


def gradient_image(h, w, seed=0):
    """A smooth image with noise, unique per seed (uint16 range)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    return (1000 + 3 * xx + 2 * yy + rng.integers(0, 50, (h, w))).astype(np.uint16)


def make_inbreast(root, cases):
    """INbreast release folder. ``cases``: list of dicts with id, patient, lat, shape (h, w), rois.

    Returns the root path.
    """
    root = Path(root)
    (root / "AllDICOMs").mkdir(parents=True, exist_ok=True)
    (root / "AllXML").mkdir(parents=True, exist_ok=True)
    for i, c in enumerate(cases):
        h, w = c.get("shape", (150, 200))
        if c.get("dicom", True):
            write_dicom(root / "AllDICOMs" / f"{c['id']}_{c['patient']}_MG_{c['lat']}_CC_ANON.dcm",
                        gradient_image(h, w, seed=i), spacing=c.get("spacing", (0.07, 0.07)))
        (root / "AllXML" / f"{c['id']}.xml").write_bytes(osirix_plist(c["rois"]))
    return root


def rect(x0, y0, x1, y1):
    """Polygon vertices of an axis-aligned rectangle (x = column)."""
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def chain_outline(x0, y0, codes):
    """Pixel path (x, y) visited by a DDSM chain code from (x0, y0)."""
    pts = [(x0, y0)]
    for c in codes:
        dx, dy = CHAIN[c]
        pts.append((pts[-1][0] + dx, pts[-1][1] + dy))
    return pts


def overlay_text(abnormalities):
    """DDSM .OVERLAY text; ``abnormalities``: list of (lesion_type, start_x, start_y, codes)."""
    lines = [f"TOTAL_ABNORMALITIES {len(abnormalities)}"]
    for k, (lesion, x, y, codes) in enumerate(abnormalities, start=1):
        lines += [f"ABNORMALITY {k}", f"LESION_TYPE {lesion}", "ASSESSMENT 4", "SUBTLETY 3",
                  "PATHOLOGY MALIGNANT", "TOTAL_OUTLINES 1", "BOUNDARY",
                  f"{x} {y} " + " ".join(str(c) for c in codes) + " #"]
    return "\n".join(lines) + "\n"


def make_ddsm_case(folder, case, views, bits=12, resolution=50):
    """One DDSM case folder: ``views`` maps view name (LEFT_CC...) -> (image uint16 or None, abnormalities)."""
    folder = Path(folder) / case
    folder.mkdir(parents=True, exist_ok=True)
    stem = "A_" + case.replace("case", "") + "_1"
    lines = ["ics_version 1.0", f"filename {stem}", "SELECTED"]
    for view, (img, abn) in views.items():
        h, w = img.shape if img is not None else (100, 100)
        tag = "OVERLAY" if abn else "NON_OVERLAY"
        lines.append(f"{view} LINES {h} PIXELS_PER_LINE {w} BITS_PER_PIXEL {bits} RESOLUTION {resolution} {tag}")
        if img is not None:
            imsave(folder / f"{stem}.{view}.png", img, check_contrast=False)
        if abn:
            (folder / f"{stem}.{view}.OVERLAY").write_text(overlay_text(abn))
    (folder / f"{stem}.ics").write_text("\n".join(lines) + "\n")
    return folder


def write_cbis(root, rows, csv_name="mass_case_description_train_set.csv"):
    """CBIS-DDSM layout (TCIA download style) + CSV. ``rows``: dicts with patient, side, view, abn,
    image (uint16), mask (bool), crop (uint16). Returns the CSV path."""
    root = Path(root)
    out = []
    prefix = "Mass-Training" if "train" in csv_name else "Mass-Test"
    for r in rows:
        base = f"{prefix}_{r['patient']}_{r['side']}_{r['view']}"
        full_rel = f"{base}/1.3.6.1.4.1.9590.100.1.2.1/1.3.6.1.4.1.9590.100.1.2.2/000000.dcm"
        # the TCIA download does not keep the CSV's folder names below the first component
        full_disk = root / "CBIS-DDSM" / base / "07-20-2016-DDSM-1" / "1.000000-full mammogram images-1" / "1-1.dcm"
        if not full_disk.exists():
            write_dicom(full_disk, r["image"], spacing=None)
        roi_base = f"{base}_{r['abn']}"
        crop_rel = f"{roi_base}/1.3.6.1.4.1.9590.100.1.2.3/1.3.6.1.4.1.9590.100.1.2.4/000000.dcm"
        mask_rel = f"{roi_base}/1.3.6.1.4.1.9590.100.1.2.3/1.3.6.1.4.1.9590.100.1.2.4/000001.dcm"
        roi_dir = root / "CBIS-DDSM" / roi_base / "07-21-2016-DDSM-2" / "1.000000-ROI mask images-2"
        write_dicom(roi_dir / "1-1.dcm", r["crop"], spacing=None)
        write_dicom(roi_dir / "1-2.dcm", r["mask"].astype(np.uint16) * 255, spacing=None)
        out.append({"patient_id": r["patient"], "breast_density": 3, "left or right breast": r["side"],
                    "image view": r["view"], "abnormality id": r["abn"], "abnormality type": "mass",
                    "mass shape": "OVAL", "mass margins": "CIRCUMSCRIBED", "assessment": 4,
                    "pathology": "MALIGNANT", "subtlety": 4, "image file path": full_rel,
                    "cropped image file path": crop_rel, "ROI mask file path": mask_rel + "\n"})
    csv_path = root / csv_name
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(out[0]))
        writer.writeheader()
        writer.writerows(out)
    return csv_path


def disc_crf_problem(rng, b=2, h=40, w=40):
    """Normalised disc-mass ROIs (B, H, W, 1) and noisy two-class unaries (B, H, W, 2), float32.

    The images are normalised over the batch (range ~6 standard deviations, like normalised ROIs).
    """
    yy, xx = np.mgrid[:h, :w]
    imgs, unary = [], []
    for _ in range(b):
        cy, cx, r = rng.uniform(h * 0.35, h * 0.65), rng.uniform(w * 0.35, w * 0.65), rng.uniform(6, 11)
        m = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(float)
        imgs.append(1.5 * m + 0.4 * rng.standard_normal((h, w)))
        logit = 2 * (m - 0.5) + 1.2 * rng.standard_normal((h, w))
        unary.append(np.stack([-logit, logit], -1) / 2)
    img = np.array(imgs)[..., None]
    img = (img - img.mean()) / img.std()
    return img.astype(np.float32), np.array(unary, np.float32)
