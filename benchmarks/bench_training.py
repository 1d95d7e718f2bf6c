"""Training throughput (ROIs/s, median epoch after the first), plain vs adversarial, batch 32, 40x40, CPU.

Models: unet, resunet, crunet (resunet + CRF), multifcn_crf; the CRF in the shipped configs' form
(``crf: {mode: auto}``: low-rank at 40x40); full mode adds crunet with the exact dense CRF for reference.
The step is kerasseg.training's
SegmentationModel (adversarial = FGM, two forward/backward passes). Data: 58 ROIs x 4 flips per
epoch (INbreast-sized) from an in-memory tf.data pipeline with cache + prefetch.
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.common import disc_rois, print_targets, target

MODELS = {"tiny": ("unet",), "quick": ("unet", "resunet", "crunet", "multifcn_crf"),
          "full": ("unet", "resunet", "crunet", "multifcn_crf", "crunet (exact CRF)")}
#: the CRF form of the shipped configs (configs/_crunet.yaml, zhu-*-crf.yaml)
CONFIG_CRF = {"mode": "auto"}


def build(label, size=40):
    """The network of a benchmark row: ``"<arch>"`` with the configs' CRF, or ``"<arch> (exact CRF)"``."""
    from kerasseg.models import build_model

    arch = label.split(" ")[0]
    if arch not in ("crunet", "crunet_nor", "fcn_crf", "multifcn_crf"):
        return build_model(arch, input_size=size)
    return build_model(arch, input_size=size, crf={"mode": "exact"} if "exact" in label else CONFIG_CRF)
EPOCHS = {"tiny": 2, "quick": 5, "full": 8}
N_ROIS = {"tiny": 8, "quick": 58, "full": 58}


class _EpochTimer:
    def __init__(self):
        import keras

        class CB(keras.callbacks.Callback):
            def __init__(cb):
                super().__init__()
                cb.times = []

            def on_epoch_begin(cb, epoch, logs=None):
                cb.t = time.perf_counter()

            def on_epoch_end(cb, epoch, logs=None):
                cb.times.append(time.perf_counter() - cb.t)

        self.cb = CB()


def data(n, size=40, seed=0):
    rng = np.random.default_rng(seed)
    masks, imgs = zip(*disc_rois(rng, n, size))
    return np.array(imgs, np.float32), np.array(masks, np.uint8)


def dataset(images, masks, batch):
    import tensorflow as tf

    x = np.concatenate([images, images[:, :, ::-1], images[:, ::-1], images[:, ::-1, ::-1]])[..., None]
    m = np.concatenate([masks, masks[:, :, ::-1], masks[:, ::-1], masks[:, ::-1, ::-1]])
    y = np.stack([1 - m, m], -1).astype(np.float32)
    return (tf.data.Dataset.from_tensor_slices((x, y)).cache().shuffle(len(x), seed=0)
            .batch(batch).prefetch(tf.data.AUTOTUNE)), len(x)


def throughput(arch, adversarial, mode="quick", batch=32, jit_compile=False):
    """(ROIs/s, s/step) in steady state (epochs after the first)."""
    import keras

    from kerasseg.training.adversarial import SegmentationModel

    keras.utils.set_random_seed(0)
    images, masks = data(N_ROIS[mode])
    ds, n = dataset(images, masks, batch)
    net = build(arch)
    lam = 0.67 if "crf" in net.output else 0.0
    model = SegmentationModel(net, lam=lam, adversarial=adversarial, epsilon=0.1)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit_compile)
    timer = _EpochTimer()
    model.fit(ds, epochs=EPOCHS[mode], verbose=0, callbacks=[timer.cb])
    # median of the epochs after the first (which traces and compiles): a shared VM's CPU time
    # varies by +-20 % from epoch to epoch, and one slow epoch should not move a ratio
    per_epoch = float(np.median(timer.cb.times[1:]))
    steps = -(-n // batch)
    return n / per_epoch, per_epoch / steps


def run(mode="quick"):
    rows, targets = [], []
    for arch in MODELS[mode]:
        row = {"model": arch}
        for adv in (False, True):
            rps, sps = throughput(arch, adv, mode)
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
