"""Post-processing cost (:mod:`kerasseg.layers.postprocessing`): largest connected component and hole
filling in core TF (what an exported ensemble runs in its graph), on masses and on the worst shapes
for label propagation (a 1-px serpentine and a spiral, whose geodesic length is about their area),
at the model size (40), a large ROI (256) and a full-resolution crop (900), beside
``scipy.ndimage`` on the same masks in the same process (a CPU reference, not a target) and checked
equal to it.

``python -m benchmarks.bench_postprocessing [--quick]``; also ``benchmarks.run_all --only postprocessing``.
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import timed

SIZES = {"tiny": (24,), "quick": (40, 256, 900), "full": (40, 256, 900)}
REPEATS = {"tiny": 1, "quick": 3, "full": 7}


def shapes(n: int) -> dict:
    """``disk`` (a mass), ``snake`` (1-px serpentine, every other row), ``spiral`` (1-px square spiral)."""
    yy, xx = np.mgrid[:n, :n]
    disk = ((yy - n / 2) ** 2 + (xx - n / 2) ** 2 < (0.4 * n) ** 2).astype(np.uint8)
    disk[n // 2, n // 2] = 0  # one hole for fill_holes to fill
    snake = np.zeros((n, n), np.uint8)
    snake[::2, 1:n - 1] = 1
    for r in range(1, n, 2):
        snake[r, n - 2 if (r // 2) % 2 == 0 else 1] = 1
    spiral = np.zeros((n, n), np.uint8)
    top, left, bottom, right = 0, 0, n - 1, n - 1
    while bottom - top > 2 and right - left > 2:
        spiral[top, left:right + 1] = 1
        spiral[top:bottom + 1, right] = 1
        spiral[bottom, left + 2:right + 1] = 1
        spiral[top + 2:bottom + 1, left + 2] = 1
        top, left, bottom, right = top + 2, left + 2, bottom - 2, right - 2
    return {"disk": disk, "snake": snake, "spiral": spiral}


def _scipy(mask):
    from scipy import ndimage as ndi

    lab, n = ndi.label(mask, np.ones((3, 3)))
    lc = np.zeros_like(mask) if n == 0 else (lab == np.argmax(np.bincount(lab.ravel())[1:]) + 1)
    return lc.astype(np.uint8), ndi.binary_fill_holes(mask).astype(np.uint8)


def run(mode="quick"):
    import tensorflow as tf

    from kerasseg.layers.postprocessing import fill_holes, largest_component

    spec = [tf.TensorSpec([None, None, None], tf.bool)]
    lc_fn = tf.function(largest_component, input_signature=spec)
    fh_fn = tf.function(fill_holes, input_signature=spec)
    rows = []
    for n in SIZES[mode]:
        for name, mask in shapes(n).items():
            x = tf.constant(mask[None].astype(bool))
            ref_lc, ref_fh = _scipy(mask)
            lc, fh = lc_fn(x).numpy()[0], fh_fn(x).numpy()[0]
            t_lc = timed(lambda: lc_fn(x), REPEATS[mode])
            t_fh = timed(lambda: fh_fn(x), REPEATS[mode])
            t_ref = timed(lambda: _scipy(mask), REPEATS[mode])
            rows.append({"shape": name, "side_px": n,
                         "largest_component_ms": 1e3 * float(np.median(t_lc)),
                         "fill_holes_ms": 1e3 * float(np.median(t_fh)),
                         "scipy_both_ms": 1e3 * float(np.median(t_ref)),
                         "equal_to_scipy": bool(np.array_equal(lc, ref_lc) and np.array_equal(fh, ref_fh))})
    return {"name": "postprocessing", "rows": rows, "targets": [],
            "note": "one mask per call, tf.function with unknown size; scipy.ndimage is the CPU reference"}


if __name__ == "__main__":
    import sys

    from benchmarks.common import markdown_table

    print(markdown_table(run("quick" if "--quick" in sys.argv else "full")["rows"]))
