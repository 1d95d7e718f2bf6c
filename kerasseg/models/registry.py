"""``build_model``: every network of both papers by name (DEVELOPERS.md, Contract 3)."""

from __future__ import annotations

import numbers

import keras
import numpy as np
from keras import layers

from kerasseg.errors import KerassegError
from kerasseg.layers.prior import PositionPrior, check_rate
from kerasseg.models.crf_head import attach_crf
from kerasseg.layers.fusion import UnaryFusion
from kerasseg.models.fcn import FCN_VARIANTS, fcn_geometry, fcn_logits
from kerasseg.models.unet import DEFAULT_FILTERS, check_unet_options, unet_logits

#: base architectures and the options each accepts (with defaults)
ARCH_OPTIONS = {
    "unet": {"kernel_size": 3, "filters": DEFAULT_FILTERS, "dropout": 0.5},
    "resunet": {"kernel_size": 3, "filters": DEFAULT_FILTERS, "dropout": 0.5},
    "fcn": {"fcn_variant": 1},
    "multifcn": {},
}
#: convenience names of the papers' composites -> base architecture (always with a CRF)
ALIASES = {
    "crunet": "resunet",
    "crunet_nor": "unet",
    "fcn_crf": "fcn",
    "multifcn_crf": "multifcn",
}


def list_archs() -> list[str]:
    """All names :func:`build_model` accepts."""
    return sorted(ARCH_OPTIONS) + sorted(ALIASES)


def _check_size(input_size) -> int:
    if isinstance(input_size, bool) or not isinstance(input_size, numbers.Integral) or input_size < 1:
        raise KerassegError(f"input_size must be a positive integer; got {input_size!r}")
    return int(input_size)


def _head(logits, *, size: int, prior, name: str = ""):
    """Optional PositionPrior on the logits; returns the (possibly shifted) logits."""
    if prior is None:
        return logits
    return PositionPrior(prior, name=f"{name}prior")(logits)


#: CRF options of the composite names when ``crf`` is not given: the shipped configs' form
#: (low-rank mean field at 40x40, grid form above 256x256; ``crf={"mode": "exact"}`` for the dense one).
COMPOSITE_CRF = {"mode": "auto"}


def build_model(arch: str, *, input_size: int = 40, crf: dict | None = None,
                prior: np.ndarray | None = None, **arch_kwargs) -> keras.Model:
    """Build a segmentation model by name.

    Args:
        arch: ``unet``, ``resunet``, ``fcn``, ``multifcn`` or a composite name
            (``crunet``, ``crunet_nor``, ``fcn_crf``, ``multifcn_crf``: same as the base
            network with ``crf=COMPOSITE_CRF``, i.e. ``{"mode": "auto"}``, when no ``crf`` is given).
        input_size: ROI side H (= W).
        crf: ``None`` (no CRF) or keyword arguments for ``CRFRNN``.
        prior: (H, W) mass-frequency map (:func:`kerasseg.layers.prior_from_masks`);
            adds a trainable :class:`PositionPrior` to the logits before the softmax.
        **arch_kwargs: ``kernel_size``, ``filters``, ``dropout`` (U-Nets);
            ``fcn_variant`` 1..4 (fcn).

    Returns:
        A functional Keras model with input ``image`` (B, H, W, 1) and dict outputs
        ``{"net": probs}`` or ``{"net": probs, "crf": probs}``, probabilities (B, H, W, 2)
        with channel 1 = mass.

    Input shape:
        ``(batch, input_size, input_size, 1)`` normalised images.

    Output shape:
        dict of ``(batch, input_size, input_size, 2)`` class probabilities.

    Example:

    >>> import numpy as np
    >>> from kerasseg.models import build_model
    >>> model = build_model("unet", input_size=40, filters=(4, 8), crf={"mode": "lowrank"})
    >>> out = model(np.zeros((1, 40, 40, 1), "float32"))
    >>> sorted(out), tuple(out["crf"].shape)
    (['crf', 'net'], (1, 40, 40, 2))
    >>> bool(np.allclose(np.asarray(out["net"]).sum(-1), 1.0, atol=1e-5))
    True
    """
    if not isinstance(arch, str) or (arch not in ARCH_OPTIONS and arch not in ALIASES):
        raise KerassegError(f"unknown model {arch!r}; known: {', '.join(list_archs())}")
    name = arch
    if arch in ALIASES:
        arch = ALIASES[arch]
        if crf is None:
            crf = dict(COMPOSITE_CRF)
    size = _check_size(input_size)
    known = ARCH_OPTIONS[arch]
    unknown = sorted(set(arch_kwargs) - set(known))
    if unknown:
        raise KerassegError(
            f"unknown option(s) {', '.join(unknown)} for model '{name}'; "
            f"known: {', '.join(sorted(known)) or 'none'}"
        )
    opts = {**known, **arch_kwargs}
    if prior is not None:
        prior = check_rate(prior)
        if prior.shape != (size, size):
            raise KerassegError(
                f"position prior has shape {prior.shape} but the model input is {size}x{size}"
            )
    if crf is not None and not isinstance(crf, dict):
        raise KerassegError(f"crf options must be a mapping of CRFRNN arguments; got {crf!r}")

    # validate everything before Keras builds a single layer
    if arch in ("unet", "resunet"):
        k, filters, dropout = check_unet_options(
            name, size, opts["kernel_size"], opts["filters"], opts["dropout"]
        )
    elif arch == "fcn":
        variant = opts["fcn_variant"]
        if isinstance(variant, bool) or variant not in FCN_VARIANTS:
            raise KerassegError(f"model '{name}' fcn_variant must be one of 1, 2, 3, 4; got {variant!r}")
        fcn_geometry(size, variant, name)
    else:
        for v in FCN_VARIANTS:
            fcn_geometry(size, v, name)

    image = keras.Input(shape=(size, size, 1), dtype="float32", name="image")
    outputs = {}
    if arch in ("unet", "resunet"):
        logits = unet_logits(image, kernel_size=k, filters=filters, dropout=dropout,
                             residual=arch == "resunet")
        logits = _head(logits, size=size, prior=prior)
        outputs["net"] = layers.Softmax(axis=-1, name="net")(logits)
        unary = logits
    elif arch == "fcn":
        logits = fcn_logits(image, size=size, variant=variant)
        logits = _head(logits, size=size, prior=prior)
        outputs["net"] = layers.Softmax(axis=-1, name="net")(logits)
        unary = logits
    else:  # multifcn
        branch_logits, branch_probs = [], []
        for v in FCN_VARIANTS:
            lg = fcn_logits(image, size=size, variant=v, prefix=f"fcn{v}_")
            lg = _head(lg, size=size, prior=prior, name=f"fcn{v}_")
            branch_logits.append(lg)
            branch_probs.append(layers.Softmax(axis=-1, name=f"fcn{v}_softmax")(lg))
        outputs["net"] = layers.Average(name="net")(branch_probs)
        unary = UnaryFusion(name="unary_fusion")(branch_logits) if crf is not None else None

    if crf is not None:
        outputs["crf"] = attach_crf(unary, image, crf)
    return keras.Model(inputs=image, outputs=outputs, name=name)


def final_key(model: keras.Model) -> str:
    """``"crf"`` if the model has a CRF output, else ``"net"`` (the key of the final prediction)."""
    names = output_keys(model)
    if "crf" in names:
        return "crf"
    if "net" in names:
        return "net"
    raise KerassegError(f"model '{model.name}' has no 'net' or 'crf' output; got {names}")


def output_keys(model: keras.Model) -> list[str]:
    """Names of a kerasseg model's dict outputs."""
    struct = getattr(model, "_outputs_struct", None)
    if isinstance(struct, dict):
        return list(struct)
    out = model.output
    if isinstance(out, dict):
        return list(out)
    return list(getattr(model, "output_names", []))
