"""kerasseg.training: losses, the FGM adversarial train step, distribution and ``fit``.

``fit(config, data, out_dir, ...) -> RunResult`` trains into a run directory;
``load_run(run_dir) -> (model, config)`` reads one back (model: the segmenter).
"""

from kerasseg.training.fit import RunResult, build_training_model, fit
from kerasseg.training.run import load_run

__all__ = ["RunResult", "build_training_model", "fit", "load_run"]
