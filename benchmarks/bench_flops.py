"""Model FLOPs per ROI (counted from the layers' shapes) vs the measured matmul peak.

Utilisation = (3 x forward FLOPs per ROI x ROIs per second in training) / matmul peak, the usual
estimate that a training step costs three forward passes (forward, and two for the backward).

FLOPs are counted, not profiled: 2 x multiply-adds of every convolution from its input/output shapes
(a transposed convolution costs input positions x kernel x channels; TF's profiler charges it per
output position, 1600x too much for the 1x1 -> 40x40 upsampling of Zhu's FCNs), plus the matrix
products of the CRF's mean field in the form the model runs (``crf_flops``), with the training
iteration count. TF's profiler also misses the CRF's products (their shapes are dynamic).
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


def conv_flops(model) -> int:
    """2 x multiply-adds of every Conv2D / Conv2DTranspose / Dense of ``model`` for one input."""
    import keras

    total = 0
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.Conv2DTranspose):
            _, h, w, cin = layer.input.shape
            kh, kw = layer.kernel_size
            total += 2 * h * w * kh * kw * cin * layer.filters
        elif isinstance(layer, keras.layers.Conv2D):
            _, h, w, cout = layer.output.shape
            kh, kw = layer.kernel_size
            total += 2 * h * w * kh * kw * (layer.input.shape[-1] // layer.groups) * cout
        elif isinstance(layer, keras.layers.Dense):
            positions = 1
            for d in layer.input.shape[1:-1]:
                positions *= d
            total += 2 * positions * layer.input.shape[-1] * layer.units
    return int(total)


def crf_flops(layer, h, w, iterations) -> int | None:
    """Matrix-product FLOPs of a two-class CRFRNN mean field on one h x w ROI (None: grid form)."""
    from kerasseg.layers.crf import lowrank as crf_lowrank

    p = h * w
    backend = layer._backend_for(p)
    if backend == "exact":
        return 2 * p * p * 2 * len(layer.kernels) * iterations  # (P, P) x (P, 2) per kernel
    if backend != "lowrank":
        return None
    k = layer.lowrank_options.range_anchors  # the layer's own settings, as saved in its config
    rtol = layer.lowrank_options.spatial_rtol

    def separable(theta, maps):  # compress + expand, or the full (n, n) products
        ry, rx = crf_lowrank.spatial_rank(h, theta, rtol), crf_lowrank.spatial_rank(w, theta, rtol)
        if ry == h and rx == w:
            return maps * (2 * h * w * w + 2 * w * h * h)
        return maps * 2 * (2 * h * w * rx + 2 * rx * h * ry)

    per_iter = 0
    for kernel in layer.kernels:
        if kernel == "spatial":
            per_iter += separable(layer.theta_spatial, 1)
        elif kernel == "bilateral":
            ry = crf_lowrank.spatial_rank(h, layer.theta_alpha, rtol)
            rx = crf_lowrank.spatial_rank(w, layer.theta_alpha, rtol)
            per_iter += separable(layer.theta_alpha, k) + 2 * k * k * rx * ry + 3 * k * p
        else:  # intensity: sums over pixels, then back
            per_iter += 4 * k * p
    return int(per_iter * iterations)


def forward_flops(model, size=40, training=True) -> int:
    """FLOPs of one forward pass for one ROI: the network's layers plus the CRF's mean field."""
    from kerasseg.layers.crf import CRFRNN

    total = conv_flops(model)
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, CRFRNN):
            its = layer.iterations_train if training else layer.iterations_test
            total += crf_flops(layer, size, size, its) or 0
    return int(total)


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
