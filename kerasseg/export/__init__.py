"""kerasseg.export: TF Serving export and prediction on DICOM/PNG/TIFF/.npz inputs.

The names below are loaded from their modules on first use (PEP 562), so importing a light submodule
such as :mod:`kerasseg.export.dicom` (DICOM SEG/SR writers for TF Serving clients) does not import
TensorFlow through this package.
"""

import importlib

#: public name -> the submodule that defines it
_LAZY = {
    "SIGNATURES": "savedmodel",
    "build_serving_module": "savedmodel",
    "existing_versions": "savedmodel",
    "export_model": "savedmodel",
    "find_export": "savedmodel",
    "graph_ops": "savedmodel",
    "load_ensemble": "savedmodel",
    "load_source": "savedmodel",
    "Segmenter": "predict",
    "predict_image": "predict",
    "predict_inputs": "predict",
    "predict_npz": "predict",
}

__all__ = [
    "export_model",
    "build_serving_module",
    "existing_versions",
    "find_export",
    "load_ensemble",
    "load_source",
    "Segmenter",
    "predict_image",
    "predict_npz",
    "predict_inputs",
]


#: submodules reachable as attributes (``kerasseg.export.savedmodel``) without importing them first
_SUBMODULES = ("savedmodel", "predict", "roi_input", "outputs", "dicom")


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))
