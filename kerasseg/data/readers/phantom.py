"""The phantom as a reader: ``prepare("phantom", ...)`` generates the built-in phantom
(:func:`kerasseg.data.phantom.make_phantom`) at the asked ROI ``size`` and ``seed``. It has no
source folder (``src`` is ignored) and returns finished ROIs with their own splits, so
:func:`~kerasseg.data.readers.prepare` does not crop or split them again.
"""

from __future__ import annotations

from kerasseg.data.dataset import ROIDataset
from kerasseg.data.phantom import make_phantom


def read_phantom(src, summary, *, size: int = 40, seed: int = 0, n_train: int = 58, n_val: int = 12,
                 n_test: int = 58, context_size: int | None = 128, **_options) -> ROIDataset:
    """The phantom dataset at ``size`` x ``size`` from ``seed`` with ``n_train`` / ``n_val`` / ``n_test``
    ROIs per split (the defaults are the README run's) and context windows of ``context_size`` (0 or
    None: none); counts go to ``summary``."""
    ds = make_phantom(n_train=int(n_train), n_val=int(n_val), n_test=int(n_test), size=int(size), seed=int(seed),
                      context_size=int(context_size or 0))
    summary.images = summary.masses = len(ds)
    summary.generated = True
    return ds
