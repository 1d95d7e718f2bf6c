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
    import keras
    import yaml

    import kerasseg.models  # noqa: F401  (registers the custom layers)
    from kerasseg.data.pipeline import Normalizer

    run = Path(run_dir)
    if not run.is_dir():
        raise KerassegError("run directory not found", run)
    model_path = run / "model.keras"
    if not model_path.is_file():
        raise KerassegError("no model.keras here: not a run directory, or training has not "
                            "finished an epoch yet", run)
    try:
        model = keras.saving.load_model(model_path, compile=False)
    except Exception as exc:  # noqa: BLE001 - any failure to read is a user-facing problem
        raise KerassegError(f"cannot load model.keras ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''})", run) from None
    try:
        normalizer = Normalizer.from_config(json.loads((run / "normalizer.json").read_text()))
    except FileNotFoundError:
        raise KerassegError("normalizer.json is missing", run) from None
    except ValueError:
        raise KerassegError("normalizer.json is not valid JSON", run) from None
    try:
        config = yaml.safe_load((run / "config.yaml").read_text())
    except FileNotFoundError:
        raise KerassegError("config.yaml is missing", run) from None
    except yaml.YAMLError:
        raise KerassegError("config.yaml is not valid YAML", run) from None
    return model, normalizer, config
