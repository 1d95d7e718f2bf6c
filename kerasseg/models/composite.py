"""Heads shared by all architectures: position prior, softmax, optional CRF-as-RNN.

Every model is ``image -> logits -> [PositionPrior] -> softmax ("net")`` and, with a CRF,
``CRFRNN([logits (+prior), image]) -> "crf"``. The CRF sees the same ``image`` input as the
network, so an adversarial perturbation of the input reaches both.

Composites of the papers:

- ``crunet``      = resunet -> CRFRNN (CRU-Net, Li et al. 2018)
- ``crunet_nor``  = unet -> CRFRNN (CRU-Net "No R")
- ``fcn_crf``     = fcn (+ position prior) -> CRFRNN (Zhu et al. 2018, joint FCN-CRF)
- ``multifcn_crf``= four FCNs, unary = learned fusion of their log-probabilities -> CRFRNN
"""

from __future__ import annotations

from kerasseg.errors import KerassegError


def crf_class():
    """The CRFRNN layer class (imported lazily: kerasseg/layers/crf.py is another module)."""
    try:
        from kerasseg.layers.crf import CRFRNN
    except ModuleNotFoundError as exc:
        if exc.name != "kerasseg.layers.crf":
            raise
        raise KerassegError("the CRF layer (kerasseg.layers.crf.CRFRNN) is not available yet") from None
    return CRFRNN


def attach_crf(unary_logits, image, crf: dict):
    """``CRFRNN(**crf)([unary_logits, image])`` named ``crf``; returns its probabilities."""
    if not isinstance(crf, dict):
        raise KerassegError(f"crf options must be a mapping of CRFRNN arguments; got {crf!r}")
    CRFRNN = crf_class()
    kwargs = dict(crf)
    kwargs.setdefault("num_classes", 2)
    kwargs.pop("name", None)
    try:
        layer = CRFRNN(name="crf", **kwargs)
    except TypeError as exc:
        raise KerassegError(f"bad crf options {sorted(crf)}: {exc}") from None
    return layer([unary_logits, image])
