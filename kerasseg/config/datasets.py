"""Dataset overlays: ``datasets: {inbreast: {...}, ddsm: {...}, phantom: {...}}`` of a config."""

from __future__ import annotations

import copy

from kerasseg.config.schema import SECTIONS, flatten, unknown
from kerasseg.errors import KerassegError

DATASETS = ("inbreast", "ddsm", "phantom")
OVERLAY_KEYS = ("model", "crf", "loss", "train", "data")


def check_overlays(cfg: dict, datasets, path) -> dict:
    """Validate every overlay merged onto ``cfg`` (mistakes surface at load time); returns a copy."""
    datasets = datasets or {}
    if not isinstance(datasets, dict):
        raise KerassegError("'datasets' must map dataset names to overrides", path)
    datasets = copy.deepcopy(datasets)
    for ds_name, over in datasets.items():
        if ds_name not in DATASETS:
            unknown(ds_name, DATASETS, "datasets.", path)
        if over is None:
            datasets[ds_name] = over = {}
        if not isinstance(over, dict):
            raise KerassegError(f"datasets.{ds_name} must be a mapping", path)
        for key in over:
            if key not in OVERLAY_KEYS:
                unknown(key, list(OVERLAY_KEYS), f"datasets.{ds_name}.", path)
        flatten(cfg, over, path, prefix=f"datasets.{ds_name}.")
    return datasets


def dataset_key(source: str | None) -> str | None:
    """Map a dataset file's ``source`` to a ``datasets`` section name (None if unknown)."""
    s = (source or "").lower()
    if "inbreast" in s:
        return "inbreast"
    if "ddsm" in s or "cbis" in s or "bcrp" in s:
        return "ddsm"
    if "phantom" in s:
        return "phantom"
    return None


def apply_dataset(cfg: dict, dataset: str | None) -> dict:
    """Apply ``cfg['datasets'][dataset]`` and return the flat config (no ``datasets`` key).

    ``dataset=None`` applies nothing. An unknown name is an error listing the valid ones.
    """
    path = cfg.get("_path")
    if "datasets" not in cfg:  # already flat
        return copy.deepcopy(cfg)
    if dataset is not None and dataset not in DATASETS:
        unknown(dataset, DATASETS, "dataset ", path)
    over = (cfg.get("datasets") or {}).get(dataset) or {} if dataset else {}
    out = flatten(cfg, over, path, prefix=f"datasets.{dataset}." if dataset else "")
    out["dataset"] = dataset
    out.pop("_path", None)
    return out


__all__ = ["DATASETS", "SECTIONS", "apply_dataset", "check_overlays", "dataset_key"]
