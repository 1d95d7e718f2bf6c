"""The CRF message-backend interface and the backends' options.

A backend computes the mean-field messages ``m_k[i] = sum_{j != i} k(f_i, f_j) q[j]`` of each
CRF kernel ``k`` and runs the mean-field loop on them. :class:`CRFBackend` is the typed interface
(a ``runtime_checkable`` :class:`typing.Protocol`) that :class:`~kerasseg.layers.crf.CRFRNN`
calls; the three forms implement it:

- :class:`~kerasseg.layers.crf.exact.ExactBackend` (``mode="exact"``): dense kernel matrices.
- :class:`~kerasseg.layers.crf.lowrank.LowRankBackend` (``"lowrank"``): factorised kernels,
  settings :class:`LowRankOptions`.
- :class:`~kerasseg.layers.crf.grid.GridBackend` (``"grid"``): linear-cost filtering,
  settings :class:`GridOptions`.

The options are frozen dataclasses held by each layer and written by its ``get_config``, so a
reloaded model computes what it computed when it was saved.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np
import tensorflow as tf

from kerasseg.errors import KerassegError

KERNELS = ("spatial", "bilateral", "intensity")

#: The bandwidth keys handed to :meth:`CRFBackend.prepare`.
BANDWIDTH_KEYS = ("spatial", "alpha", "beta", "intensity")


@runtime_checkable
class CRFBackend(Protocol):
    """What :class:`~kerasseg.layers.crf.CRFRNN` needs from a form of the mean field.

    ``image`` is (B, H, W, F), ``q`` (B, H, W, C) label probabilities, ``x`` one (B, H, W) map.
    Every message excludes the self term (``j == i``) and the lists are in ``kernels`` order.
    """

    #: the form's name: ``"exact"``, ``"lowrank"`` or ``"grid"``
    name: str

    def prepare(self, image, *, kernels: Sequence[str], bandwidths: Mapping[str, Any]) -> Any:
        """Per-call state (image-dependent parts of every kernel), computed once per layer call."""

    def messages(self, q, state) -> list:
        """Per-kernel messages of ``q``, each (B, H, W, C)."""

    def map_messages(self, x, state) -> list:
        """Per-kernel messages of one map ``x`` (B, H, W), each (B, H, W)."""

    def ones_messages(self, state) -> list:
        """Per-kernel messages of the all-ones map, each (B, H, W)."""

    def mean_field(self, unary, weights, compat, state, iterations: int):
        """Marginals (B, H, W, C) after ``iterations`` mean-field updates from ``softmax(unary)``."""


# ------------------------------------------------------------------------------------ options


def _check_number(owner, name, value, *, integer=False, low=None, high=None, low_open=False):
    kind = "an integer" if integer else "a number"
    ok = not isinstance(value, bool) and isinstance(value, numbers.Integral if integer else numbers.Real)
    ok = ok and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        bounds = []
        if low is not None:
            bounds.append(f"{'>' if low_open else '>='} {low}")
        if high is not None:
            bounds.append(f"<= {high}")
        raise KerassegError(f"CRFRNN: {owner}.{name}={value!r} must be {kind} {' and '.join(bounds)}".rstrip())


class _Options:
    """Shared coercion of a frozen options dataclass from ``None``, a mapping or an instance."""

    _name = "options"

    @classmethod
    def coerce(cls, value):
        """``value`` as an instance: None -> the defaults, a mapping -> its fields (unknown keys refused)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise KerassegError(
                f"CRFRNN: {cls._name} must be a mapping of {sorted(cls.field_names())}, got {value!r}"
            )
        unknown = sorted(set(value) - set(cls.field_names()))
        if unknown:
            raise KerassegError(
                f"CRFRNN: {cls._name} has unknown keys {unknown}; use {sorted(cls.field_names())}"
            )
        return cls(**dict(value))

    @classmethod
    def field_names(cls):
        return tuple(f.name for f in dataclasses.fields(cls))

    def to_dict(self) -> dict:
        """JSON-ready ``{field: value}`` (what ``CRFRNN.get_config`` writes)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class LowRankOptions(_Options):
    """Settings of the low-rank form (``mode="lowrank"``, and ``"auto"`` up to ``lowrank_max_pixels``).

    Args:
        spatial_rtol: eigenvalues of each 1-D position Gaussian kept above ``spatial_rtol`` times the
            largest (Eckart-Young: no kernel entry is off by more than that), in (0, 0.5].
        range_anchors: anchors ``K`` of the Nystroem intensity factorisation, >= 2.
        range_spacing: anchors at least this many intensity bandwidths apart, in [0.7, 1.0]
            (kernel error 2.5e-3 of its peak at 0.8, 1.4e-2 at 1.0).

    Example:
        >>> from kerasseg.layers.crf.backend import LowRankOptions
        >>> LowRankOptions(range_anchors=24).to_dict()["range_anchors"]
        24
    """

    _name = "lowrank_options"

    spatial_rtol: float = 1e-3
    range_anchors: int = 16
    range_spacing: float = 0.8

    def __post_init__(self):
        _check_number(self._name, "spatial_rtol", self.spatial_rtol, low=0.0, low_open=True, high=0.5)
        _check_number(self._name, "range_anchors", self.range_anchors, integer=True, low=2)
        _check_number(self._name, "range_spacing", self.range_spacing, low=0.7, high=1.0)
        object.__setattr__(self, "spatial_rtol", float(self.spatial_rtol))
        object.__setattr__(self, "range_anchors", int(self.range_anchors))
        object.__setattr__(self, "range_spacing", float(self.range_spacing))


@dataclasses.dataclass(frozen=True)
class GridOptions(_Options):
    """Settings of the linear-cost grid form (``mode="grid"``, and ``"auto"`` above ``lowrank_max_pixels``).

    Args:
        truncate: the spatial filter is cut at ``truncate * theta_spatial`` pixels (> 0).
        bilateral_spatial_oversample: bilateral-grid nodes per ``theta_alpha`` (> 0).
        bilateral_range_oversample: bilateral-grid intensity bins per ``theta_beta`` (> 0).
        bilateral_range_bins: intensity bins of the bilateral grid (>= 4).
        intensity_oversample: histogram bins per ``theta_intensity`` (> 0).
        intensity_bins: bins of the all-pairs intensity histogram (>= 4).

    Example:
        >>> from kerasseg.layers.crf.backend import GridOptions
        >>> GridOptions(intensity_bins=64).intensity_bins
        64
    """

    _name = "grid_options"

    truncate: float = 5.3  # exp(-x^2/2) < 1e-6 beyond x = 5.26
    bilateral_spatial_oversample: float = 2.0
    bilateral_range_oversample: float = 2.0
    bilateral_range_bins: int = 32
    intensity_oversample: float = 4.0
    intensity_bins: int = 128

    def __post_init__(self):
        for name in ("truncate", "bilateral_spatial_oversample", "bilateral_range_oversample",
                     "intensity_oversample"):
            _check_number(self._name, name, getattr(self, name), low=0.0, low_open=True)
            object.__setattr__(self, name, float(getattr(self, name)))
        for name in ("bilateral_range_bins", "intensity_bins"):
            _check_number(self._name, name, getattr(self, name), integer=True, low=4)
            object.__setattr__(self, name, int(getattr(self, name)))


# ------------------------------------------------------------------------------------ helpers


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


def last_label_messages(map_fn, q, ones):
    """Messages of every label of ``q`` from ``map_fn`` applied to the first C-1 labels only.

    CRFRNN passes softmax outputs, whose labels sum to 1 at every pixel, so the last label's
    message is the filtered all-ones map ``ones`` minus the others' (the filters are linear). This
    equals filtering all C channels whenever ``q`` sums to 1 over the labels, and halves the work
    for C = 2. ``map_fn``: (B, H, W, C-1) -> messages of the same shape.
    """
    c = q.shape[-1]
    if c is None or c < 2:
        return map_fn(q)
    head = map_fn(q[..., : c - 1])
    last = tf.cast(ones, head.dtype)[..., None] - tf.reduce_sum(head, axis=-1, keepdims=True)
    return tf.concat([head, last], axis=-1)
