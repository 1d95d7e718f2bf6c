"""Helpers shared by the CRF message backends (``crf_lowrank``, ``crf_filters``)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kerasseg.errors import KerassegError


def static_bandwidth(name: str, value, mode: str) -> float:
    """The Python float of a bandwidth tensor; a clear error when it is a trainable (traced) value.

    The fast forms size their factors or grids from the bandwidths once per call, so they need
    constants (CRFRNN already refuses ``trainable_bandwidths=True`` outside ``mode="exact"``).
    """
    static = tf.get_static_value(value)
    if static is None:
        raise KerassegError(
            f"CRFRNN: mode={mode!r} needs fixed bandwidths (its factors and grids are sized from them), "
            f"but {name} is trainable; use trainable_bandwidths=False or mode='exact'"
        )
    return float(np.asarray(static))
