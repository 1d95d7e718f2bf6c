"""The phantom as a reader: ``prepare("phantom", ...)`` generates the built-in phantom
(:func:`kerasseg.data.phantom.make_phantom`) at the asked ROI ``size`` and ``seed``. It has no
source folder (``src`` is ignored) and returns finished ROIs with their own splits, so
:func:`~kerasseg.data.readers.prepare` does not crop or split them again.
"""

from __future__ import annotations

from kerasseg.data.dataset import ROIDataset
from kerasseg.data.phantom import make_phantom


def read_phantom(src, summary, *, size: int = 40, seed: int = 0, **_options) -> ROIDataset:
    """The phantom dataset (default split sizes) at ``size`` x ``size`` from ``seed``; counts go to ``summary``."""
    ds = make_phantom(size=int(size), seed=int(seed))
    summary.images = summary.masses = len(ds)
    return ds
