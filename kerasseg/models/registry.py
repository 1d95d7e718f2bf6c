"""``build_model``: every network of both papers by name (DEVELOPERS.md, Contract 3), and the
registries that name them.

- :data:`ARCHITECTURES`: one :class:`Architecture` per base network: its options with their
  defaults (the ``model`` keys a config may set; the config schema reads them through
  :data:`ARCH_OPTIONS`), the check of those options (before Keras builds a layer), the builder, and
  how a config's ``model`` section becomes builder kwargs. :data:`ALIASES` holds the papers'
  composite names (a base network with a CRF).
- :data:`OPTIMIZERS`: ``train.optimizer`` name -> Keras optimizer class.

Adding an architecture or an optimizer is one :func:`register_arch` / :func:`register_optimizer`
call: configs, :func:`build_model`, ``list_archs`` and training all read these tables.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import keras
import numpy as np
from keras import layers

from kerasseg.errors import KerassegError
from kerasseg.layers.fusion import UnaryFusion
from kerasseg.layers.prior import PositionPrior, check_rate
from kerasseg.models.crf_head import attach_crf
from kerasseg.models.fcn import FCN_VARIANTS, fcn_geometry, fcn_logits
from kerasseg.models.unet import DEFAULT_FILTERS, check_unet_options, unet_logits


# --------------------------------------------------------------------------- the registries
@dataclass(frozen=True)
class Architecture:
    """One base network of :data:`ARCHITECTURES`.

    ``options``: ``{option: default}``, the ``model`` keys of a config for this network and the
    ``**arch_kwargs`` of :func:`build_model`. ``check(name, size, options) -> kwargs`` validates the
    options (merged over the defaults) before any layer is built and returns the builder's kwargs
    (default: the options as given). ``build(image, *, size, prior, with_crf, **kwargs) -> (net,
    unary)`` builds the network on the ``image`` input: ``net`` the (B, H, W, 2) probabilities (a
    layer named "net", see :func:`softmax_output`), ``unary`` the logits a CRF refines (may be None
    when ``with_crf`` is false); ``prior`` is None or the checked position prior, for the builder to
    add to its logits. ``config_kwargs(model) -> arch_kwargs`` maps a resolved config's ``model``
    section to :func:`build_model` kwargs (default: every option, lists as tuples).
    """

    name: str
    build: Callable
    options: Mapping
    check: Callable | None = None
    config_kwargs: Callable | None = None

    def __post_init__(self):
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    def kwargs_from_config(self, model: Mapping) -> dict:
        """The :func:`build_model` ``**arch_kwargs`` of a resolved config's ``model`` section."""
        if self.config_kwargs is not None:
            return dict(self.config_kwargs(model))
        return {k: tuple(model[k]) if isinstance(model[k], list) else model[k] for k in self.options}


#: base architecture name -> :class:`Architecture` (in registration order: the config's choices)
ARCHITECTURES: dict[str, Architecture] = {}
#: convenience names of the papers' composites -> base architecture (always with a CRF)
ALIASES: dict[str, str] = {}
#: ``train.optimizer`` name -> Keras optimizer class (built with ``learning_rate=``)
OPTIMIZERS: dict[str, type] = {}
#: keys a config's ``model`` section or :func:`build_model` use for something else
_RESERVED = frozenset({"arch", "position_prior", "input_size", "crf", "prior"})


class _ArchOptions(Mapping):
    """``{arch: {option: default}}``: a live, read-only view of :data:`ARCHITECTURES`."""

    def __getitem__(self, arch):
        return ARCHITECTURES[arch].options

    def __iter__(self):
        return iter(ARCHITECTURES)

    def __len__(self):
        return len(ARCHITECTURES)

    def __repr__(self):
        return repr({arch: dict(opts) for arch, opts in self.items()})


#: base architectures and the options each accepts (with defaults); the config schema reads it
ARCH_OPTIONS: Mapping = _ArchOptions()


def register_arch(name: str, *, build: Callable, options: Mapping | None = None,
                  check: Callable | None = None, config_kwargs: Callable | None = None,
                  composites=()) -> Architecture:
    """Add a base architecture (see :class:`Architecture`) and the composite names that build it
    with a CRF; returns its entry. Names already taken and reserved option names are refused."""
    options = dict(options or {})
    taken = [n for n in (name, *composites) if n in ARCHITECTURES or n in ALIASES]
    if not isinstance(name, str) or not name or taken:
        raise KerassegError(f"cannot register model {name!r}: name(s) taken: {', '.join(taken) or name!r}")
    clash = sorted(_RESERVED & set(options))
    if clash:
        raise KerassegError(f"model {name!r}: option(s) {', '.join(clash)} are reserved")
    arch = Architecture(name, build, options, check, config_kwargs)
    ARCHITECTURES[name] = arch
    for alias in composites:
        ALIASES[alias] = name
    return arch


def unregister_arch(name: str) -> None:
    """Remove a base architecture and its composite names."""
    if name not in ARCHITECTURES:
        raise KerassegError(f"unknown model {name!r}; known: {', '.join(ARCHITECTURES)}")
    del ARCHITECTURES[name]
    for alias in [a for a, base in ALIASES.items() if base == name]:
        del ALIASES[alias]


def register_optimizer(name: str, cls: type) -> None:
    """Add ``train.optimizer: name`` (``cls(learning_rate=...)`` builds it)."""
    if not isinstance(name, str) or not name or name in OPTIMIZERS:
        raise KerassegError(f"cannot register optimizer {name!r}: the name is taken or empty")
    OPTIMIZERS[name] = cls


def unregister_optimizer(name: str) -> None:
    """Remove an optimizer name."""
    if name not in OPTIMIZERS:
        raise KerassegError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    del OPTIMIZERS[name]


def build_optimizer(name: str, learning_rate: float):
    """The Keras optimizer ``train.optimizer: name`` names."""
    if name not in OPTIMIZERS:
        raise KerassegError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](learning_rate=learning_rate)


def arch_kwargs(model: Mapping) -> dict:
    """The :func:`build_model` ``**arch_kwargs`` of a resolved config's ``model`` section."""
    arch = ALIASES.get(model["arch"], model["arch"])
    if arch not in ARCHITECTURES:
        raise KerassegError(f"unknown model {model['arch']!r}; known: {', '.join(list_archs())}")
    return ARCHITECTURES[arch].kwargs_from_config(model)


def list_archs() -> list[str]:
    """All names :func:`build_model` accepts."""
    return sorted(ARCHITECTURES) + sorted(ALIASES)


# --------------------------------------------------------------------------- the builders
def with_prior(logits, prior, name: str = ""):
    """``logits`` shifted by a trainable :class:`PositionPrior` (layer ``<name>prior``) when
    ``prior`` is given, else unchanged."""
    if prior is None:
        return logits
    return PositionPrior(prior, name=f"{name}prior")(logits)


def softmax_output(logits, prior=None):
    """The usual end of a builder: ``(net, unary)``, the logits with the optional prior
    (:func:`with_prior`) and their softmax, the layer named ``"net"``."""
    logits = with_prior(logits, prior)
    return layers.Softmax(axis=-1, name="net")(logits), logits


def _check_unet(name: str, size: int, opts) -> dict:
    k, filters, dropout = check_unet_options(name, size, opts["kernel_size"], opts["filters"],
                                             opts["dropout"])
    return {"kernel_size": k, "filters": filters, "dropout": dropout}


def _unet_builder(residual: bool) -> Callable:
    def build(image, *, size, prior, with_crf, kernel_size, filters, dropout):
        logits = unet_logits(image, kernel_size=kernel_size, filters=filters, dropout=dropout,
                             residual=residual)
        return softmax_output(logits, prior)
    return build


def _check_fcn(name: str, size: int, opts) -> dict:
    variant = opts["fcn_variant"]
    if isinstance(variant, bool) or variant not in FCN_VARIANTS:
        raise KerassegError(f"model '{name}' fcn_variant must be one of 1, 2, 3, 4; got {variant!r}")
    fcn_geometry(size, variant, name)
    return {"fcn_variant": variant}


def _build_fcn(image, *, size, prior, with_crf, fcn_variant):
    return softmax_output(fcn_logits(image, size=size, variant=fcn_variant), prior)


def _check_multifcn(name: str, size: int, opts) -> dict:
    for v in FCN_VARIANTS:
        fcn_geometry(size, v, name)
    return {}


def _build_multifcn(image, *, size, prior, with_crf):
    """The four FCN variants averaged (Zhu et al.); their logits fused for the CRF."""
    branch_logits, branch_probs = [], []
    for v in FCN_VARIANTS:
        lg = fcn_logits(image, size=size, variant=v, prefix=f"fcn{v}_")
        lg = with_prior(lg, prior, name=f"fcn{v}_")
        branch_logits.append(lg)
        branch_probs.append(layers.Softmax(axis=-1, name=f"fcn{v}_softmax")(lg))
    net = layers.Average(name="net")(branch_probs)
    return net, (UnaryFusion(name="unary_fusion")(branch_logits) if with_crf else None)


_UNET_OPTIONS = {"kernel_size": 3, "filters": DEFAULT_FILTERS, "dropout": 0.5}
register_arch("unet", build=_unet_builder(False), options=_UNET_OPTIONS, check=_check_unet,
              composites=("crunet_nor",))
register_arch("resunet", build=_unet_builder(True), options=_UNET_OPTIONS, check=_check_unet,
              composites=("crunet",))
register_arch("fcn", build=_build_fcn, options={"fcn_variant": 1}, check=_check_fcn,
              composites=("fcn_crf",))
register_arch("multifcn", build=_build_multifcn, check=_check_multifcn, composites=("multifcn_crf",))
for _name, _cls in (("adam", keras.optimizers.Adam), ("sgd", keras.optimizers.SGD),
                    ("rmsprop", keras.optimizers.RMSprop)):
    register_optimizer(_name, _cls)


# --------------------------------------------------------------------------- build_model
def _check_size(input_size) -> int:
    if isinstance(input_size, bool) or not isinstance(input_size, numbers.Integral) or input_size < 1:
        raise KerassegError(f"input_size must be a positive integer; got {input_size!r}")
    return int(input_size)


#: CRF options of the composite names when ``crf`` is not given: the shipped configs' form
#: (low-rank mean field at 40x40, grid form above 256x256; ``crf={"mode": "exact"}`` for the dense one).
COMPOSITE_CRF = {"mode": "auto"}


def _checked(arch: Architecture, name: str, size: int, arch_kwargs: dict, prior, crf):
    """``(builder kwargs, prior)``: everything validated before Keras builds a single layer."""
    known = arch.options
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
    return (arch.check(name, size, opts) if arch.check else opts), prior


def build_model(arch: str, *, input_size: int = 40, crf: dict | None = None,
                prior: np.ndarray | None = None, **arch_kwargs) -> keras.Model:
    """Build a segmentation model by name.

    Args:
        arch: ``unet``, ``resunet``, ``fcn``, ``multifcn`` (or any name in :data:`ARCHITECTURES`)
            or a composite name (``crunet``, ``crunet_nor``, ``fcn_crf``, ``multifcn_crf``: same as
            the base network with ``crf=COMPOSITE_CRF``, i.e. ``{"mode": "auto"}``, when no ``crf``
            is given).
        input_size: ROI side H (= W).
        crf: ``None`` (no CRF) or keyword arguments for ``CRFRNN``.
        prior: (H, W) mass-frequency map (:func:`kerasseg.layers.prior_from_masks`);
            adds a trainable :class:`PositionPrior` to the logits before the softmax.
        **arch_kwargs: the architecture's options (:data:`ARCH_OPTIONS`): ``kernel_size``,
            ``filters``, ``dropout`` (U-Nets); ``fcn_variant`` 1..4 (fcn).

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
    if not isinstance(arch, str) or (arch not in ARCHITECTURES and arch not in ALIASES):
        raise KerassegError(f"unknown model {arch!r}; known: {', '.join(list_archs())}")
    name = arch
    if arch in ALIASES:
        arch = ALIASES[arch]
        if crf is None:
            crf = dict(COMPOSITE_CRF)
    size = _check_size(input_size)
    spec = ARCHITECTURES[arch]
    kwargs, prior = _checked(spec, name, size, arch_kwargs, prior, crf)

    image = keras.Input(shape=(size, size, 1), dtype="float32", name="image")
    net, unary = spec.build(image, size=size, prior=prior, with_crf=crf is not None, **kwargs)
    outputs = {"net": net}
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
    from kerasseg.keras_private import output_struct

    struct = output_struct(model)
    if isinstance(struct, dict):
        return list(struct)
    out = model.output
    if isinstance(out, dict):
        return list(out)
    return list(getattr(model, "output_names", []))
