"""CRF layer forward and forward+backward time vs ROI size and iterations, exact, lowrank and grid, with peak memory.

Each (mode, size) case runs in a fresh subprocess (``python -m benchmarks.bench_crf --case MODE SIZE ...``)
so its peak RSS (VmHWM, fresh at exec) minus the RSS before the CRF work is the CRF's own peak memory.
"""

from __future__ import annotations

import argparse
import json
import sys

from benchmarks.common import disc_rois, maxrss_mb, print_targets, run_json_subprocess, target, timed

SIZES = {"tiny": (16,), "quick": (40, 80, 128, 256, 512), "full": (40, 80, 128, 256, 512)}
ITERATIONS = {"tiny": (2,), "quick": (5, 10), "full": (5, 10)}
REPEATS = {"tiny": 1, "quick": 2, "full": 5}
EXACT_MAX_PIXELS = 6400  # up to 80x80 (164 MB per kernel and image); the layer default refuses above 64x64
BATCH_AT_40 = 32  # "batched" per-image time at the papers' ROI size


def batch_for(size, mode_name):
    if mode_name == "tiny":
        return 2
    return BATCH_AT_40 if size <= 40 else 1


def problem(batch, size, seed=0):
    """A disc-shaped mass with noisy unaries on a normalised image (same generator as bench_densecrf)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    imgs, unary = [], []
    for m, im in disc_rois(rng, batch, size):
        imgs.append(im)
        logit = 2 * (m - 0.5) + 1.2 * rng.standard_normal((size, size))
        unary.append(np.stack([-logit, logit], -1) / 2)
    img = np.array(imgs, np.float32)[..., None]
    img = (img - img.mean()) / img.std()
    return img.astype(np.float32), np.array(unary, np.float32)


def run_case(mode, size, iterations, repeats, batch, jit=False):
    """Times (per image, seconds) and peak-RSS delta of one (mode, size) case, in this process."""
    import tensorflow as tf

    from kerasseg.layers.crf import CRFRNN

    img, unary = problem(batch, size)
    x, u = tf.constant(img), tf.constant(unary)
    base = maxrss_mb()
    out = {"mode": mode, "size": size, "batch": batch}
    if mode == "exact" and size * size > EXACT_MAX_PIXELS:
        gb = 4 * (size * size) ** 2 / 1e9
        out["refused"] = f"exact form needs {gb:.1f} GB per kernel and image"
        return out
    for it in iterations:
        layer = CRFRNN(mode=mode, iterations_test=it, iterations_train=it, max_dense_pixels=EXACT_MAX_PIXELS)
        layer([u[:1], x[:1]])  # build

        @tf.function(jit_compile=jit)
        def fwd(u, x):
            return layer([u, x], training=False)

        @tf.function(jit_compile=jit)
        def fwd_bwd(u, x):
            with tf.GradientTape() as tape:
                tape.watch([u, x])
                loss = tf.reduce_sum(layer([u, x], training=True)[..., 1])
            return tape.gradient(loss, [u, x] + list(layer.trainable_weights))

        tf_ = timed(lambda: fwd(u, x), repeats)
        tb_ = timed(lambda: fwd_bwd(u, x), repeats)
        out[f"fwd_ms_per_image_it{it}"] = 1000 * min(tf_) / batch
        out[f"fwd_bwd_ms_per_image_it{it}"] = 1000 * min(tb_) / batch
    out["peak_rss_delta_mb"] = maxrss_mb() - base
    return out


def crf_overhead(mode="quick", batch=32):
    """Forward time of CRU-Net (resunet + CRF) vs the resunet alone, batch 32, 40x40, per CRF form."""
    import numpy as np
    import tensorflow as tf

    from kerasseg.models import build_model

    batch = 2 if mode == "tiny" else batch
    x = tf.constant(np.random.default_rng(0).standard_normal((batch, 40, 40, 1)).astype(np.float32))
    repeats = 1 if mode == "tiny" else 5
    times = {}
    forms = ("lowrank", "grid", "exact")
    for label, crf in [("resunet", None)] + [(f"crunet {f}", {"mode": f}) for f in forms]:
        model = build_model("resunet", input_size=40, crf=crf)
        fn = tf.function(lambda x, model=model: model(x, training=False))
        times[label] = min(timed(lambda: fn(x), repeats, warmup=2)) / batch
    rows, targets = [], []
    for form in forms:
        over = 100 * (times[f"crunet {form}"] / times["resunet"] - 1)
        rows.append({"mode": f"crunet forward, CRF {form}", "size": 40, "batch": batch,
                     "resunet_ms_per_image": 1000 * times["resunet"],
                     "crunet_ms_per_image": 1000 * times[f"crunet {form}"], "crf_overhead_pct": over})
        targets.append(target(f"CRF ({form}, 10 it.) overhead on a CRU-Net forward pass at 40x40", over, 30, "%",
                              higher_is_better=False))
    return rows, targets


def run(mode="quick", inprocess=None):
    inprocess = (mode == "tiny") if inprocess is None else inprocess
    rows = []
    for crf_mode in ("exact", "lowrank", "grid"):
        for size in SIZES[mode]:
            batch = batch_for(size, mode)
            if inprocess:
                row = run_case(crf_mode, size, ITERATIONS[mode], REPEATS[mode], batch)
            else:
                args = ["benchmarks.bench_crf", "--case", crf_mode, str(size), "--batch", str(batch),
                        "--repeats", str(REPEATS[mode]), "--iterations", *map(str, ITERATIONS[mode])]
                row = run_json_subprocess(args, timeout=1800)
                row.setdefault("mode", crf_mode)
                row.setdefault("size", size)
            rows.append(row)
            print("  crf", json.dumps(row), flush=True)
    over_rows, targets = crf_overhead(mode)
    for row in over_rows:
        print("  crf", json.dumps(row), flush=True)
    return {"name": "crf", "rows": rows + over_rows, "targets": targets}


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--case", nargs=2, metavar=("MODE", "SIZE"))
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--iterations", type=int, nargs="+", default=[5, 10])
    p.add_argument("--quick", action="store_true")
    a = p.parse_args(argv)
    if a.case:
        print(json.dumps(run_case(a.case[0], int(a.case[1]), a.iterations, a.repeats, a.batch)))
        return
    res = run("quick" if a.quick else "full")
    print_targets(res["targets"])


if __name__ == "__main__":
    main(sys.argv[1:])
