"""Callbacks that make a run directory crash-safe.

``HistoryCSV`` and ``BestModel`` keep their state in files rewritten atomically at the end of
every epoch, *before* :class:`Checkpoint` records the epoch as done (a checkpoint unit,
:mod:`kerasseg.training.checkpoint`). Their ``get_state()`` goes into that unit and
``set_state(state, epoch)`` restores it when a killed run resumes after ``epoch`` completed
epochs, so ``history.csv`` holds every epoch exactly once and best-model selection only sees
completed epochs. Epoch numbers in the files are 1-based.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import keras


from kerasseg.fileio import atomic_write_text  # noqa: E402,F401  (re-exported)


def read_history(path) -> list[dict]:
    """Rows of a ``history.csv`` as dicts (numbers as float, ``epoch`` as int)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for r in rows:
        row = {}
        for k, v in r.items():
            try:
                row[k] = int(v) if k == "epoch" else float(v)
            except (TypeError, ValueError):
                row[k] = v
        out.append(row)
    return out


class StopOnNonFinite(keras.callbacks.Callback):
    """Stop training with a one-line :class:`~kerasseg.errors.KerassegError` as soon as a batch's
    loss is NaN or infinite. The epoch never ends, so neither the backup nor ``model.keras`` is
    written from diverged weights: the last good epoch's checkpoint and best model stay."""

    def __init__(self):
        super().__init__()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            from kerasseg.errors import KerassegError

            raise KerassegError(
                f"training diverged: the loss is {float(loss)} at epoch {self.epoch}, batch {batch + 1}; "
                "the last completed epoch's checkpoint and best model are kept (try a lower "
                "train.learning_rate)")


class HistoryCSV(keras.callbacks.Callback):
    """``history.csv`` with one row per completed epoch; rows of re-run epochs are replaced."""

    def __init__(self, path):
        super().__init__()
        self.path = Path(path)

    def on_epoch_end(self, epoch, logs=None):
        e = epoch + 1
        rows = [r for r in read_history(self.path) if r.get("epoch", 0) < e]
        row = {"epoch": e}
        row.update({k: float(v) for k, v in sorted((logs or {}).items())})
        rows.append(row)
        self._write(rows)

    def _write(self, rows):
        keys = ["epoch"] + sorted({k for r in rows for k in r if k != "epoch"})
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys, restval="")
        w.writeheader()
        for r in rows:
            w.writerow(r)
        atomic_write_text(self.path, buf.getvalue())

    def get_state(self) -> dict:
        return {"rows": read_history(self.path)}

    def set_state(self, state: dict, epoch: int) -> None:
        """The history of the checkpoint's ``epoch`` completed epochs (later rows dropped)."""
        rows = [r for r in state.get("rows", []) if r.get("epoch", 0) <= epoch]
        if rows:
            self._write(rows)
        else:
            self.path.unlink(missing_ok=True)


class BestModel(keras.callbacks.Callback):
    """Save ``net`` to ``model.keras`` whenever the monitored validation metric improves;
    stop after ``patience`` epochs without improvement (0 = never stop early).

    State (per-epoch scores) lives in ``state_path``; the model file is written atomically.
    """

    def __init__(self, net, model_path, state_path, monitor="val_dice", patience=0):
        super().__init__()
        self.net = net
        self.model_path = Path(model_path)
        self.state_path = Path(state_path)
        self.monitor = monitor
        self.patience = int(patience)
        self._started = False
        self.scores: dict[int, float] = {}
        self.saved_epoch: int | None = None

    # ------------------------------------------------------------------ state
    def _load(self):
        if self.state_path.is_file():
            try:
                st = json.loads(self.state_path.read_text())
                self.scores = {int(k): float(v) for k, v in st.get("scores", {}).items()}
                self.saved_epoch = st.get("saved_epoch")
            except (ValueError, OSError):
                self.scores, self.saved_epoch = {}, None

    def _save(self, writing_epoch=None):
        atomic_write_text(self.state_path, json.dumps(
            {"monitor": self.monitor, "scores": self.scores, "saved_epoch": self.saved_epoch,
             "best_epoch": self.best_epoch, "best": self.best, "writing_epoch": writing_epoch},
            indent=1))

    def get_state(self) -> dict:
        return {"scores": {str(k): v for k, v in self.scores.items()}, "saved_epoch": self.saved_epoch}

    def set_state(self, state: dict, epoch: int) -> None:
        """Scores of the checkpoint's ``epoch`` completed epochs. If ``model.keras`` may hold a
        later, unrecorded epoch's model (``best_state.json`` says it was being written for an
        epoch > ``epoch``), the next epoch's model replaces it whatever its score."""
        self._started = True
        self.scores = {int(k): float(v) for k, v in state.get("scores", {}).items() if int(k) <= epoch}
        self.saved_epoch = state.get("saved_epoch")
        on_disk = {}
        if self.state_path.is_file():
            try:
                on_disk = json.loads(self.state_path.read_text())
            except (ValueError, OSError):
                on_disk = {"writing_epoch": epoch + 1}
        later = [e for e in (on_disk.get("saved_epoch"), on_disk.get("writing_epoch"))
                 if isinstance(e, int) and e > epoch]
        if later or not self.model_path.is_file():
            self.scores = {k: -math.inf for k in self.scores}
            self.saved_epoch = None

    @property
    def best_epoch(self):
        if not self.scores:
            return None
        return max(self.scores, key=lambda e: (self.scores[e], -e))

    @property
    def best(self):
        b = self.best_epoch
        return None if b is None else self.scores[b]

    # -------------------------------------------------------------- callbacks
    def on_epoch_begin(self, epoch, logs=None):
        if self._started:
            return
        self._started = True
        self._load()
        e = epoch + 1
        self.scores = {k: v for k, v in self.scores.items() if k < e}
        if self.saved_epoch is not None and self.saved_epoch >= e:
            # the saved model came from an epoch that was not completed: it is replaced by
            # the next epoch's model (the earlier best weights are gone)
            self.scores = {k: -math.inf for k in self.scores}
            self.saved_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        e = epoch + 1
        value = (logs or {}).get(self.monitor)
        value = -math.inf if value is None or not math.isfinite(float(value)) else float(value)
        previous = max(self.scores.values(), default=-math.inf)
        self.scores[e] = value
        if value > previous or self.saved_epoch is None:
            self._save(writing_epoch=e)  # write-ahead: model.keras may hold epoch e from here on
            from kerasseg.errors import KerassegError
            from kerasseg.fileio import save_model

            try:  # a random O_EXCL temp name beside model.keras, then renamed
                save_model(self.net, self.model_path)
            except KerassegError as exc:
                why = str(exc).rsplit("(", 1)[-1].rstrip(")") if "(" in str(exc) else str(exc)
                raise KerassegError(f"cannot write the best model of epoch {e} ({why}); "
                                    "the last checkpoint is kept: free space and run the same "
                                    "command to resume", self.model_path) from None
            self.saved_epoch = e
        self._save()
        if self.patience > 0 and self.best_epoch is not None and e - self.best_epoch >= self.patience:
            self.model.stop_training = True


class ScalarLogger(keras.callbacks.Callback):
    """TensorBoard scalars per epoch (``<logdir>/train`` and ``<logdir>/validation``).

    Written with the core ``tf.summary.write`` op and the scalar plugin's metadata, so it works
    without the ``tensorboard`` package installed (``keras.callbacks.TensorBoard`` needs it).
    """

    def __init__(self, logdir):
        super().__init__()
        self.logdir = Path(logdir)
        self._writers = {}

    def _writer(self, name):
        import tensorflow as tf

        if name not in self._writers:
            self._writers[name] = tf.summary.create_file_writer(str(self.logdir / name))
        return self._writers[name]

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        meta = summary_pb2.SummaryMetadata()
        meta.plugin_data.plugin_name = "scalars"
        for key, value in (logs or {}).items():
            split, tag = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            with self._writer(split).as_default():
                tf.summary.write(f"epoch_{tag}", tf.constant(float(value), tf.float32),
                                 step=epoch + 1, metadata=meta)
        for w in self._writers.values():
            w.flush()

    def on_train_end(self, logs=None):
        for w in self._writers.values():
            w.close()
        self._writers = {}


class Checkpoint(keras.callbacks.Callback):
    """Write a checkpoint unit (:func:`kerasseg.training.checkpoint.write_unit`) at the end of
    every epoch, after the other callbacks have written their files: the model and optimizer
    state, the ``stateful`` callbacks' ``get_state()`` and ``meta``. The unit of the last epoch
    (``epochs`` reached or early stopping) is marked final."""

    def __init__(self, folder, epochs: int, stateful: dict, meta: dict | None = None):
        super().__init__()
        self.folder = Path(folder)
        self.epochs = int(epochs)
        self.stateful = stateful
        self.meta = dict(meta or {})

    def on_epoch_end(self, epoch, logs=None):
        from kerasseg.training.checkpoint import model_arrays, write_unit

        done = epoch + 1
        final = done >= self.epochs or bool(getattr(self.model, "stop_training", False))
        meta = {**self.meta, "callbacks": {k: cb.get_state() for k, cb in self.stateful.items()}}
        write_unit(self.folder, done, model_arrays(self.model), meta, final=final)


class StopOnSignal(keras.callbacks.Callback):
    """Raise the signal that :func:`kerasseg.errors.stop_on_signals` (deferred) recorded at the end of a
    batch, so an interrupted run stops between batches with its last checkpoint unit complete."""

    def __init__(self, handlers):
        super().__init__()
        self.handlers = handlers

    def on_train_batch_end(self, batch, logs=None):
        self.handlers.check()

    def on_epoch_end(self, epoch, logs=None):  # after Checkpoint (the last callback before this)
        self.handlers.check()
