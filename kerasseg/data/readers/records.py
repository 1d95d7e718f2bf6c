"""What a reader produces: :class:`ImageRecord` (one full image and the masks of its masses) and
:class:`Summary` (counts and the files it skipped). Every reader module imports this module, never
the package ``kerasseg.data.readers``, so the readers and the registry do not import each other.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kerasseg.errors import KerassegError, KerassegWarning


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
    generated: bool = False  # the ROIs were generated (the phantom), not read from files

    def skip(self, path, reason: str) -> None:
        self.skipped.append((str(path), reason))
        warnings.warn(f"{path}: {reason} (skipped)", KerassegWarning, stacklevel=2)

    def warn(self, path, message: str) -> None:
        self.warnings.append(f"{path}: {message}")
        warnings.warn(f"{path}: {message}", KerassegWarning, stacklevel=2)

    def lines(self) -> list[str]:
        if self.generated:
            return [f"generated {self.masses} phantom ROI(s)"]
        out = [f"read {self.masses} mass(es) from {self.images} image(s)"]
        if self.skipped:
            out.append(f"skipped {len(self.skipped)} file(s):")
            out += [f"  {p}: {r}" for p, r in self.skipped]
        if self.warnings:
            out.append(f"{len(self.warnings)} warning(s):")
            out += [f"  {w}" for w in self.warnings]
        return out


def existing_source(src) -> Path:
    """``src`` as a Path; a one-line :class:`KerassegError` if it is missing or does not exist."""
    if src is None:
        raise KerassegError("no source file or folder given")
    src = Path(src)
    if not src.exists():
        raise KerassegError("no such file or folder", src)
    return src
