"""kerasseg.export: TF Serving export and prediction on DICOM/PNG/TIFF/.npz inputs."""

from kerasseg.export.savedmodel import (SIGNATURES, build_serving_module, existing_versions, export_model,
                                       find_export, graph_ops, load_ensemble, load_source)
from kerasseg.export.predict import Segmenter, predict_image, predict_inputs, predict_npz

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
