"""Config names, ``extends`` chains and YAML I/O (no validation: :mod:`kerasseg.config.schema`)."""

from __future__ import annotations

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

#: order of the sections in a written config
SECTION_ORDER = ("name", "paper", "row", "description", "model", "crf", "loss", "train", "data",
                 "dataset", "datasets")


def merge(base: dict, over: dict) -> dict:
    """Deep merge: dict values merge recursively, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
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


def read_yaml(path: Path) -> dict:
    """A config file's mapping; KerassegError naming the file for bad YAML or a non-mapping."""
    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        raise KerassegError(f"not valid YAML{where}", path) from None
    except UnicodeDecodeError as exc:
        raise KerassegError(f"config is not UTF-8 text (byte {exc.start})", path) from None
    except OSError as exc:
        raise KerassegError(f"cannot read config ({exc.strerror})", path) from None
    if raw is None:
        raise KerassegError("config file is empty (write at least `extends: <config>` or a section)", path)
    if not isinstance(raw, dict):
        raise KerassegError("a config must be a YAML mapping of sections", path)
    return raw


def load_raw(spec, _seen=()) -> tuple[dict, Path | None]:
    """Read a config (dict, path or name) and follow its ``extends`` chain; not validated."""
    if isinstance(spec, dict):
        raw, path = copy.deepcopy(spec), None
    else:
        path = config_path(spec)
        if path.resolve() in _seen:
            raise KerassegError("circular 'extends'", path)
        raw = read_yaml(path)
        _seen = _seen + (path.resolve(),)
    parent = raw.pop("extends", None)
    if parent is not None:
        if not isinstance(parent, str):
            raise KerassegError("'extends' must be a config name or path", path)
        if path is not None and not (CONFIG_DIR / f"{parent}.yaml").is_file():
            local = path.parent / (parent if parent.endswith((".yaml", ".yml")) else f"{parent}.yaml")
            if local.is_file():
                parent = str(local)
        base, _ = load_raw(parent, _seen)
        raw = merge(base, raw)
    return raw, path


def to_yaml(cfg: dict) -> str:
    """The config as YAML text (sections in the schema's order)."""
    clean = {k: cfg[k] for k in SECTION_ORDER if k in cfg}
    return yaml.safe_dump(clean, sort_keys=False, default_flow_style=None)


def save_config(cfg: dict, path) -> Path:
    """Write the (resolved) config as YAML atomically."""
    from kerasseg.fileio import atomic_write_text

    return atomic_write_text(path, to_yaml(cfg))
