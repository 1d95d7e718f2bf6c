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

The whole-image rows (:mod:`kerasseg.models.whole_image`) time ``serving_boxes`` of the CRU-Net export
on one 3328 x 4084 float32 image (a full-field mammogram) with 1 and 8 boxes of 300-900 px, beside the
client-side alternative: cropping the same boxes by hand and sending each to ``serving_default``.
``python -m benchmarks.bench_serving --quick --boxes-only`` runs just those and writes
``benchmarks/results/serving-boxes.json`` and ``.md``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import print_targets, target

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"

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
#: whole-image rows: (image shape, box side range, box counts, timed calls) by mode
WHOLE_IMAGE = {"tiny": ((512, 600), (40, 200), (1, 2), 3),
               "quick": ((3328, 4084), (300, 900), (1, 8), 10),
               "full": ((3328, 4084), (300, 900), (1, 8), 30)}
WHOLE_IMAGE_ARCH = {"tiny": "unet", "quick": "crunet", "full": "crunet"}


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


def mammogram_boxes(rng, shape, n, sides):
    """A raw whole image (noise around 1000 with a bright disc in each box) and ``n`` int32 boxes
    (y0, x0, y1, x1) with sides drawn uniformly from ``sides``."""
    h, w = shape
    image = rng.normal(1000.0, 60.0, size=shape).astype(np.float32)
    boxes = []
    for _ in range(n):
        bh, bw = (int(v) for v in rng.integers(sides[0], sides[1] + 1, 2))
        y0, x0 = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
        boxes.append((y0, x0, y0 + bh, x0 + bw))
        cy, cx, r = y0 + bh // 2, x0 + bw // 2, min(bh, bw) // 4
        yy, xx = np.ogrid[y0:y0 + bh, x0:x0 + bw]
        image[y0:y0 + bh, x0:x0 + bw] += 300.0 * (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r)
    return image, np.array(boxes, np.int32)


def whole_image_rows(mode="quick"):
    """p50/p99 of ``serving_boxes`` (whole image + N boxes, one request) and of the N hand crops sent
    to ``serving_default`` one by one, through the loaded export of one segmenter."""
    import tensorflow as tf

    from kerasseg.export import export_model

    shape, sides, counts, calls = WHOLE_IMAGE[mode]
    arch = WHOLE_IMAGE_ARCH[mode]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = export_model(segmenter(arch, None, _CRUNET_PRE), f"{tmp}/export")
        sigs = tf.saved_model.load(str(path)).signatures
        boxes_sig, crop_sig = sigs["serving_boxes"], sigs["serving_default"]
        rng = np.random.default_rng(0)
        for n in counts:
            image, boxes = mammogram_boxes(rng, shape, n, sides)

            def whole():  # the request as TF Serving gets it: the image is converted on every call
                return boxes_sig(image=tf.constant(image), boxes=tf.constant(boxes))["image_mask"].numpy()

            def crops():
                for y0, x0, y1, x1 in boxes:
                    crop_sig(image=tf.constant(image[None, y0:y1, x0:x1]))["mask"].numpy()

            lat = {}
            for name, fn in (("boxes", whole), ("crops", crops)):
                for _ in range(2):
                    fn()
                t = []
                for _ in range(calls):
                    t0 = time.perf_counter()
                    fn()
                    t.append(time.perf_counter() - t0)
                lat[name] = np.array(t) * 1000
            sides_hw = boxes[:, 2:] - boxes[:, :2]
            rows.append({"model": f"{arch} serving_boxes, {shape[0]}x{shape[1]} image, {n} box(es)",
                         "boxes": n, "box_sides_px": f"{int(sides_hw.min())}-{int(sides_hw.max())}",
                         "calls": calls, "p50_ms": float(np.percentile(lat["boxes"], 50)),
                         "p99_ms": float(np.percentile(lat["boxes"], 99)),
                         "hand_crops_serving_default_p50_ms": float(np.percentile(lat["crops"], 50))})
    return rows


def run(mode="quick", ensemble_only=False, boxes_only=False):
    rows, targets = [], []
    if boxes_only:
        rows = whole_image_rows(mode)
        for row in rows:
            print("  serving", row, flush=True)
        return {"name": "serving", "rows": rows, "targets": []}
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
    if not ensemble_only:
        for row in whole_image_rows(mode):
            print("  serving", row, flush=True)
            rows.append(row)
    return {"name": "serving", "rows": rows, "targets": targets}


def write_boxes_results(res, mode) -> None:
    """``benchmarks/results/serving-boxes.json`` and ``.md`` (the machine, its load, the rows)."""
    import json

    from benchmarks.common import atomic_write, machine, markdown_table

    res = {**res, "machine": machine(), "mode": mode, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    atomic_write(RESULTS / "serving-boxes.json", json.dumps(res, indent=1, default=str))
    m = res["machine"]
    md = (f"serving_boxes ({mode} mode, {res['finished']}, `python -m benchmarks.bench_serving --{mode} "
          f"--boxes-only`): {m['cpu']}, {m['cores']} CPU cores, TensorFlow {m['tensorflow']}, 1-min load "
          f"average at start {m['load_avg_1min_at_start']}.\n\n" + markdown_table(res["rows"]))
    atomic_write(RESULTS / "serving-boxes.md", md)


if __name__ == "__main__":
    import sys

    mode = "tiny" if "--tiny" in sys.argv else "quick" if "--quick" in sys.argv else "full"
    res = run(mode, ensemble_only="--ensemble-only" in sys.argv, boxes_only="--boxes-only" in sys.argv)
    print_targets(res["targets"])
    if "--boxes-only" in sys.argv and mode != "tiny":
        write_boxes_results(res, mode)
