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
    RGB-to-grey rule of :mod:`kerasseg.data.imageio` (:func:`decode_image_bytes`).

All three output ``probability`` float32 ``[batch, height, width]`` (mean over members x TTA
transforms), ``mask`` uint8 (thresholded, post-processed) and ``uncertainty`` float32 (population
std over members x transforms; 0 for one model without TTA).

``serving_boxes``
    inputs ``image`` float32 ``[height, width]`` (one whole mammogram or a large region of one) and
    ``boxes`` int32 ``[N, 4]`` = ``(y0, x0, y1, x1)`` pixels, ends exclusive. The graph of
    :func:`kerasseg.models.whole_image.boxes_function`: each box is cropped and resized to the model
    size in the graph, the N crops go through the ensemble function in one batch, each result is
    resized back to its box. Outputs ``probability`` float32 ``[N, Hmax, Wmax]``, ``mask`` uint8 and
    ``uncertainty`` float32 (box i's values in ``[i, :h_i, :w_i]``, zero-padded), ``box_size`` int32
    ``[N, 2]`` = ``(h_i, w_i)``, ``image_mask`` uint8 ``[height, width]`` (union of the box masks)
    and ``image_probability`` float32 ``[height, width]`` (max over the boxes covering a pixel, 0
    outside all boxes). Box i's outputs equal ``serving_default`` on ``image[y0:y1, x0:x1]``.
``serving_boxes_bytes``
    inputs ``image_bytes`` string scalar (one encoded image, as for ``serving_bytes``) and ``boxes``;
    the same outputs.

Limits (module constants, refused with ``InvalidArgumentError`` naming the limit): crops per
request :data:`MAX_BATCH`; boxes per request :data:`MAX_BOXES`; pixels of one image
:data:`MAX_PIXELS` (a ``serving_boxes`` image; an encoded image's declared height x width, read
from its PNG IHDR / JPEG SOF / BMP header BEFORE anything is decoded, so a small file declaring a
huge image costs nothing; all images of one ``serving_bytes`` request together; the padded
per-box outputs N x Hmax x Wmax); crop and box sides >= :data:`MIN_SIDE`.

A request with an empty batch, a side under 8 px, NaN/inf pixels, a bad box (empty, outside the
image, under 8 px; the message names the box's index and values), bytes that are no such image
or a truncated header fails with ``InvalidArgumentError`` naming the input and this contract
(plain-text messages: never the request's raw bytes).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from kerasseg.errors import KerassegError

#: smallest accepted crop side and box side (px) in a serving request
MIN_SIDE = 8
#: most pixels of one image in a request: a ``serving_boxes`` image, an encoded image's declared
#: height x width (checked from its header before decoding), all images of one ``serving_bytes``
#: request together, and the padded per-box outputs of ``serving_boxes``. 50 M pixels hold a
#: 3328 x 4084 mammogram (13.6 M) with room; decoding a 16-bit RGBA PNG at the limit takes
#: about 400 MB, its float32 copy 800 MB.
MAX_PIXELS = 50_000_000
#: most crops in one ``serving_default`` / ``serving_4d`` / ``serving_bytes`` request
MAX_BATCH = 256
#: most boxes in one ``serving_boxes`` / ``serving_boxes_bytes`` request
MAX_BOXES = 64
SIGNATURES = ("serving_default", "serving_4d", "serving_bytes", "serving_boxes", "serving_boxes_bytes")
CONTRACT = (f"float32 [batch, height, width] raw ROI crops with 1 <= batch <= {MAX_BATCH}, height and width "
            f">= {MIN_SIDE} and finite pixels")
BYTES_CONTRACT = (f"encoded PNG (8/16-bit), JPEG or BMP images, each declaring at most {MAX_PIXELS} pixels "
                  "(MAX_PIXELS) in its header")


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
_PNG_SIGNATURE = (137, 80, 78, 71, 13, 10, 26, 10)
_FORMATS = ("unknown", "PNG", "JPEG", "BMP")
#: JPEG markers scanned for the frame header (SOF) before giving up
_JPEG_MARKERS = 4096


def read_image_header(data, max_pixels: int = MAX_PIXELS):
    """``(height, width, format, png_bit_depth)`` int32 scalars an encoded image (a scalar
    tf.string) declares, read from its header without decoding anything.

    PNG: the IHDR chunk (bytes 16..24, big-endian); JPEG: the first frame header (SOF0..SOF15
    markers, found by walking the marker segments); BMP: the BITMAPINFOHEADER width/height
    (bytes 18..26, little-endian; a negative height is a top-down image). ``format`` is 1 (PNG),
    2 (JPEG) or 3 (BMP). Fails with ``InvalidArgumentError`` (a plain-text message naming
    :data:`BYTES_CONTRACT`, never the bytes) for bytes of no such format, a truncated or malformed
    header, or a declared height x width over ``max_pixels``.
    """
    import tensorflow as tf

    pad = 16
    length = tf.strings.length(data)
    raw = tf.concat([tf.io.decode_raw(data, tf.uint8), tf.zeros([pad], tf.uint8)], axis=0)
    last = length + pad - 1

    def byte(i):
        return tf.cast(tf.gather(raw, tf.minimum(i, last)), tf.int32)

    def be32(i):  # int64: a PNG side may be up to 2**31 - 1
        return tf.add_n([tf.cast(byte(i + k), tf.int64) * (256 ** (3 - k)) for k in range(4)])

    def le32(i):  # signed, as TF's BMP decoder reads it
        v = tf.add_n([tf.cast(byte(i + k), tf.int64) * (256 ** k) for k in range(4)])
        return tf.where(v >= 2 ** 31, v - 2 ** 32, v)

    head = tf.cast(raw[:8], tf.int32)
    is_png = tf.reduce_all(tf.equal(head, _PNG_SIGNATURE))
    is_jpeg = tf.logical_and(tf.equal(head[0], 0xFF), tf.equal(head[1], 0xD8))
    is_bmp = tf.logical_and(tf.equal(head[0], ord("B")), tf.equal(head[1], ord("M")))
    fmt = tf.where(is_png, 1, tf.where(is_jpeg, 2, tf.where(is_bmp, 3, 0)))

    def jpeg_size():
        def body(pos, h, w, state):
            b0, m = byte(pos), byte(pos + 1)
            seg = byte(pos + 2) * 256 + byte(pos + 3)
            sof = tf.logical_and(tf.logical_and(m >= 0xC0, m <= 0xCF),
                                 tf.logical_not(tf.reduce_any(tf.equal(m, [0xC4, 0xC8, 0xCC]))))
            alone = tf.logical_or(tf.logical_and(m >= 0xD0, m <= 0xD7), tf.equal(m, 0x01))
            fill = tf.equal(m, 0xFF)
            bad = tf.reduce_any(tf.stack([tf.not_equal(b0, 0xFF), pos + 4 > length,
                                          tf.reduce_any(tf.equal(m, [0xD8, 0xD9, 0xDA])),
                                          tf.logical_and(sof, pos + 9 > length),
                                          tf.logical_and(tf.logical_not(sof | alone | fill), seg < 2)]))
            found = tf.logical_and(sof, tf.logical_not(bad))
            step = tf.where(fill, 1, tf.where(alone, 2, 2 + seg))
            return (pos + step, tf.where(found, byte(pos + 5) * 256 + byte(pos + 6), h),
                    tf.where(found, byte(pos + 7) * 256 + byte(pos + 8), w),
                    tf.where(bad, 2, tf.where(found, 1, 0)))

        _, h, w, state = tf.while_loop(lambda pos, h, w, state: tf.equal(state, 0), body,
                                       (tf.constant(2), tf.constant(0), tf.constant(0), tf.constant(0)),
                                       maximum_iterations=_JPEG_MARKERS)
        ok = tf.equal(state, 1)
        return tf.cast(h, tf.int64), tf.cast(w, tf.int64), ok

    def no_jpeg():
        zero = tf.constant(0, tf.int64)
        return zero, zero, tf.constant(False)

    jh, jw, jpeg_ok = tf.cond(is_jpeg, jpeg_size, no_jpeg)
    png_ok = tf.logical_and(length >= 33, tf.reduce_all(tf.equal(
        tf.stack([byte(12), byte(13), byte(14), byte(15)]), [ord(c) for c in "IHDR"])))
    bmp_h = le32(22)
    height = tf.where(is_png, be32(20), tf.where(is_jpeg, jh, tf.abs(bmp_h)))
    width = tf.where(is_png, be32(16), tf.where(is_jpeg, jw, le32(18)))
    complete = tf.where(is_png, png_ok, tf.where(is_jpeg, jpeg_ok, length >= 26))
    complete = tf.logical_and(complete, tf.logical_and(height > 0, width > 0))
    name = tf.gather(tf.constant(_FORMATS), fmt)
    what = f"kerasseg serving: input image_bytes must hold {BYTES_CONTRACT}"
    known = tf.debugging.Assert(fmt > 0, [f"{what}; got", length, "bytes that start with no PNG, JPEG or BMP "
                                          "signature"])
    with tf.control_dependencies([known]):
        whole = tf.debugging.Assert(complete, [f"{what}; got a truncated or malformed", name, "header (", length,
                                               "bytes)"])
    with tf.control_dependencies([whole]):
        small = tf.debugging.Assert(height * width <= max_pixels, [
            f"{what}; got a", name, "image declaring height x width =", height, width,
            f"pixels, over the limit of {max_pixels} pixels (MAX_PIXELS)"])
    with tf.control_dependencies([small]):
        return (tf.identity(tf.cast(height, tf.int32)), tf.identity(tf.cast(width, tf.int32)),
                tf.identity(fmt), tf.where(is_png, byte(24), 0))


def decode_image_bytes(data):
    """One encoded PNG (8/16-bit) / JPEG / BMP image (a scalar tf.string) -> float32 (H, W) grey.

    Raw stored values (0..255 or 0..65535); colour images become grey with
    :data:`kerasseg.data.imageio.RGB_TO_GREY`; an alpha channel is dropped. The header is checked
    first (:func:`read_image_header`: the format, a complete header, at most :data:`MAX_PIXELS`
    declared pixels), so junk bytes and decompression bombs fail before any decoding.
    """
    import tensorflow as tf

    from kerasseg.data.imageio import RGB_TO_GREY

    data = tf.ensure_shape(data, [])
    _, _, fmt, depth = read_image_header(data)
    with tf.control_dependencies([fmt]):
        data = tf.identity(data)

    def png():
        return tf.cond(tf.equal(depth, 16),
                       lambda: tf.cast(tf.io.decode_png(data, channels=0, dtype=tf.uint16), tf.float32),
                       lambda: tf.cast(tf.io.decode_png(data, channels=0, dtype=tf.uint8), tf.float32))

    def other():
        return tf.cast(tf.io.decode_image(data, channels=0, expand_animations=False), tf.float32)

    img = tf.cond(tf.equal(fmt, 1), png, other)
    img = tf.ensure_shape(img, [None, None, None])
    c = tf.shape(img)[-1]
    weights = tf.constant(RGB_TO_GREY, tf.float32)
    return tf.cond(c >= 3, lambda: tf.tensordot(img[..., :3], weights, axes=1), lambda: img[..., 0])


# --------------------------------------------------------------------------- the serving module
def build_serving_module(model, tta: str = "none", postprocessing: dict | None = None):
    """A ``tf.Module`` with the signature functions (:data:`SIGNATURES`); each validates its input
    and runs :func:`kerasseg.models.ensemble.ensemble_function` (the box signatures through
    :func:`kerasseg.models.whole_image.boxes_function` around the same function).

    Args:
        model: a segmenter (or bare network), a list of them (ensemble members) or an
            :class:`~kerasseg.training.run.EnsembleSource` (its post-processing is used unless
            ``postprocessing`` is given).
        tta: one of :data:`kerasseg.models.ensemble.TTA_MODES`.
        postprocessing: ``{"largest_component": bool, "fill_holes": bool}`` or None.
    """
    import tensorflow as tf

    from kerasseg.models.ensemble import ensemble_function
    from kerasseg.models.whole_image import boxes_function
    from kerasseg.training.run import EnsembleSource

    if isinstance(model, EnsembleSource):
        if postprocessing is None:
            postprocessing = model.postprocessing
        model = model.members
    segment = ensemble_function(model, tta=tta, postprocessing=postprocessing)
    on_boxes = boxes_function(segment, min_side=MIN_SIDE, max_boxes=MAX_BOXES, max_pixels=MAX_PIXELS)

    def at_most_batch(n, name):
        """An Assert that 1 <= n <= MAX_BATCH."""
        return tf.debugging.Assert(tf.logical_and(tf.greater(n, 0), n <= MAX_BATCH), [
            f"kerasseg serving: input {name} must hold 1 to {MAX_BATCH} (MAX_BATCH) images; got batch", n])

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
                ok = tf.logical_and(tf.logical_and(tf.greater(shape[0], 0), shape[0] <= MAX_BATCH),
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
            image_bytes = tf.ensure_shape(image_bytes, [None], name="image_bytes")
            n = tf.shape(image_bytes)[0]
            with tf.control_dependencies([at_most_batch(n, "image_bytes")]):
                image_bytes = tf.identity(image_bytes)
            # the declared sizes, from the headers alone: nothing is decoded before every check passed
            shapes = tf.map_fn(lambda b: tf.stack(read_image_header(b)[:2]), image_bytes,
                               fn_output_signature=tf.TensorSpec([2], tf.int32))
            same = tf.debugging.Assert(tf.reduce_all(tf.equal(shapes, shapes[0])), [
                "kerasseg serving: the images of one image_bytes request must all have the same "
                "height and width; got shapes", shapes])
            with tf.control_dependencies([same]):
                total = tf.cast(n, tf.int64) * tf.cast(shapes[0, 0], tf.int64) * tf.cast(shapes[0, 1], tf.int64)
                room = tf.debugging.Assert(total <= MAX_PIXELS, [
                    f"kerasseg serving: the images of one image_bytes request must hold at most {MAX_PIXELS} "
                    "pixels (MAX_PIXELS) in all; got batch, height, width =", n, shapes[0]])
            with tf.control_dependencies([room]):
                image_bytes = tf.identity(image_bytes)
            x = tf.map_fn(decode_image_bytes, image_bytes,
                          fn_output_signature=tf.TensorSpec([None, None], tf.float32))
            return segment(self._check(x, "image_bytes"))

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="image"),
                                      tf.TensorSpec([None, 4], tf.int32, name="boxes")])
        def serve_boxes(self, image, boxes):
            return on_boxes(image, boxes)

        @tf.function(input_signature=[tf.TensorSpec([], tf.string, name="image_bytes"),
                                      tf.TensorSpec([None, 4], tf.int32, name="boxes")])
        def serve_boxes_bytes(self, image_bytes, boxes):
            image_bytes = tf.ensure_shape(image_bytes, [], name="image_bytes")
            return on_boxes(decode_image_bytes(image_bytes), boxes)

    return SegmentationServing()


def signatures_of(module) -> dict:
    """The concrete functions to save, by signature name (:data:`SIGNATURES`)."""
    return {"serving_default": module.serve.get_concrete_function(),
            "serving_4d": module.serve_4d.get_concrete_function(),
            "serving_bytes": module.serve_bytes.get_concrete_function(),
            "serving_boxes": module.serve_boxes.get_concrete_function(),
            "serving_boxes_bytes": module.serve_boxes_bytes.get_concrete_function()}


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
            "serving_boxes": {"image": "float32 [height, width]: one whole image or a large region of one",
                              "boxes": "int32 [N, 4] (y0, x0, y1, x1) pixels, ends exclusive, inside the "
                                       f"image, 1 <= N <= {MAX_BOXES}, sides >= {MIN_SIDE}"},
            "serving_boxes_bytes": {"image_bytes": "string scalar: one encoded PNG (8/16-bit), JPEG or BMP "
                                                   "image", "boxes": "as serving_boxes"},
            "boxes_outputs": {
                "probability": "float32 [N, Hmax, Wmax]: box i's mass probability in [i, :h_i, :w_i], "
                               "zero-padded; equal to serving_default on the box's crop",
                "mask": "uint8 [N, Hmax, Wmax], the same padding", "uncertainty": "float32 [N, Hmax, Wmax]",
                "box_size": "int32 [N, 2] (h_i, w_i)",
                "image_mask": "uint8 [height, width]: union of the box masks",
                "image_probability": "float32 [height, width]: max over the boxes covering a pixel, 0 "
                                     "outside all boxes"},
            "limits": {"min_side": MIN_SIDE, "max_batch": MAX_BATCH, "max_boxes": MAX_BOXES,
                       "max_pixels": MAX_PIXELS},
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
    signature (a model-size crop, a 57 x 71 crop of two images, a PNG, a 160 x 200 image with two
    boxes of different sizes, the same as PNG bytes)."""
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    rng = np.random.default_rng(0)
    crop = rng.uniform(0, 4000, (1, size, size)).astype(np.float32)
    crops = rng.uniform(0, 4000, (2, 57, 71)).astype(np.float32)
    png = tf.io.encode_png(tf.constant(rng.integers(0, 65535, (size, size, 1), dtype=np.uint16))).numpy()
    whole = rng.integers(0, 65535, (160, 200), dtype=np.uint16)
    boxes = np.array([[10, 20, 70, 110], [40, 90, 150, 190]], np.int32)
    whole_png = tf.io.encode_png(tf.constant(whole[..., None])).numpy()
    inputs = [("serving_default", {"image": crop}), ("serving_default", {"image": crops}),
              ("serving_4d", {"image": crop[..., None]}),
              ("serving_bytes", {"image_bytes": np.array([png], dtype=object)}),
              ("serving_boxes", {"image": whole.astype(np.float32), "boxes": boxes}),
              ("serving_boxes_bytes", {"image_bytes": np.array(whole_png, dtype=object), "boxes": boxes})]
    logs = []
    for sig, values in inputs:
        req = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=model_name, signature_name=sig))
        for name, value in values.items():
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
    from kerasseg.fileio import folder_lock, output_dir

    base = output_dir(out, "export folder", create=False)  # before loading the model
    output_dir(base.parent if str(base.parent) else Path("."), "folder of the export folder")
    # one export per base folder at a time: the version is chosen and written under the lock, so two
    # concurrent exports can neither both pick version N nor replace each other's
    with folder_lock(base, "export folder"):
        return _export_locked(source, base, version, force, tta)


def _export_locked(source, base: Path, version, force: bool, tta: str) -> Path:
    """:func:`export_model` once the export folder is locked."""
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
        try:
            _write_saved_model(module, tmp / "model", card, model_name=base.name or "kerasseg")
        except Exception as exc:  # a full disk, a quota, an I/O error: one line naming the target
            why = _write_error(exc)
            if why is None:
                raise
            raise KerassegError(f"cannot write the SavedModel ({why}); nothing was changed", target) from None
        fault_point("export.before_swap")
        if target.exists():  # force: swap, so that a version folder exists at every instant
            _exchange(tmp / "model", target)  # tmp/model now holds the old version
        else:
            os.replace(tmp / "model", target)
        fault_point("export.after_swap")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _write_error(exc: BaseException) -> str | None:
    """The one-line reason of a failed SavedModel write (OSError or TensorFlow's I/O errors such as
    "No space left on device"), without the hidden temporary path; None for other errors."""
    import errno as errno_mod

    import tensorflow as tf

    if isinstance(exc, OSError):
        return exc.strerror or errno_mod.errorcode.get(exc.errno or 0) or str(exc)
    if isinstance(exc, tf.errors.OpError):
        text = (exc.message or str(exc)).strip().splitlines()[0]
        for known in ("No space left on device", "Disk quota exceeded", "Read-only file system",
                      "Permission denied", "Input/output error"):
            if known.lower() in text.lower():
                return known
        return re.sub(r"\S*\.tmp-\S*", "<export folder>", text)[:200]
    return None


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
