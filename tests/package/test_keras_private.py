"""The private Keras / TensorFlow names kerasseg relies on (all in kerasseg.keras_private) exist in the
installed versions; a failure names the versions, so an upgrade that drops one is found here first."""

import keras
import numpy as np
import tensorflow as tf

from kerasseg import keras_private

VERSIONS = f"keras {keras.__version__}, tensorflow {tf.__version__} (checked with {keras_private.CHECKED_KERAS})"


def test_symbolic_build_hook_exists_with_its_signature():
    assert keras_private.has_symbolic_build_hook(), f"Model._maybe_symbolic_build changed in {VERSIONS}"
    from kerasseg.training.segmentation_model import SYMBOLIC_BUILD_HOOK, SegmentationModel

    assert SYMBOLIC_BUILD_HOOK and "_maybe_symbolic_build" in vars(SegmentationModel)


def test_output_struct_is_the_declared_dict_in_order():
    x = keras.Input((8, 8, 1))
    y = keras.layers.Conv2D(2, 1)(x)
    model = keras.Model(x, {"net": y, "crf": y})
    struct = keras_private.output_struct(model)
    assert isinstance(struct, dict) and list(struct) == ["net", "crf"], f"_outputs_struct changed in {VERSIONS}"
    from kerasseg.models.registry import final_key

    assert final_key(model) == "crf"


def test_retracing_closures_are_keras_step_function_names():
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    for name in keras_private.RETRACING_CLOSURES:
        cls, method = name.split(".")[:2]
        assert cls == TensorFlowTrainer.__name__ and hasattr(TensorFlowTrainer, method), \
            f"{name} is not a TensorFlowTrainer method in {VERSIONS}"


def test_onednn_query_answers():
    from tensorflow.python.util import _pywrap_util_port

    assert keras_private.onednn_enabled() == bool(_pywrap_util_port.IsMklEnabled()), VERSIONS
    assert np.isfinite(float(keras_private.onednn_enabled()))
