"""Shared test setup.

TensorFlow is configured once, before any test touches it: two logical CPU
devices (so MirroredStrategy code paths run on a machine without GPUs) and
quiet logs. Tests that need a single device simply use the default strategy.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import kerasseg  # noqa: E402,F401  (before TensorFlow loads: tests run the kernels users get)


def _configure_tf():
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
        )
    except RuntimeError:  # already initialised (e.g. by a plugin): keep what exists
        pass


_configure_tf()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
