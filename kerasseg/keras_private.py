"""Every use of a private Keras / TensorFlow name, in one place.

kerasseg uses public APIs everywhere else. These four uses have no public equivalent; each one is
looked up defensively (a Keras that renames or drops the name takes a public fallback, never a stale
override), and ``tests/package/test_keras_private.py`` checks each one against the installed versions
and names them when one goes away:

- :func:`has_symbolic_build_hook` - ``keras.Model._maybe_symbolic_build(iterator, data_batch)``, where
  Keras 3 builds a model symbolically at the start of ``fit``; ``SegmentationModel`` overrides it only
  under MultiWorkerMirroredStrategy (Keras's version reduces a PerReplica batch across workers there).
- :func:`output_struct` - ``Functional._outputs_struct``: the dict of a functional model's outputs, in
  the order they were declared (``model.output`` only exists once the model is built).
- :data:`RETRACING_CLOSURES` - the qualified names of Keras's train/test step closures, whose
  "triggered tf.function retracing" log lines are false alarms when one process trains several models.
- :func:`onednn_enabled` - ``tensorflow.python.util._pywrap_util_port.IsMklEnabled`` (whether the
  oneDNN CPU kernels are on), else the ``TF_ENABLE_ONEDNN_OPTS`` variable.
"""

from __future__ import annotations

import os
import sys

#: the Keras versions these uses were checked with (the test prints the installed one)
CHECKED_KERAS = "3.x up to 3.15"
#: Keras's private step-function closures (``TensorFlowTrainer``) named in retracing warnings
RETRACING_CLOSURES = ("TensorFlowTrainer._make_function.<locals>",
                      "TensorFlowTrainer.make_train_function.<locals>",
                      "TensorFlowTrainer.make_test_function.<locals>")
ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"


def has_symbolic_build_hook() -> bool:
    """Whether ``keras.Model._maybe_symbolic_build(iterator, data_batch)`` exists with that signature.

    >>> isinstance(has_symbolic_build_hook(), bool)
    True
    """
    import inspect

    import keras

    hook = getattr(keras.Model, "_maybe_symbolic_build", None)
    if hook is None:
        return False
    return {"iterator", "data_batch"} <= set(inspect.signature(hook).parameters)


def output_struct(model):
    """The functional model's declared output structure (a dict for kerasseg's models), or ``None``
    when this Keras has no ``_outputs_struct`` (callers fall back to ``model.output``).

    >>> import keras
    >>> x = keras.Input((4,))
    >>> sorted(output_struct(keras.Model(x, {"net": keras.layers.Dense(2)(x)})))
    ['net']
    """
    return getattr(model, "_outputs_struct", None)


def onednn_enabled() -> bool:
    """Whether TensorFlow runs (or will run, once imported) its oneDNN CPU kernels in this process.

    >>> isinstance(onednn_enabled(), bool)
    True
    """
    if "tensorflow" in sys.modules:  # loaded: ask it (it may have decided by CPU, env unset)
        try:
            from tensorflow.python.util import _pywrap_util_port

            return bool(_pywrap_util_port.IsMklEnabled())
        except (ImportError, AttributeError):  # private API moved: fall back to the variable
            pass
    return os.environ.get(ONEDNN_ENV, "") not in ("", "0")
