"""Export a trained segmenter, or the ensemble of a cross-validation folds dir, as a TF Serving SavedModel.

The exported folder follows TF Serving's layout ``BASE/NAME/<version>/`` (``saved_model.pb``,
``variables/``, ``assets/model_card.json``, ``assets.extra/tf_serving_warmup_requests``). Every
signature runs the same graph as ``kerasseg evaluate`` and ``predict``: the saved model's own
preprocessing layers (resize to the model size, enhancement, normalisation), the network (+ CRF
with its inference iteration count), the final mass probability resized back to the crop size
(bilinear, :func:`kerasseg.data.transforms.resize`) and the one threshold (``>= 0.5``). Only core
TF ops (checked by :func:`graph_ops`), so a stock ``tensorflow_model_server`` serves it.

The graph is :func:`kerasseg.models.ensemble.ensemble_function`: for a single run it equals
:func:`kerasseg.models.segmenter.segment_function` exactly (one member, no TTA, no post-processing);
a folds dir (``kerasseg fit --folds``) exports ONE SavedModel with every fold's network, the
test-time augmentation (``tta``: none / flips / dihedral) and the post-processing its cv.json chose.

``serving_default``
    input ``image`` float32 ``[batch, height, width]``: raw ROI crops, any size >= 8 x 8.
``serving_4d``
    input ``image`` float32 ``[batch, height, width, 1]`` (the same with a channel axis).
``serving_bytes``
    input ``image_bytes`` string ``[batch]``: encoded PNG (8 or 16 bit, grey or RGB(A)), JPEG or BMP
    crops of one size (REST clients send ``{"b64": ...}``), decoded in the graph with the one
    RGB-to-grey rule of :mod:`kerasseg.data.imageio`.

All three output ``probability`` float32 ``[batch, height, width]`` (mean over members x TTA
transforms), ``mask`` uint8 (thresholded, post-processed) and ``uncertainty`` float32 (population
std over members x transforms; 0 for one model without TTA). A request
with an empty batch, a side under 8 px, NaN/inf pixels or bytes that are no such image fails with
``InvalidArgumentError`` naming the input and this contract.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from kerasseg.errors import KerassegError

#: smallest accepted crop side (px) in a serving request
MIN_SIDE = 8
SIGNATURES = ("serving_default", "serving_4d", "serving_bytes")
CONTRACT = (f"float32 [batch, height, width] raw ROI crops with batch >= 1, height and width >= {MIN_SIDE} "
            "and finite pixels")


# --------------------------------------------------------------------------- loading
def load_source(source):
    """``(segmenter, config, run_dir)`` of a run dir, ``.keras`` file or keras.Model
    (:func:`kerasseg.training.run.load_model_source`)."""
    from kerasseg.training.run import load_model_source

    return load_model_source(source)


def load_ensemble(source):
    """The :class:`~kerasseg.training.run.EnsembleSource` of a folds dir, run dir, ``.keras`` file,
    keras.Model (or an EnsembleSource, returned as is)."""
    from kerasseg.training.run import EnsembleSource, load_ensemble_source

    return source if isinstance(source, EnsembleSource) else load_ensemble_source(source)


# --------------------------------------------------------------------------- decoding bytes
def decode_image_bytes(data):
    """One encoded PNG (8/16-bit) / JPEG / BMP image (a scalar tf.string) -> float32 (H, W) grey.

    Raw stored values (0..255 or 0..65535); colour images become grey with
    :data:`kerasseg.data.imageio.RGB_TO_GREY`; an alpha channel is dropped.
    """
    import tensorflow as tf

    from kerasseg.data.imageio import RGB_TO_GREY

    head = tf.strings.substr(data, 0, 4)
    is_png = tf.equal(head, b"\x89PNG")
    is_jpeg = tf.equal(tf.strings.substr(data, 0, 2), b"\xff\xd8")
    is_bmp = tf.equal(tf.strings.substr(data, 0, 2), b"BM")
    known = tf.logical_or(is_png, tf.logical_or(is_jpeg, is_bmp))
    check = tf.debugging.Assert(known, [
        "kerasseg serving: input image_bytes must hold encoded PNG (8/16-bit), JPEG or BMP images; "
        "got bytes that are none of these (first bytes)", tf.strings.substr(data, 0, 8)])
    with tf.control_dependencies([check]):
        data = tf.identity(data)

    def png():
        depth = tf.io.decode_raw(tf.strings.substr(data, 24, 1), tf.uint8)[0]
        return tf.cond(tf.equal(depth, 16),
                       lambda: tf.cast(tf.io.decode_png(data, channels=0, dtype=tf.uint16), tf.float32),
                       lambda: tf.cast(tf.io.decode_png(data, channels=0, dtype=tf.uint8), tf.float32))

    def other():
        return tf.cast(tf.io.decode_image(data, channels=0, expand_animations=False), tf.float32)

    img = tf.cond(is_png, png, other)
    img = tf.ensure_shape(img, [None, None, None])
    c = tf.shape(img)[-1]
    weights = tf.constant(RGB_TO_GREY, tf.float32)
    return tf.cond(c >= 3, lambda: tf.tensordot(img[..., :3], weights, axes=1), lambda: img[..., 0])


# --------------------------------------------------------------------------- the serving module
def build_serving_module(model, tta: str = "none", postprocessing: dict | None = None):
    """A ``tf.Module`` with the three signature functions; each validates its input and runs
    :func:`kerasseg.models.ensemble.ensemble_function`.

    Args:
        model: a segmenter (or bare network), a list of them (ensemble members) or an
            :class:`~kerasseg.training.run.EnsembleSource` (its post-processing is used unless
            ``postprocessing`` is given).
        tta: one of :data:`kerasseg.models.ensemble.TTA_MODES`.
        postprocessing: ``{"largest_component": bool, "fill_holes": bool}`` or None.
    """
    import tensorflow as tf

    from kerasseg.models.ensemble import ensemble_function
    from kerasseg.training.run import EnsembleSource

    if isinstance(model, EnsembleSource):
        if postprocessing is None:
            postprocessing = model.postprocessing
        model = model.members
    segment = ensemble_function(model, tta=tta, postprocessing=postprocessing)

    class SegmentationServing(tf.Module):
        def __init__(self):
            super().__init__(name="kerasseg_serving")
            self.members = list(segment.members)  # tracked: every member's variables are saved
            self.model = self.members[0]
            self.size = segment.size
            self.tta = segment.tta
            self.postprocessing = dict(segment.postprocessing)

        @staticmethod
        def _check(x, name):
            # a loaded signature does not enforce its rank at run time: EnsureShape does (its
            # error names the tensor and the expected [?,?,?]); the checked tensor then comes out
            # of a cond, so nothing downstream runs on an invalid request
            x = tf.ensure_shape(x, [None, None, None], name=name)

            def valid():
                shape = tf.shape(x)
                ok = tf.logical_and(tf.greater(shape[0], 0),
                                    tf.reduce_all(tf.greater_equal(shape[1:3], MIN_SIDE)))
                return tf.logical_and(ok, tf.reduce_all(tf.math.is_finite(x)))

            def refuse():
                fail = tf.debugging.Assert(False, [f"kerasseg serving: input {name} must be {CONTRACT}; "
                                                   "got shape", tf.shape(x)])
                with tf.control_dependencies([fail]):
                    return tf.identity(x)

            return tf.cond(valid(), lambda: tf.identity(x), refuse)

        @tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.float32, name="image")])
        def serve(self, image):
            return segment(self._check(image, "image"))

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32, name="image")])
        def serve_4d(self, image):
            image = tf.ensure_shape(image, [None, None, None, 1], name="image")
            return segment(self._check(image[..., 0], "image"))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve_bytes(self, image_bytes):
            n = tf.shape(image_bytes)[0]
            nonempty = tf.debugging.Assert(tf.greater(n, 0), [
                "kerasseg serving: input image_bytes must hold at least one image; got batch", n])
            with tf.control_dependencies([nonempty]):
                image_bytes = tf.identity(image_bytes)
            shapes = tf.map_fn(lambda b: tf.shape(decode_image_bytes(b)), image_bytes,
                               fn_output_signature=tf.int32)
            same = tf.debugging.Assert(tf.reduce_all(tf.equal(shapes, shapes[0])), [
                "kerasseg serving: the images of one image_bytes request must all have the same "
                "height and width; got shapes", shapes])
            with tf.control_dependencies([same]):
                image_bytes = tf.identity(image_bytes)
            x = tf.map_fn(decode_image_bytes, image_bytes,
                          fn_output_signature=tf.TensorSpec([None, None], tf.float32))
            return segment(self._check(x, "image_bytes"))

    return SegmentationServing()


def signatures_of(module) -> dict:
    """The concrete functions to save, by signature name."""
    return {"serving_default": module.serve.get_concrete_function(),
            "serving_4d": module.serve_4d.get_concrete_function(),
            "serving_bytes": module.serve_bytes.get_concrete_function()}


# --------------------------------------------------------------------------- model card and warmup
def _run_json(run_dir) -> dict:
    if run_dir is not None and (Path(run_dir) / "run.json").is_file():
        try:
            return json.loads((Path(run_dir) / "run.json").read_text())
        except (OSError, ValueError):
            return {}
    return {}


_RUN_METRICS = ("best_epoch", "val_dice", "test_dice", "otsu_test_dice", "prior_test_dice")


def model_card(model, config: dict, run_dir, *, members=None, tta: str = "none", postprocessing=None,
               folds_dir=None, cv: dict | None = None) -> dict:
    """What a serving engineer needs to know about an export (written to ``assets/model_card.json``).

    ``model`` is the (first) member; ``members`` the ensemble's members (default ``[model]``);
    a folds dir adds its cv.json summary and each fold's run metrics.
    """
    import keras
    import tensorflow as tf

    from kerasseg import __version__
    from kerasseg.models import final_key
    from kerasseg.models.segmenter import get_preprocessor, model_size

    run = _run_json(run_dir)
    members = list(members) if members is not None else [model]
    member_rows = []
    for k, m in enumerate(members, start=1):
        row = {"name": m.name, "final_output": final_key(m), "model_size": model_size(m)}
        if folds_dir is not None:
            fold = Path(folds_dir) / f"fold-{k}"
            fold_run = _run_json(fold)
            row.update({"run_dir": f"fold-{k}", "data_hash": fold_run.get("data_hash"),
                        "metrics": {key: fold_run.get(key) for key in _RUN_METRICS}})
        elif run_dir is not None:
            row.update({"run_dir": str(run_dir), "metrics": {key: run.get(key) for key in _RUN_METRICS}})
        member_rows.append(row)
    pre = get_preprocessor(model)
    return {
        "name": config.get("name") or model.name,
        "paper": config.get("paper", ""), "row": config.get("row", ""),
        "description": config.get("description", ""),
        "config": config,
        "data": run.get("data"), "data_hash": run.get("data_hash"), "counts": run.get("counts"),
        "metrics": {k: run.get(k) for k in _RUN_METRICS},
        "ensemble": {
            "members": member_rows,
            "tta": tta,
            "postprocessing": {"largest_component": False, "fill_holes": False, **(postprocessing or {})},
            "cv": None if cv is None else {"folds_dir": str(folds_dir), **cv},
        },
        "input_contract": {
            "serving_default": {"image": CONTRACT},
            "serving_4d": {"image": "the same as float32 [batch, height, width, 1]"},
            "serving_bytes": {"image_bytes": "string [batch] of encoded PNG (8/16-bit), JPEG or BMP "
                              "crops of one size; REST: {\"b64\": ...}"},
            "outputs": {"probability": "float32 [batch, height, width] mass probability",
                        "mask": "uint8 [batch, height, width], probability >= 0.5, then the "
                                "post-processing",
                        "uncertainty": "float32 [batch, height, width] population std of the mass "
                                       "probability over members x TTA transforms"},
            "model_size": model_size(model),
            "preprocessing": None if pre is None else pre.get_config(),
            "final_output": final_key(model),
        },
        "versions": {"kerasseg": __version__, "tensorflow": tf.__version__, "keras": keras.__version__},
    }


def warmup_requests(size: int, model_name: str = "kerasseg") -> list:
    """``PredictionLog`` records for ``assets.extra/tf_serving_warmup_requests``: one request per
    signature (a model-size crop, a 57 x 71 crop of two images, a PNG)."""
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    rng = np.random.default_rng(0)
    crop = rng.uniform(0, 4000, (1, size, size)).astype(np.float32)
    crops = rng.uniform(0, 4000, (2, 57, 71)).astype(np.float32)
    png = tf.io.encode_png(tf.constant(rng.integers(0, 65535, (size, size, 1), dtype=np.uint16))).numpy()
    inputs = [("serving_default", "image", crop), ("serving_default", "image", crops),
              ("serving_4d", "image", crop[..., None]),
              ("serving_bytes", "image_bytes", np.array([png], dtype=object))]
    logs = []
    for sig, name, value in inputs:
        req = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=model_name, signature_name=sig))
        req.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        logs.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=req)))
    return logs


def graph_ops(export_dir) -> set:
    """Every op type in a SavedModel's graph and its function library."""
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((Path(export_dir) / "saved_model.pb").read_bytes())
    ops = set()
    for mg in sm.meta_graphs:
        ops.update(n.op for n in mg.graph_def.node)
        for f in mg.graph_def.library.function:
            ops.update(n.op for n in f.node_def)
    return ops


# --------------------------------------------------------------------------- versions and writing
_VERSION_RE = re.compile(r"^\d+$")


def existing_versions(base: Path) -> list[int]:
    """Numeric version folders under ``base`` (TF Serving's layout), sorted."""
    base = Path(base)
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and _VERSION_RE.match(p.name))


def _write_saved_model(module, path: Path, card: dict | None = None, model_name: str = "kerasseg") -> None:
    """Write ``module`` as a SavedModel at ``path`` with its model card and warmup requests
    (separated out so tests can inject failures)."""
    import tensorflow as tf

    tf.saved_model.save(module, str(path), signatures=signatures_of(module))
    (path / "assets").mkdir(exist_ok=True)
    if card is not None:
        (path / "assets" / "model_card.json").write_text(json.dumps(card, indent=2, default=str) + "\n")
    (path / "assets.extra").mkdir(exist_ok=True)
    with tf.io.TFRecordWriter(str(path / "assets.extra" / "tf_serving_warmup_requests")) as writer:
        for log in warmup_requests(module.size, model_name):
            writer.write(log.SerializeToString())


def export_model(source, out, version: int | None = None, force: bool = False, tta: str = "none") -> Path:
    """Export ``source`` (folds dir, run dir, ``.keras`` file or keras.Model) to ``out/<version>``.

    A folds dir becomes ONE SavedModel with all its members, ``tta`` and the post-processing of its
    cv.json in the graph (:func:`kerasseg.models.ensemble.ensemble_function`).

    ``version`` defaults to the highest existing version + 1 (1 for a new folder). The SavedModel is
    written to a temporary folder beside the target and renamed into place, so a polling server never
    sees a half-written version. An existing version is only replaced with ``force=True``.
    Returns the version folder.
    """
    from kerasseg.fileio import output_dir

    base = output_dir(out, "export folder", create=False)  # before loading the model
    if version is None:
        found = existing_versions(base)
        version = (found[-1] + 1) if found else 1
    try:
        version = int(version)
    except (TypeError, ValueError):
        raise KerassegError(f"version must be a positive integer, got {version!r}") from None
    if version < 1:
        raise KerassegError(f"version must be a positive integer, got {version}")
    target = base / str(version)
    if target.exists() and not force:
        raise KerassegError("version already exists; use --force to overwrite it", target)

    from kerasseg.models.ensemble import tta_transforms

    tta_transforms(tta)  # a one-line error for an unknown mode, before loading the models
    src = load_ensemble(source)
    module = build_serving_module(src, tta=tta)
    card = model_card(module.model, src.config, src.run_dir, members=module.members, tta=tta,
                      postprocessing=module.postprocessing, folds_dir=src.folds_dir, cv=src.cv)

    from kerasseg.fileio import fault_point, output_dir, remove_leftovers

    output_dir(base, "export folder")
    remove_leftovers(base, r"^\.\d+\.(tmp|old)-")  # what killed exports left (TF Serving ignores them)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=base))
    try:
        _write_saved_model(module, tmp / "model", card, model_name=base.name or "kerasseg")
        fault_point("export.before_swap")
        if target.exists():  # force: swap, so that a version folder exists at every instant
            _exchange(tmp / "model", target)  # tmp/model now holds the old version
        else:
            os.replace(tmp / "model", target)
        fault_point("export.after_swap")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _exchange(a: Path, b: Path) -> None:
    """Atomically swap the folders ``a`` and ``b`` (Linux ``renameat2(RENAME_EXCHANGE)``).

    Where the kernel or filesystem cannot exchange, falls back to two renames (a short window
    in which ``b`` does not exist)."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        renameat2 = None
    if renameat2 is not None:
        at_fdcwd, rename_exchange = -100, 2
        if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
            return
    side = a.with_name(a.name + ".old")
    os.replace(b, side)
    os.replace(a, b)
    os.replace(side, a)


# --------------------------------------------------------------------------- loading an export
def find_export(path) -> Path | None:
    """The SavedModel folder for ``path`` (a version folder, or BASE/NAME -> highest version), else None."""
    path = Path(path)
    if (path / "saved_model.pb").exists():
        return path
    versions = existing_versions(path)
    for v in reversed(versions):
        if (path / str(v) / "saved_model.pb").exists():
            return path / str(v)
    return None
