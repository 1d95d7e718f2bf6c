"""The config schema: sections, defaults, choices and validation.

The choices come from the registries that define them, so there is one list of each:

- ``model.arch`` and the options each architecture takes (with their defaults):
  :data:`kerasseg.models.registry.ARCH_OPTIONS`; an option that does not apply to the chosen
  architecture (``dropout`` for ``fcn``, ``fcn_variant`` for ``unet``, ...) is an error;
- ``train.optimizer``: :data:`kerasseg.models.registry.OPTIMIZERS` (``OPTIMIZERS`` here: its names);
- ``data.enhancement`` / ``data.normalization``: :mod:`kerasseg.layers.preprocessing`;
- ``crf``: the constructor arguments of the CRF layer class (and its ``MODES``), checked by building
  the layer (:func:`kerasseg.models.crf_head.crf_layer`).

The registries are imported when a config is validated, not when this module is imported, so
``import kerasseg.config`` stays free of TensorFlow.
"""

from __future__ import annotations

import copy
import difflib
import math

from kerasseg.config.lookup import merge
from kerasseg.errors import KerassegError

#: Keys of every section but the architecture options of ``model`` (see :func:`arch_options`).
#: ``crf: None`` means no CRF; a dict holds CRFRNN kwargs.
BASE_DEFAULTS: dict = {
    "name": "unnamed",
    "paper": "",
    "row": "",
    "description": "",
    "model": {"arch": "resunet", "position_prior": False},
    "crf": None,
    "loss": {
        # CRU-Net eq. (5): loss = (1 - lambda) * CE(net) + lambda * NLL(crf)
        "lambda": 0.0,
        # Zhu eq. (8): l2/2 * ||theta||^2 (kernels) added to the per-image (pixel-summed) NLL
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
        # boxes other than the tight one in training (kerasseg.data.boxes.BoxJitter): null, or
        # {margin: [lo, hi] per side, shift: s, tight: p}; needs a dataset file with context windows
        "box_jitter": None,
    },
}

#: Keys of a ``crf`` section that kerasseg itself knows; the others are CRFRNN arguments.
CRF_KEYS = ("iterations_train", "iterations_test")
SECTIONS = ("model", "loss", "train", "data")
TOP_KEYS = tuple(BASE_DEFAULTS) + ("extends", "datasets", "dataset")


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def arch_options() -> dict:
    """``{arch: {option: default}}`` of :data:`kerasseg.models.registry.ARCH_OPTIONS` (lists, not tuples)."""
    from kerasseg.models.registry import ARCH_OPTIONS

    return {arch: {k: _plain(v) for k, v in opts.items()} for arch, opts in ARCH_OPTIONS.items()}


def optimizers() -> tuple:
    """The ``train.optimizer`` names: :data:`kerasseg.models.registry.OPTIMIZERS`."""
    from kerasseg.models.registry import OPTIMIZERS

    return tuple(OPTIMIZERS)


def __getattr__(name):
    # OPTIMIZERS: the registry's names, read on use (importing this module loads no TensorFlow)
    if name == "OPTIMIZERS":
        return optimizers()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def archs() -> tuple:
    """The base architectures a config may name (``model.arch``)."""
    return tuple(arch_options())


def defaults() -> dict:
    """Every key with its default; ``model`` holds the options of all architectures."""
    out = copy.deepcopy(BASE_DEFAULTS)
    for opts in arch_options().values():
        for key, value in opts.items():
            out["model"].setdefault(key, copy.deepcopy(value))
    return out


def crf_modes() -> tuple:
    """The ``crf.mode`` values the CRF layer accepts (:data:`kerasseg.layers.crf.layer.MODES` and its
    ``ALIASES``, the old names)."""
    from kerasseg.layers.crf.layer import ALIASES, MODES

    return tuple(MODES) + tuple(ALIASES)


def choices() -> dict:
    """``{(section, key): allowed values}``, each from its registry."""
    from kerasseg.layers.preprocessing import ENHANCEMENTS, NORMALIZATIONS

    return {
        ("model", "arch"): archs(),
        ("train", "optimizer"): optimizers(),
        ("data", "normalization"): tuple(NORMALIZATIONS),
        ("data", "enhancement"): tuple(ENHANCEMENTS),
        ("crf", "mode"): crf_modes(),
    }


# --------------------------------------------------------------------------- helpers
def unknown(key, valid, where, path):
    """Raise the one-line 'unknown key' error with the closest valid key as a hint."""
    close = difflib.get_close_matches(str(key), [str(v) for v in valid], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise KerassegError(
        f"unknown key {where}{key!r}{hint}; valid keys: {', '.join(map(str, valid))}", path
    )


def _range(cond, msg, path):
    if not cond:
        raise KerassegError(msg, path)


def _model_spec(model: dict, path, prefix="") -> dict:
    """The defaults of the ``model`` keys that apply to ``model['arch']``; errors for the others."""
    opts = arch_options()
    arch = model.get("arch", BASE_DEFAULTS["model"]["arch"])
    if arch not in opts:
        raise KerassegError(f"{prefix}model.arch must be one of {list(opts)}, got {arch!r}", path)
    spec = {**BASE_DEFAULTS["model"], **opts[arch]}
    every = defaults()["model"]
    for key in model:
        if key in spec:
            continue
        if key in every:
            users = [a for a, o in opts.items() if key in o]
            raise KerassegError(f"{prefix}model.{key} does not apply to arch {arch!r} (only to "
                                f"{', '.join(users)}); remove it", path)
        unknown(key, list(spec), f"{prefix}model.", path)
    return spec


def check_section(cfg: dict, section: str, path, prefix="") -> None:
    """Types and choices of one section of a merged config (fills nothing)."""
    value = cfg[section]
    if not isinstance(value, dict):
        raise KerassegError(f"{prefix}{section!r} must be a mapping, got {value!r}", path)
    spec = _model_spec(value, path, prefix) if section == "model" else BASE_DEFAULTS[section]
    for key in value:
        if key not in spec:
            unknown(key, list(spec), f"{prefix}{section}.", path)
    allowed = choices()
    for key, val in value.items():
        default = spec[key]
        name = f"{prefix}{section}.{key}"
        if default is None:
            continue  # a mapping or null, checked by check_values
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
        options = allowed.get((section, key))
        if options is not None and val not in options:
            raise KerassegError(f"{name} must be one of {list(options)}, got {val!r}", path)


def fill_model(cfg: dict, path, prefix="") -> None:
    """Fill the defaults of the options that apply to the architecture (and only those)."""
    spec = _model_spec(cfg["model"], path, prefix)
    cfg["model"] = {**copy.deepcopy(spec), **cfg["model"]}


def check_values(cfg: dict, path, prefix="") -> None:
    """Ranges and cross-section rules of a filled config; the CRF options by building the layer."""
    m, lo, t, d = cfg["model"], cfg["loss"], cfg["train"], cfg["data"]
    p = prefix
    for section, key in (("loss", "lambda"), ("loss", "l2"), ("model", "dropout"),
                         ("train", "learning_rate"), ("train", "epsilon")):
        if key not in cfg[section]:
            continue
        v = cfg[section][key]
        _range(not isinstance(v, (int, float)) or math.isfinite(v),
               f"{p}{section}.{key} must be a finite number, got {v}", path)
    _range(0.0 <= lo["lambda"] <= 1.0, f"{p}loss.lambda must be in [0, 1], got {lo['lambda']}", path)
    _range(lo["l2"] >= 0.0, f"{p}loss.l2 must be >= 0, got {lo['l2']}", path)
    if "dropout" in m:
        _range(0.0 <= m["dropout"] < 1.0, f"{p}model.dropout must be in [0, 1), got {m['dropout']}", path)
    if "kernel_size" in m:
        _range(m["kernel_size"] >= 1, f"{p}model.kernel_size must be >= 1, got {m['kernel_size']}", path)
    if "fcn_variant" in m:
        _range(1 <= m["fcn_variant"] <= 4, f"{p}model.fcn_variant must be 1..4, got {m['fcn_variant']}", path)
    _range(t["learning_rate"] > 0.0, f"{p}train.learning_rate must be > 0, got {t['learning_rate']}", path)
    _range(t["epsilon"] >= 0.0, f"{p}train.epsilon must be >= 0, got {t['epsilon']}", path)
    _range(t["batch_size"] >= 1, f"{p}train.batch_size must be >= 1, got {t['batch_size']}", path)
    _range(t["epochs"] >= 1, f"{p}train.epochs must be >= 1, got {t['epochs']}", path)
    _range(t["patience"] >= 0, f"{p}train.patience must be >= 0 (0 = no early stopping), "
           f"got {t['patience']}", path)
    _range(0 <= t["seed"] < 2**32, f"{p}train.seed must be in [0, 2**32 - 1], got {t['seed']}", path)
    _range(d["size"] >= 8, f"{p}data.size must be >= 8, got {d['size']}", path)
    from kerasseg.data.boxes import BoxJitter

    jitter = BoxJitter.from_config(d["box_jitter"], path, f"{p}data.box_jitter")
    d["box_jitter"] = None if jitter is None else jitter.to_config()
    crf = cfg["crf"]
    if crf is None:
        _range(lo["lambda"] == 0.0, f"{p}loss.lambda={lo['lambda']} weights the CRF loss but the "
               "config has no crf section (set crf or lambda: 0)", path)
        return
    if not isinstance(crf, dict):
        raise KerassegError(f"{p}crf must be null or a mapping of CRFRNN options, got {crf!r}", path)
    valid = crf_valid_keys()
    for key in crf:
        if key not in valid:
            unknown(key, sorted(valid), f"{p}crf.", path)
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


def crf_valid_keys() -> set:
    """The constructor arguments of the CRF layer class plus :data:`CRF_KEYS`."""
    import inspect

    from kerasseg.models.crf_head import crf_class

    params = inspect.signature(crf_class().__init__).parameters
    keys = {k for k, v in params.items() if k != "self" and v.kind in (v.POSITIONAL_OR_KEYWORD,
                                                                       v.KEYWORD_ONLY)}
    keys -= {"name", "dtype", "trainable"}
    return keys | set(CRF_KEYS)


def validate_base(raw: dict, path=None) -> dict:
    """Fill defaults and validate a merged raw config (not its ``datasets`` overlays)."""
    for key in raw:
        if key not in TOP_KEYS:
            unknown(key, [k for k in TOP_KEYS if k != "extends"], "", path)
    cfg = merge(BASE_DEFAULTS, {k: v for k, v in raw.items() if k not in ("datasets", "crf")})
    cfg["crf"] = copy.deepcopy(raw.get("crf", None))
    for section in SECTIONS:
        check_section(cfg, section, path)
    fill_model(cfg, path)
    for key in ("name", "paper", "row", "description"):
        if not isinstance(cfg[key], str):
            raise KerassegError(f"{key} must be a string, got {cfg[key]!r}", path)
    check_values(cfg, path)
    return cfg


def flatten(cfg: dict, over: dict, path, prefix="") -> dict:
    """``cfg`` with one ``datasets`` overlay ``over`` merged in and validated."""
    base = {k: v for k, v in cfg.items() if k not in ("datasets",)}
    out = merge(base, {k: v for k, v in over.items() if k != "crf"})
    if "crf" in over:
        out["crf"] = (None if over["crf"] is None else merge(cfg["crf"] or {}, over["crf"]))
    if "model" in over and isinstance(over["model"], dict) and "arch" in over["model"]:
        # a new architecture: its own option defaults, the overlay's options, nothing else
        opts = arch_options().get(over["model"]["arch"], {})
        out["model"] = {k: v for k, v in out["model"].items()
                        if k in BASE_DEFAULTS["model"] or k in opts or k in over["model"]}
    for section in SECTIONS:
        if section in over:
            if not isinstance(over[section], dict):
                raise KerassegError(f"{prefix}{section} must be a mapping", path)
            check_section(out, section, path, prefix)
    fill_model(out, path, prefix)
    check_values(out, path, prefix)
    return out
