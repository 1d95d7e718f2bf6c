"""Inference through the exported SavedModel (kerasseg.export): p50/p99 latency of one ROI, throughput at
batch 64, and the size of the export on disk.

Each model is the segmenter that training saves (:func:`kerasseg.models.build_segmenter`: the config's
``ImagePreprocessor`` in front of the network; the position maps adapted on synthetic raw ROIs), exported
with :func:`kerasseg.export.export_model`, reloaded with ``tf.saved_model.load`` and called through its
``serving_default`` signature (what TF Serving runs) on raw ROI crops at the model size, in this process.

The ensemble rows (nnU-Net style inference, :mod:`kerasseg.models.ensemble`) export 5 CRU-Net members
(different initialisations) with the 8-transform dihedral TTA as ONE SavedModel (40 network passes per
ROI, stacked into one batch per member) and compare it with the single model in the same process:
target ensemble p50 <= 10x the single model's p50. ``python -m benchmarks.bench_serving --quick
--ensemble-only`` runs just that comparison.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import print_targets, target

# (label, arch, crf kwargs or None for the arch's default, (enhancement, normalization) of its configs).
# The composite names default to the shipped configs' CRF form (mode auto: low-rank at 40x40); the exact
# dense CRF is a reference row without a target.
_CRUNET_PRE = ("none", "image")      # configs/_crunet.yaml
_ZHU_PRE = ("clahe", "position")     # configs/_zhu.yaml
_ALL = (("crunet", "crunet", None, _CRUNET_PRE), ("multifcn_crf", "multifcn_crf", None, _ZHU_PRE),
        ("unet", "unet", None, _CRUNET_PRE),
        ("crunet (exact CRF, reference)", "crunet", {"mode": "exact"}, _CRUNET_PRE))
MODELS = {"tiny": (("unet", "unet", None, _CRUNET_PRE),), "quick": _ALL, "full": _ALL}
CALLS = {"tiny": 5, "quick": 100, "full": 300}
#: ensemble rows: (members, TTA mode) by benchmark mode
ENSEMBLE = {"tiny": (2, "flips"), "quick": (5, "dihedral"), "full": (5, "dihedral")}
ENSEMBLE_ARCH = {"tiny": "unet", "quick": "crunet", "full": "crunet"}
BATCH_CALLS = {"tiny": 2, "quick": 10, "full": 30}


def raw_rois(rng, n, size):
    """``n`` raw ROI crops (float32, mammogram-like intensities ~1000 +- 200 with a bright disc)."""
    from benchmarks.common import disc_rois

    return np.stack([1000.0 + 200.0 * img for _, img in disc_rois(rng, n, size)]).astype(np.float32)


def segmenter(arch, crf=None, preprocessing=_CRUNET_PRE, size=40, seed=0):
    """The model training would save: the config's preprocessing (adapted on raw ROIs) + the network."""
    from kerasseg.layers import ImagePreprocessor
    from kerasseg.models import build_model, build_segmenter

    enhancement, normalization = preprocessing
    pre = ImagePreprocessor(size, enhancement=enhancement, normalization=normalization, name="preprocessor")
    pre.adapt(raw_rois(np.random.default_rng(seed), 16, size))
    return build_segmenter(build_model(arch, input_size=size, crf=crf), pre)


def folder_mb(path) -> float:
    """Total size of the files under ``path`` in MB (what a model server downloads and loads)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / 2**20


def serve_stats(label, arch, crf=None, mode="quick", size=40, batch=64, preprocessing=_CRUNET_PRE,
                members=1, tta="none"):
    """Latency / throughput of the export of ``members`` segmenters of ``arch`` with ``tta``."""
    import keras
    import tensorflow as tf

    from kerasseg.export import export_model
    from kerasseg.training.run import NO_POSTPROCESSING, EnsembleSource

    models = []
    for seed in range(members):
        keras.utils.set_random_seed(seed)
        models.append(segmenter(arch, crf, preprocessing, size, seed=seed))
    source = models[0] if members == 1 else EnsembleSource(models, {}, dict(NO_POSTPROCESSING))
    with tempfile.TemporaryDirectory() as tmp:
        path = export_model(source, f"{tmp}/export", tta=tta)
        size_mb = folder_mb(path)
        sig = tf.saved_model.load(str(path)).signatures["serving_default"]
        rng = np.random.default_rng(0)
        one = tf.constant(raw_rois(rng, 1, size))
        many = tf.constant(raw_rois(rng, batch, size))
        for _ in range(3):
            sig(image=one)["probability"].numpy()
            sig(image=many)["probability"].numpy()
        lat = []
        for _ in range(CALLS[mode]):
            t = time.perf_counter()
            sig(image=one)["probability"].numpy()
            lat.append(time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(BATCH_CALLS[mode]):
            sig(image=many)["probability"].numpy()
        thr = batch * BATCH_CALLS[mode] / (time.perf_counter() - t)
    lat = np.array(lat) * 1000
    return {"model": label, "preprocessing": "/".join(preprocessing), "members": members, "tta": tta,
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            f"batch{batch}_rois_per_s": float(thr), "export_mb": float(size_mb)}


def ensemble_rows(mode="quick"):
    """The single model and the members x TTA ensemble of the same architecture, one after the other."""
    members, tta = ENSEMBLE[mode]
    arch = ENSEMBLE_ARCH[mode]
    single = serve_stats(f"{arch} (single, for the ensemble ratio)", arch, None, mode, preprocessing=_CRUNET_PRE)
    ens = serve_stats(f"{arch} ensemble {members} members x {tta} TTA", arch, None, mode,
                      preprocessing=_CRUNET_PRE, members=members, tta=tta)
    ens["p50_vs_single"] = ens["p50_ms"] / single["p50_ms"]
    ens["throughput_vs_single"] = ens["batch64_rois_per_s"] / single["batch64_rois_per_s"]
    targets = [target(f"serving p50 latency, ensemble {members} x {tta} TTA / single {arch}",
                      ens["p50_vs_single"], 10, "x", False)]
    return [single, ens], targets


def run(mode="quick", ensemble_only=False):
    rows, targets = [], []
    for label, arch, crf, pre in (() if ensemble_only else MODELS[mode]):
        row = serve_stats(label, arch, crf, mode, preprocessing=pre)
        rows.append(row)
        print("  serving", row, flush=True)
        if "reference" in label:
            continue
        targets.append(target(f"serving p50 latency, one 40x40 ROI, {label}", row["p50_ms"], 10, "ms", False))
        targets.append(target(f"serving throughput at batch 64, {label}", row["batch64_rois_per_s"], 500, "ROIs/s", True))
    ens_rows, ens_targets = ensemble_rows(mode)
    for row in ens_rows:
        print("  serving", row, flush=True)
    rows += ens_rows
    targets += ens_targets
    return {"name": "serving", "rows": rows, "targets": targets}


if __name__ == "__main__":
    import sys

    res = run("quick" if "--quick" in sys.argv else "full", ensemble_only="--ensemble-only" in sys.argv)
    print_targets(res["targets"])
