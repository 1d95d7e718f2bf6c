"""Reading a finished (or interrupted) run directory back: :func:`load_run`."""

from __future__ import annotations

from dataclasses import dataclass
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

    import zipfile

    path = Path(path)
    if not zipfile.is_zipfile(path):  # Keras says "File not found" for a file that is there
        raise KerassegError("cannot load model: not a .keras file (not a zip archive: corrupt, truncated or empty)", path)
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


#: the ``kind`` written into a cross-validation folder's cv.json
CV_KIND = "kerasseg-cv"
NO_POSTPROCESSING = {"largest_component": False, "fill_holes": False}


@dataclass
class EnsembleSource:
    """What :func:`load_ensemble_source` resolves: the members and how to combine them."""

    members: list                   # segmenters (raw crop -> dict of probabilities)
    config: dict                    # the (first) member's resolved config
    postprocessing: dict            # {"largest_component": bool, "fill_holes": bool}
    folds_dir: Path | None = None   # a cross-validation folder (cv.json + fold-<k>/)
    run_dir: Path | None = None     # a single run directory
    cv: dict | None = None          # the folder's cv.json


def is_folds_dir(path) -> bool:
    """True for a folder written by ``kerasseg fit --folds`` (it holds cv.json)."""
    return Path(str(path)).is_dir() and (Path(str(path)) / "cv.json").is_file()


def read_cv(folds_dir) -> dict:
    """The cv.json of a cross-validation folder; a one-line error if it is unreadable."""
    import json

    path = Path(folds_dir) / "cv.json"
    try:
        cv = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise KerassegError(f"cannot read cv.json ({exc.__class__.__name__})", path) from None
    if not isinstance(cv, dict) or cv.get("kind") != CV_KIND:
        raise KerassegError(f"not a kerasseg cross-validation file (kind != {CV_KIND!r})", path)
    folds = cv.get("folds")
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 1:
        raise KerassegError(f"'folds' must be a positive integer, got {folds!r}", path)
    return cv


def load_ensemble_source(source) -> EnsembleSource:
    """Resolve a model source into ensemble members.

    A cross-validation folder (``kerasseg fit --folds``: cv.json + ``fold-<k>/`` run dirs) gives
    one member per fold and the post-processing chosen on its out-of-fold predictions; a run
    directory, ``.keras`` file or keras.Model gives one member and no post-processing. A folder
    whose cross-validation has not finished (status not "finished") is refused.
    """
    if not isinstance(source, (str, Path)) or not is_folds_dir(source):
        model, config, run_dir = load_model_source(source)
        return EnsembleSource([model], config, dict(NO_POSTPROCESSING), None, run_dir, None)
    folds_dir = Path(str(source))
    cv = read_cv(folds_dir)
    if cv.get("status") != "finished":
        raise KerassegError(f"cross-validation is not finished (status {cv.get('status')!r}); rerun "
                            "the same `kerasseg fit --folds` command to complete it", folds_dir)
    post = dict(NO_POSTPROCESSING)
    recorded = cv.get("postprocessing") or {}
    if not isinstance(recorded, dict):
        raise KerassegError(f"cv.json: postprocessing must be a mapping, got {recorded!r}", folds_dir)
    for k, v in recorded.items():
        if k in NO_POSTPROCESSING:
            if not isinstance(v, bool):  # validated before use: bool("no") would be True
                raise KerassegError(f"cv.json: postprocessing.{k} must be true or false, got {v!r}", folds_dir)
            post[k] = v
    members, config = [], {}
    for k in range(1, int(cv["folds"]) + 1):
        model, cfg = load_run(folds_dir / f"fold-{k}")
        members.append(model)
        config = config or dict(cfg or {})
    return EnsembleSource(members, config, post, folds_dir, None, cv)
