"""kerasseg.layers: custom Keras layers (all registered for `.keras` save/load).

- :class:`PositionPrior` (prior.py): Zhu et al. eq. (6) image-sized log-prior bias.
- :class:`CRFRNN` (crf.py): CRF-as-RNN mean-field layer (``None`` until crf.py exists).
"""

from kerasseg.layers.prior import PositionPrior, prior_from_masks

try:
    from kerasseg.layers.crf import CRFRNN
except ModuleNotFoundError as exc:  # crf.py not written yet: only that absence is tolerated
    if exc.name != "kerasseg.layers.crf":
        raise
    CRFRNN = None

__all__ = ["CRFRNN", "PositionPrior", "prior_from_masks"]
