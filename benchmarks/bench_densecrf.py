"""Side by side with the reference C++ dense CRF (pydensecrf2, permutohedral lattice, one image at a time).

The same problem (unary logits, normalised grey image, spatial + bilateral kernels with CRFRNN's default
bandwidths and weights, Potts compatibility, 10 mean-field iterations, no kernel normalisation) is solved
by pydensecrf2 and by CRFRNN (exact at 40x40, grid at every size); per-image time and the fraction of
pixels whose label agrees with pydensecrf2.
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.bench_crf import problem
from benchmarks.common import print_targets, target, timed

SIZES = {"tiny": (16,), "quick": (40, 256, 512), "full": (40, 256, 512)}
BATCH = {"tiny": 2, "quick": 32, "full": 32}  # images at 40x40 (ours batched); 1 image above


def densecrf_available():
    try:
        import pydensecrf.densecrf  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - report any import failure
        return f"pydensecrf2 not importable: {type(exc).__name__}: {exc}"
    return None


def densecrf_solve(unary, img, layer_cfg, iterations):
    """Marginals (H, W, 2) from pydensecrf2 for one image; unary logits (H, W, 2), img (H, W, 1)."""
    import pydensecrf.densecrf as dcrf

    h, w, c = unary.shape
    d = dcrf.DenseCRF(h * w, c)
    d.setUnaryEnergy(np.ascontiguousarray((-unary).reshape(-1, c).T.astype(np.float32)))
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    ts, ta, tb = layer_cfg["theta_spatial"], layer_cfg["theta_alpha"], layer_cfg["theta_beta"]
    pos = np.stack([yy.ravel() / ts, xx.ravel() / ts]).astype(np.float32)
    d.addPairwiseEnergy(np.ascontiguousarray(pos), compat=float(layer_cfg["spatial_weight"]),
                        kernel=dcrf.CONST_KERNEL, normalization=dcrf.NO_NORMALIZATION)
    feat = np.stack([yy.ravel() / ta, xx.ravel() / ta, img[..., 0].ravel() / tb]).astype(np.float32)
    d.addPairwiseEnergy(np.ascontiguousarray(feat), compat=float(layer_cfg["bilateral_weight"]),
                        kernel=dcrf.CONST_KERNEL, normalization=dcrf.NO_NORMALIZATION)
    q = np.array(d.inference(iterations)).reshape(c, h, w)
    return np.moveaxis(q, 0, -1)


def run(mode="quick", iterations=10):
    import tensorflow as tf

    from kerasseg.layers.crf import CRFRNN

    missing = densecrf_available()
    rows, targets = [], []
    for size in SIZES[mode]:
        batch = BATCH[mode] if size <= 40 else 1
        img, unary = problem(batch, size, seed=1)
        row = {"size": size, "images": batch}
        forms = [f for f, limit in (("exact", 4096), ("lowrank", 65536), ("grid", None))
                 if limit is None or size * size <= limit]
        ours = {}
        for form in forms:
            layer = CRFRNN(mode=form, iterations_test=iterations)
            cfg = layer.get_config()
            fn = tf.function(lambda u, x, layer=layer: layer([u, x], training=False))
            u, x = tf.constant(unary), tf.constant(img)
            t = min(timed(lambda: fn(u, x), 1 if mode == "tiny" else 3))
            ours[form] = fn(u, x).numpy()
            row[f"ours_{form}_ms_per_image"] = 1000 * t / batch
        if missing:
            row["densecrf"] = missing
        else:
            t0 = time.perf_counter()
            ref = np.stack([densecrf_solve(unary[i], img[i], cfg, iterations) for i in range(batch)])
            row["densecrf_ms_per_image"] = 1000 * (time.perf_counter() - t0) / batch
            for form, q in ours.items():
                row[f"label_agreement_{form}"] = float(((q[..., 1] > 0.5) == (ref[..., 1] > 0.5)).mean())
                row[f"marginal_mad_{form}"] = float(np.abs(q - ref).mean())
            best = min(row[f"ours_{f}_ms_per_image"] for f in forms)
            form = min(forms, key=lambda f: row[f"ours_{f}_ms_per_image"]) + (", batched" if batch > 1 else "")
            targets.append(target(f"CRF 10 it. per image at {size}x{size} ({form}) vs pydensecrf2",
                                  best, row["densecrf_ms_per_image"], "ms", higher_is_better=False))
        rows.append(row)
        print("  densecrf", row, flush=True)
    return {"name": "densecrf", "rows": rows, "targets": targets, "note": missing}


if __name__ == "__main__":
    import sys

    res = run("quick" if "--quick" in sys.argv else "full")
    print_targets(res["targets"])
