"""Dataset readers: INbreast, DDSM-BCRP, CBIS-DDSM, folders of images, and the phantom.

Every reader yields :class:`ImageRecord` objects (one full image with the masks of its masses);
:func:`prepare` crops the ROIs (:mod:`kerasseg.data.roi`), assigns the splits
(:mod:`kerasseg.data.splits`) and returns a :class:`~kerasseg.data.dataset.ROIDataset` plus a
summary of what was read and skipped. ``kerasseg data prepare`` is a thin wrapper around it.
Every reader reads its image files with :mod:`kerasseg.data.imageio` (the reader ``predict`` uses too).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kerasseg.data import splits as splits_mod
from kerasseg.data.dataset import ROIDataset
from kerasseg.data.roi import extract_roi
from kerasseg.errors import KerassegError, KerassegWarning

SOURCES = ("inbreast", "ddsm-bcrp", "cbis-ddsm", "folder", "phantom")
DEFAULT_SPLIT = {"inbreast": "protocol", "ddsm-bcrp": "official", "cbis-ddsm": "official",
                 "folder": "random"}


@dataclass
class ImageRecord:
    """One full image and the masks of its masses, as a reader found them."""

    image_id: str
    image: np.ndarray                       # float (H, W)
    masks: list                             # list of bool (H, W), one per mass
    spacing: tuple | None = None            # (row, col) pixel size in mm
    laterality: str | None = None           # "L", "R" or None
    group: str | None = None                # patient / case, for --split patient
    official: str | None = None             # "train" / "test" from the dataset's own split
    ready_roi: bool = False                 # image and mask are already the ROI: no cropping
    mass_ids: list | None = None            # optional names of the masses (default mass1..n)


@dataclass
class Summary:
    """What a reader saw: counts and the files it skipped (with the reason)."""

    images: int = 0
    masses: int = 0
    skipped: list = field(default_factory=list)   # [(path, reason)]
    warnings: list = field(default_factory=list)  # [message]

    def skip(self, path, reason: str) -> None:
        self.skipped.append((str(path), reason))
        warnings.warn(f"{path}: {reason} (skipped)", KerassegWarning, stacklevel=2)

    def warn(self, path, message: str) -> None:
        self.warnings.append(f"{path}: {message}")
        warnings.warn(f"{path}: {message}", KerassegWarning, stacklevel=2)

    def lines(self) -> list[str]:
        out = [f"read {self.masses} mass(es) from {self.images} image(s)"]
        if self.skipped:
            out.append(f"skipped {len(self.skipped)} file(s):")
            out += [f"  {p}: {r}" for p, r in self.skipped]
        if self.warnings:
            out.append(f"{len(self.warnings)} warning(s):")
            out += [f"  {w}" for w in self.warnings]
        return out


# ----------------------------------------------------------------- output
def check_output(path) -> Path:
    """KerassegError naming ``path`` if a dataset file cannot be written there (checked before reading)."""
    from kerasseg.fileio import output_file

    return output_file(path, ".npz")


# ----------------------------------------------------------------- assembly
def build_dataset(records, *, size=40, margin=0.0, mirror=False, split="auto", seed=0,
                  test_fraction=0.5, val_fraction=0.1, source="unknown", summary=None,
                  default_split="random") -> ROIDataset:
    """Crop every mass of every record and assign splits; see :func:`prepare`."""
    summary = summary if summary is not None else Summary()
    images, masks, ids, boxes, spacings = [], [], [], [], []
    order_keys, groups, official = [], [], []
    for rec in records:
        summary.images += 1
        flip = bool(mirror and rec.laterality == "R")
        for k, m in enumerate(rec.masks, start=1):
            name = rec.mass_ids[k - 1] if rec.mass_ids else f"mass{k}"
            if rec.ready_roi:
                from kerasseg.data.roi import resize_image, resize_mask

                roi, roi_mask = resize_image(rec.image, size), resize_mask(m, size)
                h, w = rec.image.shape
                box = (0, 0, w, h)
                roi_sp = None
                if rec.spacing is not None:
                    roi_sp = float(np.sqrt(rec.spacing[0] * h * rec.spacing[1] * w) / size)
                if flip:
                    roi, roi_mask = roi[:, ::-1].copy(), roi_mask[:, ::-1].copy()
            else:
                roi, roi_mask, box, roi_sp = extract_roi(rec.image, m, size=size, margin=margin,
                                                         mirror=flip, spacing=rec.spacing)
            images.append(roi)
            masks.append(roi_mask)
            ids.append(f"{rec.image_id}-{name}")
            boxes.append(box)
            spacings.append(np.nan if roi_sp is None else roi_sp)
            order_keys.append((splits_mod.natural_key(rec.image_id), k))
            groups.append(rec.group if rec.group is not None else rec.image_id)
            official.append(rec.official)
            summary.masses += 1
    n = len(images)
    if n == 0:
        raise KerassegError("no masses found (empty result)")
    method = default_split if split == "auto" else split
    if method == "official":
        missing = [i for i, o in zip(ids, official) if o not in ("train", "test")]
        if missing:
            raise KerassegError(f"{missing[0]}: no official train/test label ({len(missing)} ROI(s)); "
                                "give the official case lists or use --split patient / random")
    labels = splits_mod.assign(method, n=n, order_keys=order_keys, groups=groups,
                               official=official if method == "official" else None,
                               test_fraction=test_fraction, val_fraction=val_fraction, seed=seed)
    sp = np.asarray(spacings, dtype=np.float32)
    return ROIDataset(
        images=np.stack(images), masks=np.stack(masks), split=labels, ids=np.asarray(ids),
        spacing_mm=None if np.all(np.isnan(sp)) else sp,
        boxes=np.asarray(boxes, dtype=np.int32), source=source, group=np.asarray(groups),
    )


def prepare(source: str, src, *, size: int = 40, margin: float = 0.0, split: str = "auto",
            seed: int = 0, mirror: bool = False, ready_rois: bool = False,
            test_fraction: float = 0.5, val_fraction: float = 0.1,
            train_list=None, test_list=None, progress: bool = False):
    """Read ``src`` as ``source`` and return ``(ROIDataset, Summary)``.

    ``split``: "auto" (the source's default: inbreast "protocol", ddsm-bcrp and cbis-ddsm
    "official", folder "random"), "protocol", "official", "patient" or "random"; see
    :mod:`kerasseg.data.splits`. ``margin`` is a fraction of the box size (see :mod:`kerasseg.data.roi`).
    """
    if source not in SOURCES:
        raise KerassegError(f"unknown source {source!r}; choose one of {list(SOURCES)}")
    if int(size) < 2:
        raise KerassegError(f"--size must be >= 2, got {size}")
    if margin < 0:
        raise KerassegError(f"--margin must be >= 0, got {margin}")
    if split != "auto" and split not in splits_mod.METHODS:
        raise KerassegError(f"unknown split {split!r}; choose auto or one of {list(splits_mod.METHODS)}")
    summary = Summary()
    if source == "phantom":
        from kerasseg.data.phantom import make_phantom

        ds = make_phantom(size=int(size), seed=int(seed))
        summary.images = summary.masses = len(ds)
        return ds, summary
    src = Path(src)
    if not src.exists():
        raise KerassegError("no such file or folder", src)
    if source == "inbreast":
        from kerasseg.data.readers.inbreast import iter_inbreast

        records = iter_inbreast(src, summary)
    elif source == "ddsm-bcrp":
        from kerasseg.data.readers.ddsm import iter_ddsm

        records = iter_ddsm(src, summary, train_list=train_list, test_list=test_list)
    elif source == "cbis-ddsm":
        from kerasseg.data.readers.cbis import iter_cbis

        records = iter_cbis(src, summary)
    else:
        from kerasseg.data.readers.folder import iter_folder

        records = iter_folder(src, summary, ready_rois=ready_rois)
    if progress:
        from tqdm import tqdm

        records = tqdm(records, desc=f"reading {source}", unit="image", leave=False)
    ds = build_dataset(records, size=int(size), margin=float(margin), mirror=mirror, split=split,
                       seed=int(seed), test_fraction=test_fraction, val_fraction=val_fraction,
                       source=source, summary=summary, default_split=DEFAULT_SPLIT[source])
    return ds, summary
