"""Assembly: the :class:`~kerasseg.data.readers.records.ImageRecord` objects of a reader become a
:class:`~kerasseg.data.dataset.ROIDataset` -- every mass cropped and resized
(:mod:`kerasseg.data.roi`), its ROI pixel size, its group, the split labels
(:mod:`kerasseg.data.splits`) and its context window (:func:`kerasseg.data.roi.context_window`
around the tight box, whatever the margin; none in a file with any already-cropped ROI, which has no
surrounding image: the windows are all or nothing).
"""

from __future__ import annotations

import numpy as np

from kerasseg.data import splits as splits_mod
from kerasseg.data.dataset import ROIDataset
from kerasseg.data.readers.records import Summary
from kerasseg.data.roi import context_window, extract_roi, mask_box, resize_image, resize_mask, roi_spacing
from kerasseg.errors import KerassegError


def build_dataset(records, *, size=40, margin=0.0, mirror=False, split="auto", seed=0,
                  test_fraction=0.5, val_fraction=0.1, source="unknown", summary=None, src=None,
                  default_split="random", context_size=128) -> ROIDataset:
    """Crop every mass of every record and assign splits; see :func:`kerasseg.data.readers.prepare`.
    ``context_size``: side of the context windows (0 or None: none)."""
    summary = summary if summary is not None else Summary()
    images, masks, ids, boxes, spacings = [], [], [], [], []
    order_keys, groups, official = [], [], []
    windows = [] if context_size else None   # None once a record has no surrounding image
    for rec in records:
        summary.images += 1
        flip = bool(mirror and rec.laterality == "R")
        for k, m in enumerate(rec.masks, start=1):
            name = rec.mass_ids[k - 1] if rec.mass_ids else f"mass{k}"
            if rec.ready_roi:
                roi, roi_mask = resize_image(rec.image, size), resize_mask(m, size)
                h, w = rec.image.shape
                box = (0, 0, w, h)
                roi_sp = roi_spacing(rec.spacing, h, w, size)
                if flip:
                    roi, roi_mask = roi[:, ::-1].copy(), roi_mask[:, ::-1].copy()
                windows = None
            else:
                roi, roi_mask, box, roi_sp = extract_roi(rec.image, m, size=size, margin=margin,
                                                         mirror=flip, spacing=rec.spacing)
                if windows is not None:
                    windows.append(context_window(rec.image, m, mask_box(m), size=int(context_size),
                                                  spacing=rec.spacing, mirror=flip))
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
        skipped = summary.skipped
        why = (f" ({len(skipped)} file(s) skipped, first: {skipped[0][0]}: {skipped[0][1]})" if skipped
               else "")
        raise KerassegError(f"no masses found (empty result){why}", src)
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
    context = {}
    if windows:
        win, win_mask, win_box, valid, win_sp = zip(*windows)
        context = dict(context=np.stack(win), context_mask=np.stack(win_mask), context_box=np.stack(win_box),
                       context_valid=np.stack(valid),
                       context_spacing_mm=np.array([np.nan if v is None else v for v in win_sp], np.float32))
    return ROIDataset(
        images=np.stack(images), masks=np.stack(masks), split=labels, ids=np.asarray(ids),
        spacing_mm=None if np.all(np.isnan(sp)) else sp,
        boxes=np.asarray(boxes, dtype=np.int32), source=source, group=np.asarray(groups), **context,
    )
