"""Training configurations: YAML schema, validation and dataset-specific overrides.

A config file is YAML with the sections ``model``, ``crf``, ``loss``, ``train`` and ``data``
(:func:`kerasseg.config.schema.defaults` lists every key and its default) plus

- ``name``, ``paper``, ``row``, ``description``: what the config reproduces;
- ``extends: <name>``: start from another config (a file in ``configs/`` or a path) and
  override only what differs, so each table row is a few lines;
- ``datasets: {inbreast: {...}, ddsm: {...}, phantom: {...}}``: partial overrides that apply
  when training on that dataset (``kerasseg fit --dataset`` or the data file's ``source``).

One job per module: :mod:`~kerasseg.config.lookup` (names, ``extends``, YAML I/O),
:mod:`~kerasseg.config.schema` (sections, defaults, choices from the registries, validation),
:mod:`~kerasseg.config.datasets` (dataset overlays). :func:`resolve_config` loads, merges and
validates; :func:`apply_dataset` applies one ``datasets`` section and returns the flat config that
is written to a run directory. Every problem is a one-line :class:`~kerasseg.errors.KerassegError`
naming the file and key; a ``model`` option that does not apply to the architecture is one too.
"""

from __future__ import annotations

from kerasseg.config.datasets import DATASETS, apply_dataset, check_overlays, dataset_key
from kerasseg.config.lookup import CONFIG_DIR, config_path, list_configs, save_config, to_yaml
from kerasseg.config.schema import CRF_KEYS, TOP_KEYS, archs, choices, defaults, validate_base


def validate(raw: dict, path=None) -> dict:
    """Fill defaults and validate a merged raw config (its ``datasets`` overlays too); a new dict."""
    cfg = validate_base(raw, path)
    cfg["datasets"] = check_overlays(cfg, raw.get("datasets"), path)
    if "dataset" in raw:
        cfg["dataset"] = raw["dataset"]
    return cfg


def resolve_config(spec, dataset: str | None = None) -> dict:
    """Load and validate a config.

    ``spec`` is a dict, a path to a YAML file, or a bare name such as ``"crunet-l067"``
    (looked up in ``configs/``). With ``dataset`` the matching ``datasets`` section is
    applied (see :func:`apply_dataset`); without it the ``datasets`` sections are kept.
    """
    from kerasseg.config.lookup import load_raw

    raw, path = load_raw(spec)
    cfg = validate(raw, path)
    cfg["_path"] = str(path) if path is not None else None
    if dataset is not None:
        cfg = apply_dataset(cfg, dataset)
    return cfg


def __getattr__(name):
    # the schema's tables, computed from the registries on first use (no TensorFlow at import)
    if name == "DEFAULTS":
        return defaults()
    if name == "CHOICES":
        return choices()
    if name == "ARCHS":
        return archs()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ARCHS", "CHOICES", "CONFIG_DIR", "CRF_KEYS", "DATASETS", "DEFAULTS", "TOP_KEYS", "apply_dataset",
           "config_path", "dataset_key", "list_configs", "resolve_config", "save_config", "to_yaml", "validate"]
