"""Training throughput (ROIs/s, median step after a warm-up epoch), plain vs adversarial, batch 32, 40x40, CPU.

Models: unet, resunet, crunet (resunet + CRF), multifcn_crf; the CRF in the shipped configs' form
(``crf: {mode: auto}``: low-rank at 40x40); full mode adds crunet with the exact dense CRF for reference.
The step is kerasseg.training's
SegmentationModel (adversarial = FGM, two forward/backward passes) through ``train_on_batch``.
Data: 58 ROIs x 4 flips per epoch (INbreast-sized), in memory, full batches.
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.common import disc_rois, print_targets, target

MODELS = {"tiny": ("unet",), "quick": ("unet", "resunet", "crunet", "multifcn_crf"),
          "full": ("unet", "resunet", "crunet", "multifcn_crf", "crunet (exact CRF)")}


def build(label, size=40):
    """The network of a benchmark row: ``"<arch>"`` (composite names carry the configs' CRF form,
    ``kerasseg.models.registry.COMPOSITE_CRF``) or ``"<arch> (exact CRF)"``."""
    from kerasseg.models import build_model

    arch = label.split(" ")[0]
    return build_model(arch, input_size=size, crf={"mode": "exact"} if "exact CRF" in label else None)


EPOCHS = {"tiny": 2, "quick": 5, "full": 8}
N_ROIS = {"tiny": 8, "quick": 58, "full": 58}


def data(n, size=40, seed=0):
    rng = np.random.default_rng(seed)
    masks, imgs = zip(*disc_rois(rng, n, size))
    return np.array(imgs, np.float32), np.array(masks, np.uint8)


def flipped(images, masks):
    """The 4x flip augmentation of both papers: (x (4N, H, W, 1) float32, y one-hot (4N, H, W, 2))."""
    x = np.concatenate([images, images[:, :, ::-1], images[:, ::-1], images[:, ::-1, ::-1]])[..., None]
    m = np.concatenate([masks, masks[:, :, ::-1], masks[:, ::-1], masks[:, ::-1, ::-1]])
    return x.astype(np.float32), np.stack([1 - m, m], -1).astype(np.float32)


def _training_model(arch, adversarial, jit_compile=False):
    import keras

    from kerasseg.training.segmentation_model import SegmentationModel

    net = build(arch)
    lam = 0.67 if "crf" in net.output else 0.0
    model = SegmentationModel(net, lam=lam, adversarial=adversarial, epsilon=0.1)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit_compile)
    return model


def throughput_runs(arch, variants, mode="quick", batch=32):
    """{variant: (ROIs/s, s/step)} for (adversarial, jit_compile) ``variants`` of one model.

    Each variant first runs one epoch (58 ROIs x 4 flips in full batches of ``batch``), which traces
    the step and warms the kernels; then ``EPOCHS[mode] - 1`` more epochs are timed step by step
    with ``train_on_batch`` (the same compiled train step as ``fit``), the variants interleaved
    step by step so that the CPU time a shared VM gives (it drifts by +-20 % within a minute)
    affects them alike. Each variant's step time is the median of its timed steps.
    """
    import keras

    keras.utils.set_random_seed(0)
    images, masks = data(N_ROIS[mode])
    x, y = flipped(images, masks)
    order = np.random.default_rng(0).permutation(len(x))
    batches = [(x[order[i:i + batch]], y[order[i:i + batch]]) for i in range(0, len(x) - batch + 1, batch)]
    models = {v: _training_model(arch, *v) for v in variants}
    for model in models.values():  # warm-up epoch: traces the step
        for xb, yb in batches:
            model.train_on_batch(xb, yb)
    times = {v: [] for v in variants}
    for _ in range(EPOCHS[mode] - 1):
        for xb, yb in batches:
            for v, model in models.items():
                t = time.perf_counter()
                model.train_on_batch(xb, yb)  # returns host floats: the step has finished
                times[v].append(time.perf_counter() - t)
    out = {}
    for v, ts in times.items():
        step = float(np.median(ts))
        out[v] = (batch / step, step)
    return out


def throughput(arch, adversarial, mode="quick", batch=32, jit_compile=False):
    """(ROIs/s, s/step) in steady state (median epoch after the first) of one variant."""
    return throughput_runs(arch, [(adversarial, jit_compile)], mode, batch)[(adversarial, jit_compile)]


def run(mode="quick"):
    rows, targets = [], []
    for arch in MODELS[mode]:
        row = {"model": arch}
        runs = throughput_runs(arch, [(False, False), (True, False)], mode)
        for adv in (False, True):
            rps, sps = runs[(adv, False)]
            key = "adversarial" if adv else "plain"
            row[f"{key}_rois_per_s"] = rps
            row[f"{key}_ms_per_step"] = 1000 * sps
        row["adv_plain_step_ratio"] = row["adversarial_ms_per_step"] / row["plain_ms_per_step"]
        targets.append(target(f"adversarial/plain step time, {arch}", row["adv_plain_step_ratio"], 2.2, "x",
                              higher_is_better=False))
        rows.append(row)
        print("  training", row, flush=True)
    if mode != "tiny":  # lever: XLA on the plain step of the fastest model
        for arch in ("unet", "crunet"):
            try:
                rps, sps = throughput(arch, False, mode, jit_compile=True)
                rows.append({"model": f"{arch} (jit_compile)", "plain_rois_per_s": rps, "plain_ms_per_step": 1000 * sps})
            except Exception as exc:  # noqa: BLE001 - a lever that fails is reported, not fatal
                rows.append({"model": f"{arch} (jit_compile)", "error": f"{type(exc).__name__}: {str(exc)[:120]}"})
            print("  training", rows[-1], flush=True)
    return {"name": "training", "rows": rows, "targets": targets}


if __name__ == "__main__":
    import sys

    res = run("quick" if "--quick" in sys.argv else "full")
    print_targets(res["targets"])
