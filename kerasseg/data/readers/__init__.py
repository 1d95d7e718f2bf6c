"""Dataset readers: INbreast, DDSM-BCRP, CBIS-DDSM, folders of images, and the phantom.

:data:`READERS` maps a source name to its reader. A reader is called as
``reader(src, summary, **options)`` and returns the :class:`ImageRecord` objects it found (one full
image with the masks of its masses; :mod:`kerasseg.data.readers.records`), which :func:`prepare`
assembles (:func:`~kerasseg.data.readers.assemble.build_dataset`: crop, ROI spacing, groups,
splits); the phantom reader returns finished ROIs (a :class:`~kerasseg.data.dataset.ROIDataset`).
Options a reader does not use are ignored. ``kerasseg data prepare`` is a thin wrapper around
:func:`prepare`. Every reader reads its image files with :mod:`kerasseg.data.imageio` (the reader
``predict`` uses too).
"""

from __future__ import annotations

import numbers

from kerasseg.data import splits as splits_mod
from kerasseg.data.dataset import ROIDataset
from kerasseg.data.readers.assemble import build_dataset
from kerasseg.data.readers.cbis import iter_cbis
from kerasseg.data.readers.ddsm import iter_ddsm
from kerasseg.data.readers.folder import iter_folder
from kerasseg.data.readers.inbreast import iter_inbreast
from kerasseg.data.readers.phantom import read_phantom
from kerasseg.data.readers.records import ImageRecord, Summary
from kerasseg.errors import KerassegError, argument_error
from kerasseg.fileio import output_file

READERS = {
    "inbreast": iter_inbreast,
    "ddsm-bcrp": iter_ddsm,
    "cbis-ddsm": iter_cbis,
    "folder": iter_folder,
    "phantom": read_phantom,
}
SOURCES = tuple(READERS)
DEFAULT_SPLIT = {"inbreast": "protocol", "ddsm-bcrp": "official", "cbis-ddsm": "official",
                 "folder": "random"}

__all__ = ["READERS", "SOURCES", "DEFAULT_SPLIT", "ImageRecord", "Summary", "build_dataset",
           "check_output", "prepare"]


def check_output(path):
    """KerassegError naming ``path`` if a dataset file cannot be written there (checked before reading)."""
    return output_file(path, ".npz")


def prepare(source: str, src, *, size: int = 40, margin: float = 0.0, split: str = "auto",
            seed: int = 0, mirror: bool = False, ready_rois: bool = False,
            test_fraction: float = 0.5, val_fraction: float = 0.1,
            train_list=None, test_list=None, progress: bool = False, context_size: int | None = 128,
            **source_options):
    """Read ``src`` as ``source`` and return ``(ROIDataset, Summary)``.

    ``source_options`` go to the reader alone (the phantom's ``n_train`` / ``n_val`` / ``n_test``;
    like every reader option, ignored by the readers that do not use them).

    ``context_size``: side of the context window written around every mass
    (:func:`kerasseg.data.roi.context_window`; the dataset's ``context*`` arrays); 0 or None writes
    none. A file with already-cropped ROIs (``ready_rois``) gets none either: they have no
    surrounding image.

    ``split``: "auto" (the source's default: inbreast "protocol", ddsm-bcrp and cbis-ddsm
    "official", folder "random"), "protocol", "official", "patient" or "random"; see
    :mod:`kerasseg.data.splits`. ``margin`` is a fraction of the box size (see :mod:`kerasseg.data.roi`).
    """
    reader = READERS.get(source)
    if reader is None:
        raise KerassegError(f"unknown source {source!r}; choose one of {list(SOURCES)}")
    if int(size) < 2:
        raise argument_error("size", f"must be >= 2, got {size}")
    if margin < 0:
        raise argument_error("margin", f"must be >= 0, got {margin}")
    if split != "auto" and split not in splits_mod.METHODS:
        raise KerassegError(f"unknown split {split!r}; choose auto or one of {list(splits_mod.METHODS)}")
    context_size = 0 if context_size is None else context_size
    if (isinstance(context_size, bool) or not isinstance(context_size, numbers.Integral)
            or context_size < 0 or 0 < context_size < 8):
        raise KerassegError(f"context_size must be 0 (no context windows) or an integer >= 8, "
                            f"got {context_size!r}")
    context_size = int(context_size)
    summary = Summary()
    records = reader(src, summary, size=int(size), seed=int(seed), ready_rois=ready_rois,
                     train_list=train_list, test_list=test_list, context_size=context_size, **source_options)
    if isinstance(records, ROIDataset):  # a reader of finished ROIs (the phantom)
        return records, summary
    if progress:
        from tqdm import tqdm

        records = tqdm(records, desc=f"reading {source}", unit="image", leave=False)
    ds = build_dataset(records, size=int(size), margin=float(margin), mirror=mirror, split=split,
                       seed=int(seed), test_fraction=test_fraction, val_fraction=val_fraction,
                       source=source, summary=summary, default_split=DEFAULT_SPLIT[source], src=src,
                       context_size=context_size)
    return ds, summary
