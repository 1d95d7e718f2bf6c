"""Inference through the exported SavedModel (kerasseg.export): p50/p99 latency of one ROI, throughput at batch 64.

The model is exported with :func:`kerasseg.export.export_model`, reloaded with ``tf.saved_model.load``
and called through its ``serving_default`` signature (what TF Serving runs), in this process.
"""

from __future__ import annotations

import tempfile
import time

import numpy as np

from benchmarks.common import print_targets, target

# (label, arch, crf kwargs or None for the arch's default). The composite names default to the shipped
# configs' CRF form (mode auto: low-rank at 40x40); the exact dense CRF is a reference row without a target.
_ALL = (("crunet", "crunet", None), ("multifcn_crf", "multifcn_crf", None), ("unet", "unet", None),
        ("crunet (exact CRF, reference)", "crunet", {"mode": "exact"}))
MODELS = {"tiny": (("unet", "unet", None),), "quick": _ALL, "full": _ALL}
CALLS = {"tiny": 5, "quick": 100, "full": 300}
BATCH_CALLS = {"tiny": 2, "quick": 10, "full": 30}


def serve_stats(label, arch, crf=None, mode="quick", size=40, batch=64):
    import tensorflow as tf

    from kerasseg.export import export_model
    from kerasseg.models import build_model

    model = build_model(arch, input_size=size, crf=crf)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_model(model, f"{tmp}/export")
        sig = tf.saved_model.load(str(path)).signatures["serving_default"]
        rng = np.random.default_rng(0)
        one = tf.constant(rng.standard_normal((1, size, size)).astype(np.float32))
        many = tf.constant(rng.standard_normal((batch, size, size)).astype(np.float32))
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
    return {"model": label, "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            f"batch{batch}_rois_per_s": float(thr)}


def run(mode="quick"):
    rows, targets = [], []
    for label, arch, crf in MODELS[mode]:
        row = serve_stats(label, arch, crf, mode)
        rows.append(row)
        print("  serving", row, flush=True)
        if "reference" in label:
            continue
        targets.append(target(f"serving p50 latency, one 40x40 ROI, {label}", row["p50_ms"], 10, "ms", False))
        targets.append(target(f"serving throughput at batch 64, {label}", row["batch64_rois_per_s"], 500, "ROIs/s", True))
    return {"name": "serving", "rows": rows, "targets": targets}


if __name__ == "__main__":
    import sys

    res = run("quick" if "--quick" in sys.argv else "full")
    print_targets(res["targets"])
