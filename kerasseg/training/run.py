"""Reading a finished (or interrupted) run directory back: :func:`load_run`."""

from __future__ import annotations

from pathlib import Path

from kerasseg.errors import KerassegError


def load_run(run_dir):
    """``(model, config)`` of a run directory written by :func:`kerasseg.training.fit`.

    ``model`` is the segmenter of the best validation epoch (raw ROI crop -> preprocessing ->
    network, dict outputs; :mod:`kerasseg.models.segmenter`); ``config`` the resolved config dict.
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
    try:
        config = yaml.safe_load((run / "config.yaml").read_text())
    except FileNotFoundError:
        raise KerassegError("config.yaml is missing", run) from None
    except yaml.YAMLError:
        raise KerassegError("config.yaml is not valid YAML", run) from None
    return model, config


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


def load_model_source(source):
    """Resolve what a user names as "the model" into ``(segmenter, config, run_dir)``.

    ``source`` is a run directory (see :func:`load_run`), a ``.keras`` file or a ``keras.Model``.
    A model without an :class:`~kerasseg.layers.ImagePreprocessor` (a bare Contract-3 network)
    is wrapped with the resize-only one (its input is taken as already normalised).
    ``config`` is the run's config (``{}`` without a run) and ``run_dir`` its folder (``None``
    without a run).
    """
    import keras

    from kerasseg.models.segmenter import as_segmenter

    if isinstance(source, keras.Model):
        inner = getattr(source, "net", None)  # a SegmentationModel training wrapper
        return as_segmenter(inner if isinstance(inner, keras.Model) else source), {}, None
    path = Path(str(source))
    if not path.exists():
        raise KerassegError("no such run directory or model file", path)
    if path.is_dir():
        model, config = load_run(path)
        return as_segmenter(model), dict(config or {}), path
    if path.suffix != ".keras":
        raise KerassegError("expected a run directory or a .keras model file", path)
    run = path.parent
    if path.name == "model.keras" and (run / "config.yaml").is_file():
        model, config = load_run(run)
        return as_segmenter(model), dict(config or {}), run
    return as_segmenter(load_model_file(path)), {}, None
