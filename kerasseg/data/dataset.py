"""The dataset file: the contract between ``kerasseg.data`` and everything else.

A prepared dataset is one compressed ``.npz`` with

- ``images``  float32 (N, H, W): ROI intensities as read (normalisation happens in the pipeline)
- ``masks``   uint8 (N, H, W) in {0, 1}
- ``split``   str (N,) in {"train", "val", "test"}
- ``ids``     str (N,): stable ids such as ``<image id>-mass<k>``
- optional ``spacing_mm`` float32 (N,), ``boxes`` int32 (N, 4) (x0, y0, x1, y1 in original
  pixel coordinates, x = column), ``group`` str (N,) (the patient, case or source image a ROI
  comes from: splits and cross-validation folds never put one group on both sides; the readers
  fill it) and ``source`` (str scalar).
- optional context windows (for boxes other than the tight one; :mod:`kerasseg.data.boxes`):
  ``context`` float32 (N, C, C): a square window of the image centred on the tight box, its side
  twice the box's longer side, resampled to C x C (C = 128 by default) with the one resize
  (:func:`kerasseg.data.transforms.resize`); ``context_mask`` uint8 (N, C, C) the mass in it;
  ``context_box`` float32 (N, 4) the tight box ``(y0, x0, y1, x1)`` in window pixels, ends
  exclusive; ``context_valid`` float32 (N, 4) the part of the window that lies inside the image
  ``(y0, x0, y1, x1)`` (the rest is edge padding; absent = the whole window);
  ``context_spacing_mm`` float32 (N,) the window's pixel size (mm; NaN unknown). Context arrays
  are not part of :meth:`ROIDataset.data_hash` (the tight ROIs are the data of every table row).
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kerasseg.errors import KerassegError
from kerasseg.fileio import atomic_write

SPLITS = ("train", "val", "test")
#: the optional context-window arrays (module docstring), saved and loaded when present
CONTEXT_KEYS = ("context", "context_mask", "context_box", "context_valid", "context_spacing_mm")


@dataclass
class ROIDataset:
    """ROIs with masks, split labels and ids; see the module docstring for the fields."""

    images: np.ndarray
    masks: np.ndarray
    split: np.ndarray
    ids: np.ndarray
    spacing_mm: np.ndarray | None = None
    boxes: np.ndarray | None = None
    source: str = "unknown"
    group: np.ndarray | None = None
    _hash: str | None = field(default=None, repr=False, compare=False)
    context: np.ndarray | None = None          # float32 (N, C, C)
    context_mask: np.ndarray | None = None     # uint8 (N, C, C)
    context_box: np.ndarray | None = None      # float32 (N, 4) y0, x0, y1, x1 in window pixels
    context_valid: np.ndarray | None = None    # float32 (N, 4) y0, x0, y1, x1: inside the image
    context_spacing_mm: np.ndarray | None = None  # float32 (N,)
    #: where the ROIs were read from (a .npz path, "phantom"); named in errors, not part of the data
    origin: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        images, masks = np.asarray(self.images), np.asarray(self.masks)
        # checked before the casts below, which would silently drop an imaginary part or
        # truncate a fractional mask value (0.5 -> 0)
        for name, arr in (("images", images), ("masks", masks)):
            if arr.dtype.kind not in "biuf":
                raise KerassegError(f"{name} must be real numbers, got dtype {arr.dtype}")
        if masks.size and not np.isin(masks, (0, 1)).all():
            bad = masks[~np.isin(masks, (0, 1))].ravel()[:3].tolist()
            raise KerassegError(f"masks must contain only 0 and 1 (binary), found e.g. {bad}")
        self.images = images.astype(np.float32)
        self.masks = masks.astype(np.uint8)
        self.split = np.asarray(self.split).astype(str)
        self.ids = np.asarray(self.ids).astype(str)
        if self.spacing_mm is not None:
            self.spacing_mm = np.asarray(self.spacing_mm, dtype=np.float32)
        if self.boxes is not None:
            self.boxes = np.asarray(self.boxes, dtype=np.int32)
        if self.group is not None:
            self.group = np.asarray(self.group).astype(str)
        for name in CONTEXT_KEYS:
            arr = getattr(self, name)
            if arr is not None:
                arr = np.asarray(arr)
                if arr.dtype.kind not in "biuf":
                    raise KerassegError(f"{name} must be real numbers, got dtype {arr.dtype}")
                if name == "context_mask" and arr.size and not np.isin(arr, (0, 1)).all():
                    raise KerassegError("context_mask must contain only 0 and 1 (binary)")
                setattr(self, name, arr.astype(np.uint8 if name == "context_mask" else np.float32))
        if self.context is not None and self.context_valid is None:
            c = self.context.shape[-1] if self.context.ndim == 3 else 0
            self.context_valid = np.tile(np.asarray([0, 0, c, c], np.float32), (len(self.context), 1))
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self, path=None) -> None:
        """Raise :class:`KerassegError` if the arrays do not follow the contract."""
        n = len(self.images)
        if self.images.ndim != 3:
            raise KerassegError(f"images must be (N, H, W), got shape {self.images.shape}", path)
        if self.images.shape[1] != self.images.shape[2]:
            raise KerassegError(f"ROIs must be square (N, S, S), got {self.images.shape[1]}x{self.images.shape[2]}",
                                path)
        if self.masks.shape != self.images.shape:
            raise KerassegError(
                f"masks shape {self.masks.shape} differs from images shape {self.images.shape}", path
            )
        for name in ("split", "ids"):
            arr = getattr(self, name)
            if arr.shape != (n,):
                raise KerassegError(f"{name} must have shape ({n},), got {arr.shape}", path)
        if self.spacing_mm is not None and self.spacing_mm.shape != (n,):
            raise KerassegError(f"spacing_mm must have shape ({n},), got {self.spacing_mm.shape}", path)
        if self.spacing_mm is not None:
            known = self.spacing_mm[~np.isnan(self.spacing_mm)]
            if not np.all(np.isfinite(known) & (known > 0)):
                raise KerassegError("spacing_mm must be > 0 and finite (NaN = unknown for that ROI), got "
                                    f"e.g. {known[~(np.isfinite(known) & (known > 0))][:3].tolist()}", path)
        if self.group is not None:
            if self.group.shape != (n,):
                raise KerassegError(f"group must have shape ({n},), got {self.group.shape}", path)
            if n and (np.char.str_len(self.group) == 0).any():
                raise KerassegError("group labels must be non-empty strings", path)
        if self.boxes is not None and self.boxes.shape != (n, 4):
            raise KerassegError(f"boxes must have shape ({n}, 4), got {self.boxes.shape}", path)
        self._validate_context(n, path)
        bad = sorted(set(self.split.tolist()) - set(SPLITS))
        if bad:
            raise KerassegError(f"unknown split label(s) {bad}; allowed: {list(SPLITS)}", path)
        if n and self.masks.max() > 1:
            raise KerassegError("masks must contain only 0 and 1", path)
        if len(set(self.ids.tolist())) != n:
            raise KerassegError("ids are not unique", path)
        if n and not np.all(np.isfinite(self.images)):
            raise KerassegError("images contain NaN or infinite values", path)

    def _validate_context(self, n: int, path) -> None:
        present = [k for k in CONTEXT_KEYS if getattr(self, k) is not None]
        if not present:
            return
        missing = [k for k in ("context", "context_mask", "context_box") if getattr(self, k) is None]
        if missing:
            raise KerassegError(f"context windows need {missing} too (has {present})", path)
        c = self.context
        if c.ndim != 3 or c.shape[0] != n or c.shape[1] != c.shape[2] or c.shape[1] < 8:
            raise KerassegError(f"context must be ({n}, C, C) with C >= 8, got {c.shape}", path)
        side = c.shape[1]
        if self.context_mask.shape != c.shape:
            raise KerassegError(f"context_mask shape {self.context_mask.shape} differs from context "
                                f"shape {c.shape}", path)
        for name in ("context_box", "context_valid"):
            box = getattr(self, name)
            if box.shape != (n, 4):
                raise KerassegError(f"{name} must have shape ({n}, 4), got {box.shape}", path)
            bad = ~(np.isfinite(box).all(1) & (box[:, 0] >= 0) & (box[:, 1] >= 0) & (box[:, 2] <= side)
                    & (box[:, 3] <= side) & (box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1]))
            if n and bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise KerassegError(f"{name} of {self.ids[i]} is not a box (y0, x0, y1, x1) inside the "
                                    f"{side}x{side} window: {box[i].tolist()}", path)
        if self.context_spacing_mm is not None and self.context_spacing_mm.shape != (n,):
            raise KerassegError(f"context_spacing_mm must have shape ({n},), got "
                                f"{self.context_spacing_mm.shape}", path)
        if n and not np.all(np.isfinite(c)):
            raise KerassegError("context contains NaN or infinite values", path)

    @property
    def has_context(self) -> bool:
        """Whether the file carries context windows (needed for box jitter and any-box scoring)."""
        return self.context is not None

    def _context_fields(self, index=None) -> dict:
        return {k: (None if getattr(self, k) is None else
                    (getattr(self, k) if index is None else getattr(self, k)[index]))
                for k in CONTEXT_KEYS}

    # ----------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self.images)

    @property
    def size(self) -> int:
        """ROI side length H (== W)."""
        return int(self.images.shape[1])

    def subset(self, split: str) -> "ROIDataset":
        """The ROIs of one split; a clear error if the split is unknown or empty."""
        if split not in SPLITS:
            raise KerassegError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
        sel = self.split == split
        if not sel.any():
            present = sorted(set(self.split.tolist()))
            raise KerassegError(f"the dataset has no {split!r} ROIs (splits present: {present})", self.origin)
        return self.select(sel)

    def select(self, index) -> "ROIDataset":
        """A new dataset with the rows given by a boolean mask or integer index."""
        return ROIDataset(
            images=self.images[index],
            masks=self.masks[index],
            split=self.split[index],
            ids=self.ids[index],
            spacing_mm=None if self.spacing_mm is None else self.spacing_mm[index],
            boxes=None if self.boxes is None else self.boxes[index],
            source=self.source,
            group=None if self.group is None else self.group[index],
            origin=self.origin,
            **self._context_fields(index),
        )

    def groups(self) -> np.ndarray:
        """The group of every ROI: the ``group`` array, or each ROI its own group (its id) without one."""
        return self.ids.copy() if self.group is None else self.group.copy()

    def with_split(self, split) -> "ROIDataset":
        """The same ROIs with other split labels (e.g. one cross-validation fold)."""
        return ROIDataset(images=self.images, masks=self.masks, split=np.asarray(split), ids=self.ids,
                          spacing_mm=self.spacing_mm, boxes=self.boxes, source=self.source,
                          group=self.group, origin=self.origin, **self._context_fields())

    def counts(self) -> dict:
        """Number of ROIs per split."""
        return {s: int((self.split == s).sum()) for s in SPLITS}

    def data_hash(self) -> str:
        """A short content hash (images, masks, split, ids) that identifies the data."""
        if self._hash is None:
            h = hashlib.sha256()
            for arr in (self.images, self.masks):
                h.update(np.ascontiguousarray(arr).tobytes())
                h.update(str(arr.shape).encode())
            for arr in (self.split, self.ids):
                h.update("\x00".join(arr.tolist()).encode())
            self._hash = h.hexdigest()[:16]
        return self._hash


def save_npz(ds: ROIDataset, path) -> Path:
    """Write ``ds`` to ``path`` (compressed .npz) atomically: temp file beside it, then rename."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    ds.validate()
    if len(ds) == 0:
        raise KerassegError("refusing to write an empty dataset", path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise KerassegError("output folder does not exist", parent)
    arrays = {"images": ds.images, "masks": ds.masks, "split": ds.split, "ids": ds.ids,
              "source": np.asarray(ds.source)}
    if ds.spacing_mm is not None:
        arrays["spacing_mm"] = ds.spacing_mm
    if ds.boxes is not None:
        arrays["boxes"] = ds.boxes
    if ds.group is not None:
        arrays["group"] = ds.group
    for key in CONTEXT_KEYS:
        if getattr(ds, key) is not None:
            arrays[key] = getattr(ds, key)
    return atomic_write(path, lambda fh: np.savez_compressed(fh, **arrays))


def load_npz(path) -> ROIDataset:
    """Read a dataset file; any problem is a one-line :class:`KerassegError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise KerassegError("no such dataset file", path)
    try:
        if not zipfile.is_zipfile(path):
            raise KerassegError("not a .npz archive (a .npy array or another file renamed .npz?)", path)
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("images", "masks", "split", "ids") if k not in z.files]
            if missing:
                raise KerassegError(f"not a kerasseg dataset: missing array(s) {missing}", path)
            ds = ROIDataset(
                images=z["images"],
                masks=z["masks"],
                split=z["split"],
                ids=z["ids"],
                spacing_mm=z["spacing_mm"] if "spacing_mm" in z.files else None,
                boxes=z["boxes"] if "boxes" in z.files else None,
                source=str(z["source"]) if "source" in z.files else "unknown",
                group=z["group"] if "group" in z.files else None,
                origin=str(path),
                **{k: z[k] for k in CONTEXT_KEYS if k in z.files},
            )
    except KerassegError as exc:
        msg = str(exc)
        raise KerassegError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise KerassegError(f"cannot read dataset file ({exc})", path) from None
    return ds

