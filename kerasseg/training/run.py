"""Reading a finished (or interrupted) run directory back: :func:`load_run`."""

from __future__ import annotations

import json
from pathlib import Path

from kerasseg.errors import KerassegError


def load_run(run_dir):
    """``(model, normalizer, config)`` of a run directory written by :func:`kerasseg.training.fit`.

    ``model`` is the functional network (dict outputs, Contract 3) of the best validation
    epoch; ``normalizer`` the fitted :class:`kerasseg.data.pipeline.Normalizer`; ``config`` the
    resolved config dict.
    """
    import yaml

    run = Path(run_dir)
    if not run.is_dir():
        raise KerassegError("run directory not found", run)
    model_path = run / "model.keras"
    if not model_path.is_file():
        raise KerassegError("no model.keras here: not a run directory, or training has not "
                            "finished an epoch yet", run)
    model = load_model_file(model_path)
    if not (run / "normalizer.json").is_file():
        raise KerassegError("normalizer.json is missing", run)
    normalizer = load_normalizer_file(run / "normalizer.json")
    try:
        config = yaml.safe_load((run / "config.yaml").read_text())
    except FileNotFoundError:
        raise KerassegError("config.yaml is missing", run) from None
    except yaml.YAMLError:
        raise KerassegError("config.yaml is not valid YAML", run) from None
    return model, normalizer, config


def load_model_file(path):
    """A ``.keras`` model file with kerasseg's custom layers; a one-line error if it cannot be read."""
    import keras

    import kerasseg.models  # noqa: F401  (registers the custom layers)

    path = Path(path)
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001 - any failure to read is a user-facing problem
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise KerassegError(f"cannot load model ({type(exc).__name__}: {first})", path) from None


def load_normalizer_file(path):
    """A :class:`~kerasseg.data.preprocess.Normalizer` from its JSON config."""
    from kerasseg.data.preprocess import Normalizer

    path = Path(path)
    try:
        return Normalizer.from_config(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise KerassegError(f"cannot read normaliser: {exc}", path) from None


def load_model_source(source):
    """Resolve what a user names as "the model" into ``(model, normalizer, config, run_dir)``.

    ``source`` is a run directory (see :func:`load_run`), a run's ``model.keras``, another
    ``.keras`` file (its sibling ``normalizer.json`` gives the normaliser when present, else
    ``normalizer`` is ``None``), or a ``keras.Model`` (returned with ``None``). ``config`` is the
    run's config (``{}`` without a run) and ``run_dir`` its folder (``None`` without a run).
    Callers decide what a missing normaliser means for them.
    """
    import keras

    if isinstance(source, keras.Model):
        return source, None, {}, None
    path = Path(str(source))
    if not path.exists():
        raise KerassegError("no such run directory or model file", path)
    if path.is_dir():
        model, normalizer, config = load_run(path)
        return model, normalizer, dict(config or {}), path
    if path.suffix != ".keras":
        raise KerassegError("expected a run directory or a .keras model file", path)
    run = path.parent
    if path.name == "model.keras" and (run / "normalizer.json").is_file() and (run / "config.yaml").is_file():
        model, normalizer, config = load_run(run)
        return model, normalizer, dict(config or {}), run
    norm_file = path.with_name("normalizer.json")
    normalizer = load_normalizer_file(norm_file) if norm_file.is_file() else None
    return load_model_file(path), normalizer, {}, None
