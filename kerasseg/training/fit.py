"""``fit``: train one config on one dataset into a crash-safe run directory (Contract 4).

Run directory layout::

    config.yaml      resolved config (dataset overrides applied, epochs/seed as used)
    model.keras      the segmenter (raw ROI -> preprocessing fitted on the TRAIN split -> network,
                     dict outputs) of the best VALIDATION-Dice epoch
    history.csv      one row per completed epoch (1-based), loss/clean_loss/adv_loss/dice, val_*
    run.json         versions, seed, data hash, best epoch, val/test Dice, status
    tb/              TensorBoard logs
    backup/          checkpoint units (kerasseg.training.checkpoint); present until run.json
                     says finished

Re-running the same command on an unfinished run directory resumes after the last completed
epoch (also after SIGKILL), bit-identically to an uninterrupted run on CPU: model, optimizer,
RNG and callback state come from the checkpoint unit and each epoch's shuffle depends only on
(seed, epoch). A run whose final unit exists (killed before run.json) only writes its results.
Ctrl-C stops after the current batch, keeps the backup and writes ``run.json`` with
``status: interrupted``. A fresh run folder is built aside and appears only when training starts.

:func:`fit` resolves the config and data and locks the run folder; :class:`Trainer` then runs the
stages of one run (seeds, inputs, model, run folder, callbacks, training, results), each a method a
subclass may override. The networks and optimizers come from :mod:`kerasseg.models.registry`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from kerasseg.errors import KerassegError, argument_error, warn


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


def build_training_model(cfg: dict, input_size: int, prior=None):
    """The compiled :class:`SegmentationModel` for a resolved config (call inside a strategy scope):
    the network and the optimizer come from the registries of :mod:`kerasseg.models.registry`."""
    from kerasseg.models import arch_kwargs, build_model, build_optimizer
    from kerasseg.training.segmentation_model import SegmentationModel

    m, t = cfg["model"], cfg["train"]
    net = build_model(m["arch"], input_size=input_size, crf=cfg["crf"],
                      prior=prior if m["position_prior"] else None, **arch_kwargs(m))
    model = SegmentationModel(net, lam=cfg["loss"]["lambda"], l2=cfg["loss"]["l2"],
                              adversarial=t["adversarial"], epsilon=t["epsilon"])
    model.compile(optimizer=build_optimizer(t["optimizer"], t["learning_rate"]))
    model(np.zeros((1, input_size, input_size, 1), np.float32))  # build (a checkpoint restore needs it)
    # the optimizer's slots exist before the first step: created inside the traced train step they
    # make tf.function trace that step twice (several seconds for the CRF rows)
    model.optimizer.build(model.trainable_variables)
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


def fit(config="crunet-l067", data=None, out_dir=None, epochs=None, seed=None, devices=None,
        dataset=None, verbose="auto") -> RunResult:
    """Train ``config`` on ``data`` (None/"phantom" = built-in phantom, else a .npz) into ``out_dir``.

    ``epochs``/``seed`` override the config; ``devices`` picks the replicas
    (:func:`~kerasseg.training.strategy.get_strategy`); ``dataset`` (inbreast|ddsm|phantom)
    selects the config's ``datasets`` section (default: from the data file's ``source``).
    """
    from kerasseg.training.strategy import get_strategy

    strategy = get_strategy(devices)  # before any other TensorFlow work (logical CPUs)

    from kerasseg.models.segmenter import quiet_own_retracing

    quiet_own_retracing()  # several runs in one process (folds, reproduce) are not retracing
    t0 = time.time()
    ds, cfg, key, counts = _resolve(config, data, epochs, seed, dataset)

    from kerasseg.fileio import folder_lock, output_dir
    from kerasseg.training.strategy import cluster_role

    replicas = strategy.num_replicas_in_sync
    if replicas > counts["val"]:
        raise argument_error("devices", f"{replicas}: {replicas} replicas but only {counts['val']} validation "
                             f"ROIs; use at most {counts['val']} devices", data)
    chief, role = cluster_role()
    out = Path(out_dir or f"runs/{cfg['name']}")
    if not chief:
        out = out / f".{role}"
    output_dir(out, "run folder", create=False)  # created (staged) just before training
    with contextlib.ExitStack() as stack:
        if chief:  # one command per run folder (workers write only their own .worker-N folders)
            output_dir(out.parent, "folder of the run folder")
            stack.enter_context(folder_lock(out, "run folder"))
        return Trainer(strategy, ds, cfg, key, counts, data, out, t0, verbose).run()


class Trainer:
    """One training run into a locked run folder, as stages a subclass may override.

    :meth:`run` calls them in this order (the order is part of the contract: the seeds are set
    before anything draws random numbers, and the run folder appears only once the model is built):

    1. :meth:`open_run`: the resume state (latest checkpoint unit, resuming, a new folder?)
    2. :meth:`set_seeds`: the seeds; TF op determinism unless ``train.jit_compile``
    3. :meth:`build_inputs`: the preprocessing fitted on TRAIN, the prior, the tf.data pipelines
    4. :meth:`build_model`: the compiled model (restored from the unit) and the segmenter
    5. :meth:`set_jit`: XLA when ``train.jit_compile``
    6. :meth:`prepare_run_folder`: config.yaml and run.json ``running`` (a new folder is staged)
    7. :meth:`callbacks` and :meth:`run_meta` (what run.json records)
    8. :meth:`train`, unless :meth:`training_complete`: ``model.fit`` under deferred SIGINT/SIGTERM
    9. :meth:`write_results`: scores, run.json ``finished``, the checkpoints removed
    """

    def __init__(self, strategy, ds, cfg: dict, key, counts: dict, data, out: Path, t0: float,
                 verbose="auto"):
        self.strategy, self.ds, self.cfg, self.key, self.counts = strategy, ds, cfg, key, counts
        self.data, self.out, self.t0, self.verbose = data, Path(out), t0, verbose
        self.seed = cfg["train"]["seed"]
        self.jit = cfg["train"]["jit_compile"]
        self.total = cfg["train"]["epochs"]
        self.replicas = strategy.num_replicas_in_sync

    def run(self) -> RunResult:
        """Every stage in order; the :class:`RunResult` of the finished run."""
        from kerasseg.fileio import fault_point

        self.open_run()
        self.set_seeds()
        self.build_inputs()
        self.build_model()
        self.set_jit()
        self.prepare_run_folder()
        callbacks = self.callbacks()
        meta = self.run_meta()
        if not self.training_complete():
            self.train(callbacks, meta)
        fault_point("fit.after_last_epoch")
        return self.write_results(meta)

    def open_run(self) -> None:
        """``unit`` (latest checkpoint unit or None), ``resuming``, ``fresh_dir``, ``start`` epoch."""
        self.fresh_dir = not self.out.exists()
        self.unit, self.resuming = _open_run(self.out, self.cfg, self.ds)
        self.start = self.unit.epoch if self.unit else 0

    def set_seeds(self) -> None:
        """Python, NumPy and TF seeds; op determinism (Keras refuses XLA with it: one or the other)."""
        import keras
        import tensorflow as tf

        keras.utils.set_random_seed(self.seed)
        if not self.jit:
            tf.config.experimental.enable_op_determinism()

    def build_inputs(self) -> None:
        """``pre``, ``prior``, ``batch_size``, ``train_ds`` (from epoch ``start``), ``steps``, ``val_ds``."""
        (self.pre, self.prior, self.batch_size, self.train_ds, self.steps,
         self.val_ds) = _inputs(self.cfg, self.ds, self.seed, self.replicas, self.start)

    def build_model(self) -> None:
        """``model`` (compiled, in the strategy's scope, restored from the unit) and ``segmenter``
        (the preprocessing in front of the network, sharing its weights: what is saved)."""
        from kerasseg.models.segmenter import build_segmenter
        from kerasseg.training.checkpoint import restore_model_arrays

        with self.strategy.scope():
            self.model = build_training_model(self.cfg, self.ds.size, self.prior)
            if self.unit:
                restore_model_arrays(self.model, self.unit.arrays, self.unit.path)
        self.segmenter = build_segmenter(self.model.net, self.pre, name=self.cfg["name"])

    def set_jit(self) -> None:
        """XLA-compile the train/test steps when the config asks (a warning when it cannot)."""
        if not self.jit:
            return
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model.jit_compile = True
        if not self.model.jit_compile:
            warn("train.jit_compile: XLA is off for this run (op determinism was already "
                 "enabled in this process by an earlier run, or a layer does not support XLA)")

    def prepare_run_folder(self) -> None:
        """config.yaml and a run.json saying ``running`` (what a resume is checked against); a new
        run folder is built aside and appears only now that everything before has worked."""
        from kerasseg.config import save_config
        from kerasseg.fileio import output_dir, staged_dir
        from kerasseg.training.callbacks import atomic_write_text

        out, cfg = self.out, self.cfg
        running = {"status": "running", "config": cfg["name"], "data": recorded_path(self.data),
                   "data_hash": self.ds.data_hash()}
        if self.fresh_dir and not os.environ.get("TF_CONFIG"):  # (workers share the parent: no staging)
            with staged_dir(out, what="run folder") as tmp:
                save_config(cfg, tmp / "config.yaml")
                atomic_write_text(tmp / "run.json", json.dumps(running))
        else:
            output_dir(out, "run folder")
            save_config(cfg, out / "config.yaml")
            if not self.resuming or not (out / "run.json").is_file():
                atomic_write_text(out / "run.json", json.dumps(running))

    def callbacks(self) -> list:
        """The Keras callbacks (``history`` and ``best`` kept: their state is checkpointed)."""
        from kerasseg.training.callbacks import (BestModel, Checkpoint, HistoryCSV, ScalarLogger,
                                                 StopOnNonFinite)

        out, unit = self.out, self.unit
        self.history = HistoryCSV(out / "history.csv")
        self.best = BestModel(self.segmenter, out / "model.keras", out / "best_state.json",
                              monitor="val_dice", patience=self.cfg["train"]["patience"])
        if unit:
            states = unit.meta.get("callbacks", {})
            self.history.set_state(states.get("history", {}), unit.epoch)
            self.best.set_state(states.get("best", {}), unit.epoch)
        return [
            StopOnNonFinite(),
            self.history,
            self.best,
            ScalarLogger(out / "tb"),
            Checkpoint(out / "backup", self.total, {"history": self.history, "best": self.best},
                       {"seed": self.seed, "data_hash": self.ds.data_hash(), "config": self.cfg["name"]}),
        ]

    def run_meta(self) -> dict:
        """What run.json records about the run (the results are added by :meth:`write_results`)."""
        return {"config": self.cfg["name"], "dataset": self.key, "data": recorded_path(self.data),
                "data_hash": self.ds.data_hash(), "counts": self.counts, "seed": self.seed,
                "replicas": self.replicas, "global_batch_size": self.batch_size,
                "strategy": _strategy_name(self.strategy), "versions": _versions(),
                "resumed": self.resuming, "jit_compile": bool(self.model.jit_compile),
                "op_determinism": not self.jit}

    def training_complete(self) -> bool:
        """The final unit exists with model.keras (killed before run.json): only results are left."""
        unit = self.unit
        return bool(unit and (unit.final or unit.epoch >= self.total)
                    and (self.out / "model.keras").is_file())

    def train(self, callbacks: list, meta: dict) -> None:
        """``model.fit`` from epoch ``start``. Ctrl-C / SIGTERM stop it after the current batch, the
        last checkpoint unit complete: run.json says ``interrupted`` and :class:`Interrupted` is raised."""
        from kerasseg.errors import stop_on_signals
        from kerasseg.training.callbacks import StopOnSignal

        try:
            with stop_on_signals() as handlers:
                self.model.fit(self.train_ds, validation_data=self.val_ds, epochs=self.total,
                               initial_epoch=self.start, steps_per_epoch=self.steps,
                               callbacks=[*callbacks, StopOnSignal(handlers)], verbose=self.verbose,
                               shuffle=False)  # the tf.data pipeline orders each epoch
        except KeyboardInterrupt as exc:
            raise self.interrupted(exc, meta) from None

    def interrupted(self, exc: KeyboardInterrupt, meta: dict) -> Exception:
        """Record the interruption in run.json (the backup stays: resumable); the error to raise."""
        import signal

        from kerasseg.errors import Interrupted, signal_number
        from kerasseg.training.callbacks import atomic_write_text, read_history

        signum = signal_number(exc)
        name = signal.Signals(signum).name
        done = len(read_history(self.out / "history.csv"))
        meta.update({"status": "interrupted", "signal": name, "best_epoch": self.best.best_epoch,
                     "epochs_run": done})
        atomic_write_text(self.out / "run.json", json.dumps(meta, indent=2))
        return Interrupted(f"{self.out}: training interrupted by {name}; the state after the last "
                           "completed epoch is kept: run the same command to resume", signum)

    def write_results(self, meta: dict) -> RunResult:
        """Score the saved model, write run.json ``finished``, then drop the checkpoint units."""
        from kerasseg.training.callbacks import atomic_write_text
        from kerasseg.training.checkpoint import remove_checkpoints

        result = _results(self.out, self.segmenter, self.ds, "finished", self.best.best_epoch, self.t0)
        meta.update(asdict(result))
        atomic_write_text(self.out / "run.json", json.dumps(meta, indent=2))
        remove_checkpoints(self.out / "backup")  # run.json now says finished: the final unit is not needed
        return result


def recorded_path(data) -> str:
    """The data as recorded in run.json: "phantom" or the absolute path of the file (a later
    ``evaluate`` from another folder finds the same file; its data hash is recorded beside it)."""
    return "phantom" if data in (None, "phantom") else str(Path(data).resolve())


def _resolve(config, data, epochs, seed, dataset):
    """``(dataset, resolved config, dataset key, split counts)`` with the CLI overrides applied."""
    from kerasseg.config import apply_dataset, dataset_key, resolve_config
    from kerasseg.data.sources import load_data

    ds = load_data(data)
    cfg = resolve_config(config)
    key = dataset or dataset_key(ds.source)
    cfg = apply_dataset(cfg, key)
    if epochs is not None:
        if isinstance(epochs, bool) or int(epochs) != epochs or epochs < 1:
            raise argument_error("epochs", f"must be a positive integer, got {epochs!r}")
        cfg["train"]["epochs"] = int(epochs)
    if seed is not None:
        if isinstance(seed, bool) or int(seed) != seed or not 0 <= seed < 2**32:
            raise argument_error("seed", f"must be an integer in [0, 2**32 - 1], got {seed!r}")
        cfg["train"]["seed"] = int(seed)
    if ds.size != cfg["data"]["size"]:
        warn(f"data ROIs are {ds.size}x{ds.size}, config data.size is {cfg['data']['size']}; "
             f"using {ds.size}")
        cfg["data"]["size"] = ds.size
    counts = ds.counts()
    for split in ("train", "val"):
        if counts[split] == 0:
            raise KerassegError(f"the data has no {split!r} ROIs (counts {counts}); training needs "
                                "train and val splits (best model chosen on val); `kerasseg data split FILE --out NEW.npz` "
                                "makes them by whole groups", data)
    return ds, cfg, key, counts


def _open_run(out: Path, cfg: dict, ds):
    """``(latest checkpoint unit or None, resuming)`` of the run folder ``out``, refusing a finished
    run and an unfinished one of another config or other data."""
    from kerasseg.training.checkpoint import discard_torn, read_latest

    run_json, backup = out / "run.json", out / "backup"
    recorded = {}
    if run_json.is_file():
        try:
            recorded = json.loads(run_json.read_text())
        except (OSError, ValueError):
            recorded = {}
    unit = read_latest(backup)
    discard_torn(backup)
    resuming = backup.is_dir()
    if recorded.get("status") == "finished" and not resuming:
        raise KerassegError("holds a finished run; choose another --out or delete it", out)
    if not run_json.is_file() and not resuming and (out / "model.keras").is_file():
        raise KerassegError("holds a model.keras but no run.json (a finished run whose run.json was lost?); "
                            "it is not retrained over: choose another --out, or delete the folder", out)
    cfg_text_path = out / "config.yaml"
    if resuming and cfg_text_path.is_file():
        from kerasseg.config import to_yaml
        if cfg_text_path.read_text() != to_yaml(cfg):
            raise KerassegError("holds an unfinished run of a different config/options; "
                                "use the same command to resume or another --out", out)
    for other in (recorded.get("data_hash") if resuming else None,
                  unit.meta.get("data_hash") if unit else None):
        if other and other != ds.data_hash():
            raise KerassegError(f"holds an unfinished run on other data (data hash {other}, this data "
                                f"{ds.data_hash()}); resume with the same --data or use another --out", out)
    return unit, resuming


def _results(out: Path, segmenter, ds, status: str, best_epoch, t0: float) -> RunResult:
    """Write model.keras if no epoch did, then score the saved model (the one inference graph) on
    val and test beside the model-free baselines."""
    train, val = ds.subset("train"), ds.subset("val")
    from kerasseg.training.callbacks import read_history

    hist = read_history(out / "history.csv")
    if not (out / "model.keras").exists():
        from kerasseg.fileio import save_model

        save_model(segmenter, out / "model.keras")
    from kerasseg.training.run import load_run

    from kerasseg.models.segmenter import segment_function

    saved, _ = load_run(out)
    saved = segment_function(saved)  # traced once, scored on val and test
    val_dice = _dice(saved, val.images, val.masks)
    test_dice = otsu = prior_d = None
    if ds.counts()["test"]:
        from kerasseg.training.baselines import otsu_dice, prior_dice

        test = ds.subset("test")
        test_dice = _dice(saved, test.images, test.masks)
        otsu = otsu_dice(test.images, test.masks)
        prior_d = prior_dice(train.masks, test.masks)
    result = RunResult(run_dir=str(out), status=status, epochs_run=len(hist),
                       best_epoch=best_epoch, val_dice=val_dice, test_dice=test_dice,
                       seconds=round(time.time() - t0, 1), otsu_test_dice=otsu,
                       prior_test_dice=prior_d)
    return result


def _inputs(cfg: dict, ds, seed: int, replicas: int, start: int):
    """The preprocessing (fitted on the TRAIN split), the position prior, the global batch size and
    the train (endless, from epoch ``start``) and validation tf.data pipelines."""
    from kerasseg.data.boxes import VALIDATION_EPOCH, BoxJitter, jitter_views, need_context
    from kerasseg.data.pipeline import epoch_steps, make_box_jitter_dataset, make_tf_dataset
    from kerasseg.layers.preprocessing import ImagePreprocessor
    from kerasseg.layers.prior import prior_from_masks
    from kerasseg.training.strategy import eval_batch_size

    train, val = ds.subset("train"), ds.subset("val")
    # the preprocessing layers that travel inside the saved model, fitted on the TRAIN split;
    # the network trains on their output (computed once: the flips come after it, as before)
    pre = ImagePreprocessor(ds.size, enhancement=cfg["data"]["enhancement"],
                            normalization=cfg["data"]["normalization"], name="preprocessor")
    x_tr, x_val = pre.adapt_transform(train.images)[..., 0], pre.transform(val.images)[..., 0]
    prior = prior_from_masks(train.masks) if cfg["model"]["position_prior"] else None

    bs = cfg["train"]["batch_size"]
    if bs % replicas:
        new = int(math.ceil(bs / replicas) * replicas)
        warn(f"batch_size {bs} is not a multiple of the {replicas} replicas; using {new}")
        bs = new
    flips = cfg["data"]["flips"]
    n_examples = len(x_tr) * (4 if flips else 1)
    drop = 0 < n_examples % bs < replicas  # a last batch that leaves a replica empty
    if drop:
        warn(f"the last training batch of each epoch ({n_examples % bs} examples) is smaller than "
             f"the {replicas} replicas; it is dropped")
    jitter = BoxJitter.from_config(cfg["data"].get("box_jitter"))
    val_masks = val.masks
    if jitter is None:
        train_ds = make_tf_dataset(x_tr, train.masks, bs, training=True, seed=seed, flips=flips,
                                   epoch=start, repeat=True, drop_remainder=drop)
    else:
        need_context(ds, "data.box_jitter")
        train_ds = make_box_jitter_dataset(train, pre, jitter, bs, seed=seed, flips=flips, epoch=start,
                                           repeat=True, drop_remainder=drop)
        # the best epoch is chosen on one fixed jittered draw of the val ROIs (the training
        # distribution), beside the tight val ROIs when training also sees tight boxes
        jx, jm = jitter_views(val, jitter, seed, VALIDATION_EPOCH)
        jx = pre.transform(jx)[..., 0]
        x_val, val_masks = ((np.concatenate([x_val, jx]), np.concatenate([val.masks, jm]))
                            if jitter.tight > 0 else (jx, jm))
    steps = epoch_steps(len(x_tr), bs, flips=flips, drop_remainder=drop)
    # every validation batch splits across the replicas with none empty (sums, no padding)
    val_ds = make_tf_dataset(x_val, val_masks, eval_batch_size(len(x_val), bs, replicas),
                             training=False)
    return pre, prior, bs, train_ds, steps, val_ds
