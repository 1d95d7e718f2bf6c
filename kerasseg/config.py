"""Training configurations: YAML schema, validation and dataset-specific overrides.

A config file is YAML with the sections ``model``, ``crf``, ``loss``, ``train`` and ``data``
(see :data:`DEFAULTS` for every key and its default) plus

- ``name``, ``paper``, ``row``, ``description``: what the config reproduces;
- ``extends: <name>``: start from another config (a file in ``configs/`` or a path) and
  override only what differs, so each table row is a few lines;
- ``datasets: {inbreast: {...}, ddsm: {...}, phantom: {...}}``: partial overrides that apply
  when training on that dataset (``kerasseg fit --dataset`` or the data file's ``source``).

:func:`resolve_config` loads, merges and validates; :func:`apply_dataset` applies one
``datasets`` section and returns the flat config that is written to a run directory.
Every problem is a one-line :class:`~kerasseg.errors.KerassegError` naming the file and key.
"""

from __future__ import annotations

import math

import copy
import difflib
import os
from importlib import resources
from pathlib import Path

import yaml

from kerasseg.errors import KerassegError

#: Folder holding the shipped configs (one per table row of both papers): the package
#: ``kerasseg.configs`` (the repository's top-level ``configs/``, shipped in the wheel), found
#: through importlib.resources so an editable install and a wheel install both see it.
CONFIG_DIR = Path(os.fspath(resources.files("kerasseg.configs")))

DATASETS = ("inbreast", "ddsm", "phantom")
ARCHS = ("unet", "resunet", "fcn", "multifcn")

#: Every key with its default. ``crf: None`` means no CRF; a dict holds CRFRNN kwargs.
DEFAULTS: dict = {
    "name": "unnamed",
    "paper": "",
    "row": "",
    "description": "",
    "model": {
        "arch": "resunet",
        "kernel_size": 3,
        "filters": [16, 32, 64, 128],
        "dropout": 0.5,
        "position_prior": False,
        "fcn_variant": 1,
    },
    "crf": None,
    "loss": {
        # CRU-Net eq. (5): loss = (1 - lambda) * CE(net) + lambda * NLL(crf)
        "lambda": 0.0,
        # Zhu eq. (8): l2/2 * ||theta||^2 added to the per-image (pixel-summed) NLL
        "l2": 0.0,
    },
    "train": {
        "optimizer": "adam",
        "learning_rate": 0.001,
        "batch_size": 16,
        "epochs": 100,
        "patience": 20,
        "adversarial": False,
        "epsilon": 0.1,
        "seed": 0,
        # XLA-compile the train/test steps (about 2x faster steps on CPU after a longer first
        # epoch). Keras refuses XLA with TF op determinism, so a jit run does not enable it.
        "jit_compile": False,
    },
    "data": {
        "normalization": "image",
        "enhancement": "none",
        "flips": True,
        "size": 40,
    },
}

#: Keys of a ``crf`` section that kerasseg itself knows; others are passed to CRFRNN and
#: checked against its constructor when the layer is available.
CRF_KEYS = ("iterations_train", "iterations_test")

TOP_KEYS = tuple(DEFAULTS) + ("extends", "datasets", "dataset")
CHOICES = {
    ("model", "arch"): ARCHS,
    ("train", "optimizer"): ("adam", "sgd", "rmsprop"),
    ("data", "normalization"): ("image", "position", "none"),
    ("data", "enhancement"): ("none", "clahe", "histeq"),
}


# --------------------------------------------------------------------------- helpers
def _unknown(key, valid, where, path):
    close = difflib.get_close_matches(str(key), [str(v) for v in valid], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise KerassegError(
        f"unknown key {where}{key!r}{hint}; valid keys: {', '.join(map(str, valid))}", path
    )


def _merge(base: dict, over: dict) -> dict:
    """Deep merge: dict values merge recursively, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def config_path(name_or_path) -> Path:
    """The file a config name refers to: a path as given, else ``configs/<name>.yaml``."""
    p = Path(str(name_or_path))
    if p.suffix in (".yaml", ".yml") or p.exists() or os.sep in str(name_or_path):
        if not p.is_file():
            raise KerassegError("config file not found", p)
        return p
    cand = CONFIG_DIR / f"{p.name}.yaml"
    if cand.is_file():
        return cand
    names = list_configs()
    close = difflib.get_close_matches(p.name, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise KerassegError(f"unknown config {p.name!r}{hint}; shipped configs: {', '.join(names)}")


def list_configs() -> list[str]:
    """Names of the shipped configs (``configs/*.yaml`` without the base files)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if not p.stem.startswith("_"))


def _read_yaml(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        raise KerassegError(f"not valid YAML{where}", path) from None
    except OSError as exc:
        raise KerassegError(f"cannot read config ({exc.strerror})", path) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise KerassegError("a config must be a YAML mapping of sections", path)
    return raw


def _load_raw(spec, _seen=()) -> tuple[dict, Path | None]:
    """Read a config (dict, path or name) and follow its ``extends`` chain; not validated."""
    if isinstance(spec, dict):
        raw, path = copy.deepcopy(spec), None
    else:
        path = config_path(spec)
        if path.resolve() in _seen:
            raise KerassegError("circular 'extends'", path)
        raw = _read_yaml(path)
        _seen = _seen + (path.resolve(),)
    parent = raw.pop("extends", None)
    if parent is not None:
        if not isinstance(parent, str):
            raise KerassegError("'extends' must be a config name or path", path)
        if path is not None and not (CONFIG_DIR / f"{parent}.yaml").is_file():
            local = path.parent / (parent if parent.endswith((".yaml", ".yml")) else f"{parent}.yaml")
            if local.is_file():
                parent = str(local)
        base, _ = _load_raw(parent, _seen)
        raw = _merge(base, raw)
    return raw, path


# ------------------------------------------------------------------------ validation
def _check_section(cfg: dict, section: str, path, prefix="") -> None:
    spec = DEFAULTS[section]
    value = cfg[section]
    if not isinstance(value, dict):
        raise KerassegError(f"{prefix}{section!r} must be a mapping, got {value!r}", path)
    for key in value:
        if key not in spec:
            _unknown(key, list(spec), f"{prefix}{section}.", path)
    for key, val in value.items():
        default = spec[key]
        name = f"{prefix}{section}.{key}"
        if isinstance(default, bool):
            if not isinstance(val, bool):
                raise KerassegError(f"{name} must be true or false, got {val!r}", path)
        elif isinstance(default, int):
            if isinstance(val, bool) or not isinstance(val, int):
                raise KerassegError(f"{name} must be an integer, got {val!r}", path)
        elif isinstance(default, float):
            if isinstance(val, bool) or not isinstance(val, (int, float)):
                raise KerassegError(f"{name} must be a number, got {val!r}", path)
            value[key] = float(val)
        elif isinstance(default, str):
            if not isinstance(val, str):
                raise KerassegError(f"{name} must be a string, got {val!r}", path)
        elif isinstance(default, list):
            if not (isinstance(val, list) and val and all(
                    isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in val)):
                raise KerassegError(f"{name} must be a list of positive integers, got {val!r}", path)
        choices = CHOICES.get((section, key))
        if choices is not None and val not in choices:
            raise KerassegError(f"{name} must be one of {list(choices)}, got {val!r}", path)


def _range(cond, msg, path):
    if not cond:
        raise KerassegError(msg, path)


def _check_values(cfg: dict, path, prefix="") -> None:
    m, lo, t, d = cfg["model"], cfg["loss"], cfg["train"], cfg["data"]
    p = prefix
    for section, key in (("loss", "lambda"), ("loss", "l2"), ("model", "dropout"),
                         ("train", "learning_rate"), ("train", "epsilon")):
        v = cfg[section][key]
        _range(not isinstance(v, (int, float)) or math.isfinite(v),
               f"{p}{section}.{key} must be a finite number, got {v}", path)
    _range(0.0 <= lo["lambda"] <= 1.0, f"{p}loss.lambda must be in [0, 1], got {lo['lambda']}", path)
    _range(lo["l2"] >= 0.0, f"{p}loss.l2 must be >= 0, got {lo['l2']}", path)
    _range(0.0 <= m["dropout"] < 1.0, f"{p}model.dropout must be in [0, 1), got {m['dropout']}", path)
    _range(m["kernel_size"] >= 1, f"{p}model.kernel_size must be >= 1, got {m['kernel_size']}", path)
    _range(1 <= m["fcn_variant"] <= 4, f"{p}model.fcn_variant must be 1..4, got {m['fcn_variant']}", path)
    _range(t["learning_rate"] > 0.0, f"{p}train.learning_rate must be > 0, got {t['learning_rate']}", path)
    _range(t["epsilon"] >= 0.0, f"{p}train.epsilon must be >= 0, got {t['epsilon']}", path)
    _range(t["batch_size"] >= 1, f"{p}train.batch_size must be >= 1, got {t['batch_size']}", path)
    _range(t["epochs"] >= 1, f"{p}train.epochs must be >= 1, got {t['epochs']}", path)
    _range(t["patience"] >= 0, f"{p}train.patience must be >= 0 (0 = no early stopping), "
           f"got {t['patience']}", path)
    _range(t["seed"] >= 0, f"{p}train.seed must be >= 0, got {t['seed']}", path)
    _range(d["size"] >= 8, f"{p}data.size must be >= 8, got {d['size']}", path)
    crf = cfg["crf"]
    if crf is None:
        _range(lo["lambda"] == 0.0, f"{p}loss.lambda={lo['lambda']} weights the CRF loss but the "
               "config has no crf section (set crf or lambda: 0)", path)
        return
    if not isinstance(crf, dict):
        raise KerassegError(f"{p}crf must be null or a mapping of CRFRNN options, got {crf!r}", path)
    valid = _crf_valid_keys()
    for key in crf:
        if valid is not None and key not in valid:
            _unknown(key, sorted(valid), f"{p}crf.", path)
    for key in CRF_KEYS:
        if key in crf:
            v = crf[key]
            _range(isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                   f"{p}crf.{key} must be an integer >= 1, got {v!r}", path)
    _check_crf_values(crf, path, p)


def _check_crf_values(crf: dict, path, prefix="") -> None:
    """Build the CRFRNN the options describe (no weights, no graph) so that a bad value (an unknown
    mode, a negative bandwidth, ...) is reported against the config file before training starts."""
    from kerasseg.models.crf_head import crf_layer

    try:
        crf_layer(crf)
    except KerassegError as exc:
        raise KerassegError(f"{prefix}crf: {str(exc).removeprefix('CRFRNN: ')}", path) from None


def _crf_valid_keys():
    """Constructor arguments of CRFRNN when the layer is importable, else None (no check)."""
    try:
        import inspect

        from kerasseg.layers.crf import CRFRNN
    except Exception:  # noqa: BLE001 - the layer may not exist yet; skip the check
        return None
    params = inspect.signature(CRFRNN.__init__).parameters
    keys = {k for k, v in params.items() if k != "self" and v.kind in (v.POSITIONAL_OR_KEYWORD,
                                                                       v.KEYWORD_ONLY)}
    keys -= {"name", "dtype", "trainable"}
    return keys | set(CRF_KEYS)


def validate(raw: dict, path=None) -> dict:
    """Fill defaults and validate a merged raw config; returns a new dict."""
    for key in raw:
        if key not in TOP_KEYS:
            _unknown(key, [k for k in TOP_KEYS if k != "extends"], "", path)
    cfg = _merge(DEFAULTS, {k: v for k, v in raw.items() if k not in ("datasets", "crf")})
    cfg["crf"] = copy.deepcopy(raw.get("crf", None))
    for section in ("model", "loss", "train", "data"):
        _check_section(cfg, section, path)
    for key in ("name", "paper", "row", "description"):
        if not isinstance(cfg[key], str):
            raise KerassegError(f"{key} must be a string, got {cfg[key]!r}", path)
    _check_values(cfg, path)
    datasets = raw.get("datasets") or {}
    if not isinstance(datasets, dict):
        raise KerassegError("'datasets' must map dataset names to overrides", path)
    for ds_name, over in datasets.items():
        if ds_name not in DATASETS:
            _unknown(ds_name, DATASETS, "datasets.", path)
        if over is None:
            datasets[ds_name] = over = {}
        if not isinstance(over, dict):
            raise KerassegError(f"datasets.{ds_name} must be a mapping", path)
        for key in over:
            if key not in ("model", "crf", "loss", "train", "data"):
                _unknown(key, ["model", "crf", "loss", "train", "data"], f"datasets.{ds_name}.", path)
        # validate the merged result now, so mistakes surface at load time
        _flatten(cfg, over, path, prefix=f"datasets.{ds_name}.")
    cfg["datasets"] = copy.deepcopy(datasets)
    if "dataset" in raw:
        cfg["dataset"] = raw["dataset"]
    return cfg


def _flatten(cfg: dict, over: dict, path, prefix="") -> dict:
    base = {k: v for k, v in cfg.items() if k not in ("datasets",)}
    out = _merge(base, {k: v for k, v in over.items() if k != "crf"})
    if "crf" in over:
        out["crf"] = (None if over["crf"] is None else
                      _merge(cfg["crf"] or {}, over["crf"]))
    for section in ("model", "loss", "train", "data"):
        if section in over:
            if not isinstance(over[section], dict):
                raise KerassegError(f"{prefix}{section} must be a mapping", path)
            for key in over[section]:
                if key not in DEFAULTS[section]:
                    _unknown(key, list(DEFAULTS[section]), f"{prefix}{section}.", path)
            _check_section(out, section, path, prefix)
    _check_values(out, path, prefix)
    return out


# ---------------------------------------------------------------------------- public
def resolve_config(spec, dataset: str | None = None) -> dict:
    """Load and validate a config.

    ``spec`` is a dict, a path to a YAML file, or a bare name such as ``"crunet-l067"``
    (looked up in ``configs/``). With ``dataset`` the matching ``datasets`` section is
    applied (see :func:`apply_dataset`); without it the ``datasets`` sections are kept.
    """
    raw, path = _load_raw(spec)
    cfg = validate(raw, path)
    cfg["_path"] = str(path) if path is not None else None
    if dataset is not None:
        cfg = apply_dataset(cfg, dataset)
    return cfg


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
        _unknown(dataset, DATASETS, "dataset ", path)
    over = (cfg.get("datasets") or {}).get(dataset) or {} if dataset else {}
    out = _flatten(cfg, over, path, prefix=f"datasets.{dataset}." if dataset else "")
    out["dataset"] = dataset
    out.pop("_path", None)
    return out


def to_yaml(cfg: dict) -> str:
    """The config as YAML text (sections in the schema's order)."""
    order = [k for k in list(DEFAULTS) + ["dataset", "datasets"] if k in cfg]
    clean = {k: cfg[k] for k in order}
    return yaml.safe_dump(clean, sort_keys=False, default_flow_style=None)


def save_config(cfg: dict, path) -> Path:
    """Write the (resolved) config as YAML atomically."""
    from kerasseg.fileio import atomic_write_text

    return atomic_write_text(path, to_yaml(cfg))
