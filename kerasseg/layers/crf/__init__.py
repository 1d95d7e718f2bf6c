"""kerasseg.layers.crf: the CRF-as-RNN layer and its three forms of the mean field.

- :class:`CRFRNN` (layer.py): the Keras layer (arguments, weights, ``mode`` -> backend, config).
- mean_field.py: the mean-field loop on a backend's messages and its two-label path.
- backend.py: :class:`CRFBackend` (the typed backend protocol), :class:`LowRankOptions`,
  :class:`GridOptions` (frozen settings saved in the layer config).
- exact.py (``mode="exact"``), lowrank.py (``"lowrank"``), grid.py (``"grid"``; old names
  ``"scalable"`` and ``"filters"``; its splat-blur-slice plans in grid_plans.py): the backends.
  ``"auto"`` picks lowrank or grid by size.
"""

from kerasseg.layers.crf.backend import CRFBackend, GridOptions, LowRankOptions
from kerasseg.layers.crf.exact import ExactBackend
from kerasseg.layers.crf.grid import GridBackend
from kerasseg.layers.crf.layer import ALIASES, BACKENDS, CRFRNN, MODES, resolve_mode
from kerasseg.layers.crf.lowrank import LowRankBackend

__all__ = ["ALIASES", "BACKENDS", "CRFBackend", "CRFRNN", "ExactBackend", "GridBackend", "GridOptions",
           "LowRankBackend", "LowRankOptions", "MODES", "resolve_mode"]
