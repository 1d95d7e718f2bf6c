"""Model FLOPs per ROI (TF profiler on the frozen forward graph) vs the measured matmul peak.

Utilisation = (3 x forward FLOPs per ROI x ROIs per second in training) / matmul peak, the usual
estimate that a training step costs three forward passes (forward, and two for the backward).
The profiler counts convolutions and matmuls (the bulk); ops it has no statistics for (einsum
inside the CRF, segment sums) are not counted, so the CRF models' utilisation is a lower bound.
"""

from __future__ import annotations

import time

from benchmarks.common import print_targets, target

MODELS = {"tiny": ("unet",), "quick": ("unet", "resunet", "crunet", "multifcn_crf"),
          "full": ("unet", "resunet", "crunet", "multifcn_crf")}


def matmul_peak_gflops(n=2048, repeats=5):
    import tensorflow as tf

    a = tf.random.normal([n, n])
    b = tf.random.normal([n, n])
    f = tf.function(lambda a, b: tf.matmul(a, b))
    f(a, b).numpy()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        f(a, b).numpy()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def forward_flops(model, size=40):
    """Float operations of one forward pass for one ROI (tf.compat.v1 profiler, frozen graph)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    conc = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec([1, size, size, 1], tf.float32))
    frozen = convert_variables_to_constants_v2(conc)
    opts = tf.compat.v1.profiler.ProfileOptionBuilder(
        tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()).with_empty_output().build()
    prof = tf.compat.v1.profiler.profile(graph=frozen.graph, run_meta=tf.compat.v1.RunMetadata(),
                                         cmd="op", options=opts)
    return int(prof.total_float_ops)


def run(mode="quick", training_rows=None):
    from benchmarks.bench_training import build

    peak = matmul_peak_gflops(1024 if mode == "tiny" else 2048, 2 if mode == "tiny" else 5)
    steps = {r["model"]: r for r in (training_rows or []) if "plain_rois_per_s" in r}
    rows, targets = [], []
    for arch in MODELS[mode]:
        flops = forward_flops(build(arch))  # the configs' CRF form, as in bench_training
        if arch in steps:
            rps = steps[arch]["plain_rois_per_s"]
        else:
            from benchmarks.bench_training import throughput

            rps, _ = throughput(arch, False, mode)
        achieved = 3 * flops * rps / 1e9
        util = 100 * achieved / peak
        row = {"model": arch, "fwd_mflops_per_roi": flops / 1e6, "train_rois_per_s": rps,
               "achieved_gflops": achieved, "matmul_peak_gflops": peak, "utilisation_pct": util}
        rows.append(row)
        print("  flops", row, flush=True)
        targets.append(target(f"training step utilisation of matmul peak, {arch}", util, 20, "%", True))
    return {"name": "flops", "rows": rows, "targets": targets}


if __name__ == "__main__":
    import sys

    res = run("quick" if "--quick" in sys.argv else "full")
    print_targets(res["targets"])
