"""kerasseg.models: the networks of CRU-Net (Li et al. 2018) and Zhu et al. 2018.

``build_model(arch, input_size=40, crf=None, prior=None, **arch_kwargs)`` builds any of
them (see :mod:`kerasseg.models.registry`, whose registries ``register_arch`` /
``register_optimizer`` add architectures and optimizers in one place); ``final_key(model)`` names the output that
holds the final prediction; ``build_segmenter(network, preprocessor)`` puts the preprocessing
in front (the model that is saved, evaluated and served); ``boxes_function`` runs it on boxes of a
whole image (:mod:`kerasseg.models.whole_image`). Importing this package registers every custom layer, so
``keras.saving.load_model(path)`` can reload saved models.
"""

import kerasseg.layers  # noqa: F401  (registers PositionPrior and, when present, CRFRNN)
from kerasseg.layers.fusion import UnaryFusion
from kerasseg.models.ensemble import TTA_MODES, ensemble_function, predict_ensemble
from kerasseg.models.fcn import FCN_VARIANTS, fcn_geometry
from kerasseg.models.registry import (ALIASES, ARCH_OPTIONS, ARCHITECTURES, OPTIMIZERS, Architecture, arch_kwargs,
                                      build_model, build_optimizer, final_key, list_archs, output_keys,
                                      register_arch, register_optimizer, softmax_output, unregister_arch,
                                      unregister_optimizer, with_prior)
from kerasseg.models.segmenter import as_segmenter, build_segmenter, get_network, get_preprocessor, model_size
from kerasseg.models.whole_image import boxes_function

__all__ = [
    "TTA_MODES",
    "ensemble_function",
    "predict_ensemble",
    "boxes_function",
    "ALIASES",
    "ARCH_OPTIONS",
    "ARCHITECTURES",
    "Architecture",
    "OPTIMIZERS",
    "arch_kwargs",
    "build_optimizer",
    "register_arch",
    "register_optimizer",
    "softmax_output",
    "unregister_arch",
    "unregister_optimizer",
    "with_prior",
    "FCN_VARIANTS",
    "UnaryFusion",
    "as_segmenter",
    "build_segmenter",
    "get_network",
    "get_preprocessor",
    "model_size",
    "build_model",
    "fcn_geometry",
    "final_key",
    "list_archs",
    "output_keys",
]
