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
    """The CRFRNN layer class (imported lazily: the config schema reads it without loading the models)."""
    from kerasseg.layers.crf import CRFRNN

    return CRFRNN


def crf_layer(crf: dict, name: str = "crf"):
    """The ``CRFRNN`` that the ``crf`` options of a config or ``build_model`` describe.

    KerassegError for options that are not a mapping, ``num_classes`` other than 2, or a value
    the layer refuses. Config validation calls this too, so a bad value is reported against the file.
    """
    if not isinstance(crf, dict):
        raise KerassegError(f"crf options must be a mapping of CRFRNN arguments; got {crf!r}")
    CRFRNN = crf_class()
    kwargs = dict(crf)
    kwargs.pop("name", None)
    # the models are 2-class: accept num_classes=2 for readability, refuse anything else
    num_classes = kwargs.pop("num_classes", 2)
    if num_classes != 2:
        raise KerassegError(f"crf num_classes must be 2 (background, mass); got {num_classes!r}")
    try:
        return CRFRNN(name=name, **kwargs)
    except KerassegError:
        raise  # already one line naming the option (a KerassegError is a ValueError)
    except (TypeError, ValueError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise KerassegError(f"bad crf options {sorted(crf)}: {msg}") from None


def attach_crf(unary_logits, image, crf: dict):
    """``CRFRNN(**crf)([unary_logits, image])`` named ``crf``; returns its probabilities."""
    return crf_layer(crf)([unary_logits, image])
