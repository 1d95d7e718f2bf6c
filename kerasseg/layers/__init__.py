"""kerasseg.layers: custom Keras layers (all registered for `.keras` save/load).

- :class:`ImagePreprocessor`, :class:`Resize`, :class:`Enhance`, :class:`Normalize`
  (preprocessing.py): raw ROI crop -> network input, inside every saved model.
- :class:`PositionPrior` (prior.py): Zhu et al. eq. (6) image-sized log-prior bias.
- :class:`CRFRNN` (crf/ package): CRF-as-RNN mean-field layer and its exact, lowrank and grid backends.
- :class:`UnaryFusion` (fusion.py): the learned fusion of the multi-FCN unaries.
- :func:`largest_component`, :func:`fill_holes`, :func:`postprocess` (postprocessing.py): mask
  post-processing as core TF ops, chosen on cross-validation.
"""

from kerasseg.layers.crf import CRFRNN
from kerasseg.layers.fusion import UnaryFusion
from kerasseg.layers.postprocessing import fill_holes, largest_component, postprocess
from kerasseg.layers.preprocessing import Enhance, ImagePreprocessor, Normalize, Resize
from kerasseg.layers.prior import PositionPrior, prior_from_masks

__all__ = ["CRFRNN", "Enhance", "ImagePreprocessor", "Normalize", "PositionPrior", "Resize",
           "UnaryFusion", "fill_holes", "largest_component", "postprocess", "prior_from_masks"]
