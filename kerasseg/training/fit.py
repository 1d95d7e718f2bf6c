"""``fit``: train one config on one dataset into a crash-safe run directory (Contract 4).

Run directory layout::

    config.yaml      resolved config (dataset overrides applied, epochs/seed as used)
    model.keras      the segmenter (raw ROI -> preprocessing fitted on the TRAIN split -> network,
                     dict outputs) of the best VALIDATION-Dice epoch
    history.csv      one row per completed epoch (1-based), loss/clean_loss/adv_loss/dice, val_*
    run.json         versions, seed, data hash, best epoch, val/test Dice, status
    tb/              TensorBoard logs
    backup/          BackupAndRestore state; present only while a run is unfinished

Re-running the same command on an unfinished run directory resumes from the last completed
epoch (also after SIGKILL); Ctrl-C stops after the current batch, keeps the backup and writes
``run.json`` with ``status: interrupted``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from kerasseg.errors import KerassegError, warn


@dataclass
class RunResult:
    """What :func:`fit` returns (also written to ``run.json``)."""

    run_dir: str
    status: str               # "finished" | "interrupted"
    epochs_run: int
    best_epoch: int | None
    val_dice: float | None
    test_dice: float | None
    seconds: float
    otsu_test_dice: float | None = None    # per-ROI Otsu thresholding on the same test ROIs
    prior_test_dice: float | None = None   # mean training mask > 0.5 on the same test ROIs

    def summary(self) -> str:
        def f(v):
            return "n/a" if v is None else f"{v:.4f}"
        text = (f"{self.status}: best epoch {self.best_epoch} of {self.epochs_run}, "
                f"val Dice {f(self.val_dice)}, test Dice {f(self.test_dice)}")
        if self.otsu_test_dice is not None:
            text += (f" (untrained baselines on test: Otsu threshold {f(self.otsu_test_dice)}, "
                     f"mean training mask {f(self.prior_test_dice)})")
        return text + f", run dir {self.run_dir}"


def _arch_kwargs(cfg: dict) -> dict:
    m = cfg["model"]
    if m["arch"] in ("unet", "resunet"):
        return {"kernel_size": m["kernel_size"], "filters": tuple(m["filters"]), "dropout": m["dropout"]}
    if m["arch"] == "fcn":
        return {"fcn_variant": m["fcn_variant"]}
    return {}


def _optimizer(cfg: dict):
    import keras

    t = cfg["train"]
    cls = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD,
           "rmsprop": keras.optimizers.RMSprop}[t["optimizer"]]
    return cls(learning_rate=t["learning_rate"])


def build_training_model(cfg: dict, input_size: int, prior=None):
    """The compiled :class:`SegmentationModel` for a resolved config (call inside a strategy scope)."""
    from kerasseg.models import build_model
    from kerasseg.training.adversarial import SegmentationModel

    net = build_model(cfg["model"]["arch"], input_size=input_size, crf=cfg["crf"],
                      prior=prior if cfg["model"]["position_prior"] else None, **_arch_kwargs(cfg))
    model = SegmentationModel(net, lam=cfg["loss"]["lambda"], l2=cfg["loss"]["l2"],
                              adversarial=cfg["train"]["adversarial"],
                              epsilon=cfg["train"]["epsilon"])
    model.compile(optimizer=_optimizer(cfg))
    model(np.zeros((1, input_size, input_size, 1), np.float32))  # build (BackupAndRestore needs it)
    return model


def _versions() -> dict:
    import keras
    import tensorflow as tf

    from kerasseg import __version__, onednn_enabled

    return {"kerasseg": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "python": platform.python_version(), "onednn": onednn_enabled()}


def _dice(model, images, masks, batch_size=64) -> float:
    """Mean per-image Dice of a segmenter on raw ROIs: the one inference graph, threshold and Dice."""
    from kerasseg.models.segmenter import predict_probability
    from kerasseg.training.metrics import binarize, mean_dice

    return mean_dice(binarize(predict_probability(model, images, batch_size)), masks)


def _strategy_name(strategy) -> str:
    """The public ``tf.distribute`` name (MWMS's class is called CollectiveAllReduceStrategy)."""
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "MultiWorkerMirroredStrategy"
    return type(strategy).__name__


def _is_chief() -> bool:
    tf_config = os.environ.get("TF_CONFIG")
    if not tf_config:
        return True
    try:
        task = json.loads(tf_config).get("task", {})
    except ValueError:
        return True
    return task.get("type", "worker") in ("chief",) or (
        task.get("type", "worker") == "worker" and int(task.get("index", 0)) == 0)


def fit(config="crunet-l067", data=None, out_dir=None, epochs=None, seed=None, devices=None,
        dataset=None, verbose="auto") -> RunResult:
    """Train ``config`` on ``data`` (None/"phantom" = built-in phantom, else a .npz) into ``out_dir``.

    ``epochs``/``seed`` override the config; ``devices`` picks the replicas
    (:func:`~kerasseg.training.strategy.get_strategy`); ``dataset`` (inbreast|ddsm|phantom)
    selects the config's ``datasets`` section (default: from the data file's ``source``).
    """
    from kerasseg.training.strategy import get_strategy

    strategy = get_strategy(devices)  # before any other TensorFlow work (logical CPUs)

    import keras
    import tensorflow as tf

    from kerasseg.config import apply_dataset, dataset_key, resolve_config, save_config
    from kerasseg.data.dataset import load_data
    from kerasseg.data.pipeline import make_tf_dataset
    from kerasseg.layers.preprocessing import ImagePreprocessor
    from kerasseg.models.segmenter import build_segmenter
    from kerasseg.layers.prior import prior_from_masks
    from kerasseg.training.callbacks import (BestModel, HistoryCSV, ScalarLogger, StopOnNonFinite,
                                             atomic_write_text)

    t0 = time.time()
    ds = load_data(data)
    cfg = resolve_config(config)
    key = dataset or dataset_key(ds.source)
    cfg = apply_dataset(cfg, key)
    if epochs is not None:
        if isinstance(epochs, bool) or int(epochs) != epochs or epochs < 1:
            raise KerassegError(f"--epochs must be a positive integer, got {epochs!r}")
        cfg["train"]["epochs"] = int(epochs)
    if seed is not None:
        if isinstance(seed, bool) or int(seed) != seed or seed < 0:
            raise KerassegError(f"--seed must be a non-negative integer, got {seed!r}")
        cfg["train"]["seed"] = int(seed)
    seed = cfg["train"]["seed"]
    if ds.size != cfg["data"]["size"]:
        warn(f"data ROIs are {ds.size}x{ds.size}, config data.size is {cfg['data']['size']}; "
             f"using {ds.size}")
        cfg["data"]["size"] = ds.size
    counts = ds.counts()
    for split in ("train", "val"):
        if counts[split] == 0:
            raise KerassegError(f"the data has no {split!r} ROIs (counts {counts}); training needs "
                                "train and val splits (best model chosen on val)", data)

    chief = _is_chief()
    out = Path(out_dir or f"runs/{cfg['name']}")
    if not chief:
        out = out / f".worker-{json.loads(os.environ['TF_CONFIG'])['task']['index']}"
    from kerasseg.fileio import output_dir

    output_dir(out, "run folder")
    run_json = out / "run.json"
    backup = out / "backup"
    resuming = backup.is_dir()
    if run_json.is_file() and not resuming:
        try:
            status = json.loads(run_json.read_text()).get("status")
        except ValueError:
            status = None
        if status == "finished":
            raise KerassegError("holds a finished run; choose another --out or delete it", out)
    cfg_text_path = out / "config.yaml"
    if resuming and cfg_text_path.is_file():
        from kerasseg.config import to_yaml
        if cfg_text_path.read_text() != to_yaml(cfg):
            raise KerassegError("holds an unfinished run of a different config/options; "
                                "use the same command to resume or another --out", out)
    if resuming and run_json.is_file():
        try:
            recorded = json.loads(run_json.read_text()).get("data_hash")
        except (OSError, ValueError):
            recorded = None
        if recorded and recorded != ds.data_hash():
            raise KerassegError(f"holds an unfinished run on other data (data hash {recorded}, this data "
                                f"{ds.data_hash()}); resume with the same --data or use another --out", out)
    _repair_backup(backup)

    keras.utils.set_random_seed(seed)
    jit = cfg["train"]["jit_compile"]
    if not jit:  # Keras disables XLA under op determinism: one or the other
        tf.config.experimental.enable_op_determinism()

    train, val = ds.subset("train"), ds.subset("val")
    # the preprocessing layers that travel inside the saved model, fitted on the TRAIN split;
    # the network trains on their output (computed once: the flips come after it, as before)
    pre = ImagePreprocessor(ds.size, enhancement=cfg["data"]["enhancement"],
                            normalization=cfg["data"]["normalization"], name="preprocessor")
    x_tr, x_val = pre.adapt_transform(train.images)[..., 0], pre.transform(val.images)[..., 0]
    prior = prior_from_masks(train.masks) if cfg["model"]["position_prior"] else None

    replicas = strategy.num_replicas_in_sync
    bs = cfg["train"]["batch_size"]
    if bs % replicas:
        new = int(math.ceil(bs / replicas) * replicas)
        warn(f"batch_size {bs} is not a multiple of the {replicas} replicas; using {new}")
        bs = new
    train_ds = make_tf_dataset(x_tr, train.masks, bs, training=True, seed=seed,
                               flips=cfg["data"]["flips"])
    val_ds = make_tf_dataset(x_val, val.masks, bs, training=False)

    save_config(cfg, cfg_text_path)
    if not resuming or not run_json.is_file():  # what a resume is checked against
        atomic_write_text(run_json, json.dumps({"status": "running", "config": cfg["name"],
                                                "data": data or "phantom", "data_hash": ds.data_hash()}))
    with strategy.scope():
        model = build_training_model(cfg, ds.size, prior)
    segmenter = build_segmenter(model.net, pre, name=cfg["name"])  # shares the network's weights
    if jit:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.jit_compile = True
        if not model.jit_compile:
            warn("train.jit_compile: XLA is off for this run (op determinism was already "
                 "enabled in this process by an earlier run, or a layer does not support XLA)")

    best = BestModel(segmenter, out / "model.keras", out / "best_state.json",
                     monitor="val_dice", patience=cfg["train"]["patience"])
    callbacks = [
        StopOnNonFinite(),
        HistoryCSV(out / "history.csv"),
        best,
        ScalarLogger(out / "tb"),
        keras.callbacks.BackupAndRestore(str(backup), save_freq="epoch", delete_checkpoint=True,
                                         double_checkpoint=True),
    ]
    meta = {"config": cfg["name"], "dataset": key, "data": data or "phantom",
            "data_hash": ds.data_hash(), "counts": counts, "seed": seed,
            "replicas": replicas, "global_batch_size": bs, "strategy": _strategy_name(strategy),
            "versions": _versions(), "resumed": resuming, "jit_compile": bool(model.jit_compile),
            "op_determinism": not jit}
    status = "finished"
    try:
        model.fit(train_ds, validation_data=val_ds, epochs=cfg["train"]["epochs"],
                  callbacks=callbacks, verbose=verbose, shuffle=False)  # tf.data shuffles
    except KeyboardInterrupt:
        status = "interrupted"
    from kerasseg.training.callbacks import read_history

    hist = read_history(out / "history.csv")
    if not (out / "model.keras").exists():
        segmenter.save(out / ".model.tmp.keras")
        os.replace(out / ".model.tmp.keras", out / "model.keras")
    from kerasseg.training.run import load_run

    saved, _ = load_run(out)
    val_dice = _dice(saved, val.images, val.masks)
    test_dice = otsu = prior_d = None
    if counts["test"]:
        from kerasseg.training.baselines import otsu_dice, prior_dice

        test = ds.subset("test")
        test_dice = _dice(saved, test.images, test.masks)
        otsu = otsu_dice(test.images, test.masks)
        prior_d = prior_dice(train.masks, test.masks)
    result = RunResult(run_dir=str(out), status=status, epochs_run=len(hist),
                       best_epoch=best.best_epoch, val_dice=val_dice, test_dice=test_dice,
                       seconds=round(time.time() - t0, 1), otsu_test_dice=otsu,
                       prior_test_dice=prior_d)
    meta.update(asdict(result))
    atomic_write_text(run_json, json.dumps(meta, indent=2))
    return result


def _readable_h5(path: Path) -> bool:
    import h5py

    try:
        with h5py.File(path, "r"):
            return True
    except (OSError, ValueError):
        return False


def _repair_backup(backup: Path) -> None:
    """If a kill left the backup's epoch file unreadable, fall back to the previous one.

    A torn first checkpoint (no previous copy to fall back to: Keras would fail on it at every
    rerun) is removed with a warning, so the run starts again from epoch 1.
    """
    weights = backup / "latest.weights.h5"
    if weights.is_file() and not _readable_h5(weights) and not (backup / "latest.weights.h5.bkp").is_file():
        warn("the only checkpoint is torn (killed while it was written); starting the run again", weights)
        weights.unlink()
        (backup / "training_metadata.json").unlink(missing_ok=True)
    meta = backup / "training_metadata.json"
    prev = backup / "training_metadata.json.bkp"
    if meta.is_file():
        try:
            json.loads(meta.read_text())
        except ValueError:
            if prev.is_file():
                meta.write_text(prev.read_text())
            else:
                meta.unlink()
