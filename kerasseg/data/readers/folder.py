"""Folder reader: ``SRC/images/`` and ``SRC/masks/`` with matching file names (stems).

Images and masks may be PNG, TIFF, NPY or DICOM (mixed is fine: ``a.dcm`` pairs with ``a.png``).
A mask pixel is mass where it is > 0. Whole images (default): every connected mask component
(8-connectivity) is one mass, cropped by :mod:`kerasseg.data.roi`. ``ready_rois=True``: each
image is already a ROI and is only resized. An image without a mask is skipped with a warning.
Names containing ``_R_`` (or a DICOM ``ImageLaterality`` R) count as right breasts for ``--mirror``.
"""

from __future__ import annotations

import re
from pathlib import Path

from skimage.measure import label

from kerasseg.data.imageio import read_image
from kerasseg.data.readers.records import ImageRecord, existing_source
from kerasseg.errors import KerassegError

# the files listed in images/ and masks/ (read by kerasseg.data.imageio.read_image)
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".npy", ".dcm", ".dicom")


def _files(folder: Path) -> dict:
    out = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."):
            if p.stem in out:
                raise KerassegError(f"two files with the stem {p.stem!r} ({out[p.stem].name}, {p.name})", folder)
            out[p.stem] = p
    return out


def iter_folder(src, summary, ready_rois: bool = False, **_options):
    """The records (lazily, as a generator): an :class:`ImageRecord` per image with a non-empty mask;
    ``src`` must exist."""
    return _records(existing_source(src), summary, ready_rois)


def _records(src, summary, ready_rois):
    src = Path(src)
    img_dir, mask_dir = src / "images", src / "masks"
    for d in (img_dir, mask_dir):
        if not d.is_dir():
            raise KerassegError(f"expected the folder {d.name}/ (SRC must hold images/ and masks/)", src)
    images, masks = _files(img_dir), _files(mask_dir)
    if not images:
        raise KerassegError("no images (PNG, TIFF, NPY, DICOM) found", img_dir)
    for stem, img_path in images.items():
        mask_path = masks.get(stem)
        if mask_path is None:
            summary.skip(img_path, f"no mask named {stem}.* in {mask_dir}")
            continue
        read = read_image(img_path)
        image, spacing, lat = read.pixels, read.spacing_mm, read.laterality
        if re.search(r"(^|[_\-.])R([_\-.]|$)", stem):
            lat = "R"
        elif lat is None and re.search(r"(^|[_\-.])L([_\-.]|$)", stem):
            lat = "L"
        mask = read_image(mask_path).pixels > 0
        if mask.shape != image.shape:
            raise KerassegError(f"mask shape {mask.shape} differs from image shape {image.shape} ({img_path.name})",
                                mask_path)
        if ready_rois:
            if not mask.any():
                summary.warn(mask_path, "empty mask in a ready ROI")
            yield ImageRecord(image_id=stem, image=image, masks=[mask], spacing=spacing, laterality=lat,
                              group=stem, ready_roi=True, mass_ids=["mass1"])
            continue
        labels = label(mask, connectivity=2)
        comps = [labels == k for k in range(1, int(labels.max()) + 1)]
        if not comps:
            summary.skip(mask_path, "mask is empty")
            continue
        yield ImageRecord(image_id=stem, image=image, masks=comps, spacing=spacing, laterality=lat, group=stem)
