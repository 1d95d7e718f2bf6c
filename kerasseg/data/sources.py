"""Where a dataset comes from: :func:`load_data` turns what a user names (nothing or "phantom", a
``.npz`` path, or a dataset already in memory) into a :class:`~kerasseg.data.dataset.ROIDataset`.

Kept apart from :mod:`kerasseg.data.dataset` (the file contract) so that the phantom generator can
import the contract without the contract importing the generator.
"""

from __future__ import annotations

from kerasseg.data.dataset import ROIDataset, load_npz
from kerasseg.data.phantom import default_dataset


def load_data(spec=None) -> ROIDataset:
    """``None`` or ``"phantom"``: the built-in phantom; a :class:`ROIDataset`: itself, unchanged;
    otherwise the path of a ``.npz`` dataset (a one-line KerassegError naming it on any problem)."""
    if isinstance(spec, ROIDataset):
        return spec
    if spec is None or str(spec) == "phantom":
        ds = default_dataset()
        ds.origin = "phantom"
        return ds
    return load_npz(spec)
