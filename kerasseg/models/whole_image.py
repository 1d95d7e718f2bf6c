"""Whole-image inference: one mammogram (or a large region of one) and N boxes, in one graph.

:func:`boxes_function` wraps an :func:`kerasseg.models.ensemble.ensemble_function` (or builds one)
into a ``tf.function`` of a whole image ``(H, W)`` and int32 boxes ``(N, 4)`` ``(y0, x0, y1, x1)``
(pixels, ends exclusive). Everything happens in the graph, with core TF ops and no Python loop
over the boxes:

1. the boxes are checked (count, inside the image, not empty, at least ``min_side`` px; the
   padded outputs within ``max_pixels``); a bad request fails with ``InvalidArgumentError``
   naming the first offending box's index and its values;
2. each box is cropped and resized to the model size S with the ONE resize
   (:func:`kerasseg.data.transforms.resize`, the members' interpolation: bicubic) inside a
   ``tf.map_fn``; the members' own ``Resize`` layer is then the identity;
3. the whole ``(N, S, S)`` batch goes once through the ensemble function (members x TTA; its
   ``probability`` and ``uncertainty`` at S are the mean and std, as for a crop of size S);
4. each map is resized back to its box's size exactly as for a crop (bilinear, clipped to
   [0, 1], the uncertainty to [0, 0.5]) and zero-padded to the largest box; ``mask`` is the one
   threshold (:func:`kerasseg.layers.postprocessing.binarize`) and the ensemble's post-processing
   at the box size (zero padding changes neither the largest component nor the holes);
5. the per-box maps are pasted back into the image (a ``tf.while_loop`` over the boxes, each a
   max into its region with ``TensorStridedSliceUpdate``):
   ``image_probability`` is per pixel the max over the boxes that cover it (0 elsewhere),
   ``image_mask`` the union of the box masks.

So box i's outputs equal cropping ``image[y0:y1, x0:x1]`` by hand and running the ensemble
function on that crop (``serving_default`` of an export), up to float rounding (tested to 1e-5).
The TF Serving export exposes it as ``serving_boxes`` / ``serving_boxes_bytes``
(:mod:`kerasseg.export.savedmodel`) and ``kerasseg predict`` runs it for ``--roi`` / ``--mask-hint``.
"""

from __future__ import annotations

from kerasseg.errors import KerassegError

#: the outputs of a :func:`boxes_function`, in order
OUTPUTS = ("probability", "mask", "uncertainty", "box_size", "image_mask", "image_probability")
#: what a valid ``boxes`` input is (the start of every box error message)
BOXES_CONTRACT = "int32 [N, 4] boxes (y0, x0, y1, x1) in pixels, ends exclusive, inside the image"


def _is_ensemble_function(obj) -> bool:
    return all(hasattr(obj, a) for a in ("members", "size", "tta", "postprocessing")) and callable(obj)


def boxes_function(source, tta: str = "none", postprocessing: dict | None = None, *, min_side: int = 1,
                   max_boxes: int | None = None, max_pixels: int | None = None):
    """The whole-image + boxes inference graph, as a ``tf.function``.

    Args:
        source: an :func:`~kerasseg.models.ensemble.ensemble_function` (used as is: its members,
            TTA and post-processing), a :func:`~kerasseg.models.segmenter.segment_function`, or a
            segmenter / list of segmenters (an ensemble function is built with ``tta`` and
            ``postprocessing``).
        tta: TTA mode when ``source`` is a model or a list of models.
        postprocessing: post-processing when ``source`` is a model or a list of models.
        min_side: smallest accepted box side (px).
        max_boxes: most boxes per call (None: no limit).
        max_pixels: most pixels of the image, and of the padded per-box outputs
            (N x largest box height x largest box width); None: no limit.

    Input shape:
        ``image`` float32 ``(H, W)`` raw intensities (pixels inside the boxes must be finite) and
        ``boxes`` int32 ``(N, 4)`` = ``(y0, x0, y1, x1)``, ``0 <= y0 < y1 <= H``,
        ``0 <= x0 < x1 <= W``, N >= 1.

    Output shape:
        a dict: ``probability`` float32 ``(N, Hmax, Wmax)`` and ``mask`` uint8 (box i's values in
        ``[i, :h_i, :w_i]``, zero elsewhere), ``uncertainty`` float32 (the same padding),
        ``box_size`` int32 ``(N, 2)`` = ``(h_i, w_i)``, ``image_mask`` uint8 ``(H, W)`` (union of
        the box masks) and ``image_probability`` float32 ``(H, W)`` (max over the boxes covering
        a pixel; 0 outside every box).

    Example:

    >>> import numpy as np, tensorflow as tf
    >>> from kerasseg.models import build_model, build_segmenter
    >>> fn = boxes_function(build_segmenter(build_model("unet", filters=(4, 8))), min_side=8)
    >>> image = np.random.default_rng(0).normal(1000, 50, (200, 300)).astype("float32")
    >>> out = fn(tf.constant(image), tf.constant([[10, 20, 70, 100], [50, 150, 190, 210]], tf.int32))
    >>> tuple(out["probability"].shape), out["box_size"].numpy().tolist(), tuple(out["image_mask"].shape)
    ((2, 140, 80), [[60, 80], [140, 60]], (200, 300))
    """
    import tensorflow as tf

    from kerasseg.data import transforms
    from kerasseg.layers.postprocessing import binarize, postprocess
    from kerasseg.models.ensemble import ensemble_function
    from kerasseg.models.segmenter import get_preprocessor, quiet_own_retracing

    if _is_ensemble_function(source):
        if tta != "none" or postprocessing is not None:
            raise KerassegError("tta and postprocessing are part of the ensemble function given; "
                                "pass the models to set them")
        fn = source
    elif callable(source) and hasattr(source, "model") and hasattr(source, "final_key"):
        fn = ensemble_function(source.model, tta=tta, postprocessing=postprocessing)  # a segment_function
    else:
        fn = ensemble_function(source, tta=tta, postprocessing=postprocessing)
    for name, value, low in (("min_side", min_side, 1), ("max_boxes", max_boxes, 1), ("max_pixels", max_pixels, 1)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise KerassegError(f"{name} must be an integer >= {low}, got {value!r}")
    size = int(fn.size)
    methods = {get_preprocessor(m).resize.interpolation for m in fn.members}  # one method (ensemble_function checks)
    method = methods.pop()
    post = dict(fn.postprocessing)
    quiet_own_retracing()

    prefix = f"kerasseg serving: input boxes must be {BOXES_CONTRACT}"
    count = "N >= 1" if max_boxes is None else f"1 <= N <= {max_boxes}"
    prefix += f" ({count}, each at least {min_side} x {min_side} px)"

    def first_bad(bad, boxes):
        """(index, values) of the first True of ``bad`` (N,); safe on any N (the data of an Assert
        is computed whether it fails or not)."""
        flags = tf.concat([tf.cast(bad, tf.int32), [1]], axis=0)
        idx = tf.argmax(flags, output_type=tf.int32)
        padded = tf.concat([boxes, tf.fill([1, 4], -1)], axis=0)
        return idx, padded[idx]

    def checked(image, boxes):
        image = tf.ensure_shape(image, [None, None], name="image")
        boxes = tf.ensure_shape(boxes, [None, 4], name="boxes")
        shape = tf.shape(image)
        n = tf.shape(boxes)[0]
        asserts = []

        def require(ok, *data):
            with tf.control_dependencies(asserts):
                asserts.append(tf.debugging.Assert(ok, list(data), summarize=16))

        ok_n = tf.greater(n, 0) if max_boxes is None else tf.logical_and(tf.greater(n, 0), n <= max_boxes)
        require(ok_n, f"{prefix}; got shape", tf.shape(boxes))
        if max_pixels is not None:
            pixels = tf.cast(shape[0], tf.int64) * tf.cast(shape[1], tf.int64)
            require(pixels <= max_pixels, f"kerasseg serving: input image must be float32 [height, width] with "
                    f"at most {max_pixels} pixels; got shape", shape)
        y0, x0, y1, x1 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
        hs, ws = y1 - y0, x1 - x0
        for bad, why in (
                (tf.logical_or(hs <= 0, ws <= 0), ["is empty (need y0 < y1 and x0 < x1)"]),
                (tf.reduce_any(tf.stack([y0 < 0, x0 < 0, y1 > shape[0], x1 > shape[1]]), axis=0),
                 ["lies outside the image of shape", shape]),
                (tf.logical_or(hs < min_side, ws < min_side), [f"is smaller than {min_side} x {min_side} px"])):
            idx, values = first_bad(bad, boxes)
            require(tf.logical_not(tf.reduce_any(bad)), f"{prefix}; box", idx, "(y0, x0, y1, x1) =", values, *why)
        if max_pixels is not None:
            hmax = tf.cast(tf.reduce_max(tf.concat([hs, [0]], 0)), tf.int64)
            wmax = tf.cast(tf.reduce_max(tf.concat([ws, [0]], 0)), tf.int64)
            require(tf.cast(n, tf.int64) * hmax * wmax <= max_pixels,
                    f"kerasseg serving: the padded per-box outputs N x (largest box height) x (largest box "
                    f"width) must hold at most {max_pixels} pixels; got N, height, width =", n, hmax, wmax)
        with tf.control_dependencies(asserts):
            return tf.identity(image), tf.identity(boxes)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="image"),
                                  tf.TensorSpec([None, 4], tf.int32, name="boxes")])
    def boxes_fn(image, boxes):
        image, boxes = checked(image, boxes)
        hw = boxes[:, 2:] - boxes[:, :2]

        def crop(box):
            part = tf.slice(image, box[:2], box[2:] - box[:2])
            small = transforms.resize(part[tf.newaxis], size, method=method)[0]
            return tf.ensure_shape(small, [size, size]), tf.reduce_all(tf.math.is_finite(part))

        x, finite = tf.map_fn(crop, boxes, fn_output_signature=(tf.TensorSpec([size, size], tf.float32),
                                                                tf.TensorSpec([], tf.bool)))
        idx, values = first_bad(tf.logical_not(finite), boxes)
        fail = tf.debugging.Assert(tf.reduce_all(finite), [
            "kerasseg serving: input image must have finite pixels inside the boxes; box", idx,
            "(y0, x0, y1, x1) =", values, "holds NaN or infinite pixels"], summarize=16)
        with tf.control_dependencies([fail]):
            x = tf.identity(x)
        out = fn(x)  # one pass of the (N, S, S) batch: members x TTA at the model size
        hmax, wmax = tf.reduce_max(hw[:, 0]), tf.reduce_max(hw[:, 1])

        def back(args):
            prob, unc, box_hw = args
            prob = tf.clip_by_value(transforms.resize(prob[tf.newaxis], box_hw, method="bilinear"), 0.0, 1.0)
            unc = tf.clip_by_value(transforms.resize(unc[tf.newaxis], box_hw, method="bilinear"), 0.0, 0.5)
            pad = tf.stack([[0, hmax - box_hw[0]], [0, wmax - box_hw[1]]])
            return tf.pad(prob[0], pad), tf.pad(unc[0], pad)

        spec = tf.TensorSpec([None, None], tf.float32)
        prob, unc = tf.map_fn(back, (out["probability"], out["uncertainty"], hw), fn_output_signature=(spec, spec))
        mask = binarize(prob)  # 0 in the padding
        if post["largest_component"] or post["fill_holes"]:
            mask = postprocess(mask, **post)
        # paste back: a graph loop over the boxes, each a max into its region of the image
        n = tf.shape(boxes)[0]

        def paste(i, image_prob, image_mask):
            box, h, w = boxes[i], hw[i, 0], hw[i, 1]
            size_hw = tf.stack([h, w])
            p = tf.maximum(tf.slice(image_prob, box[:2], size_hw), prob[i, :h, :w])
            m = tf.maximum(tf.slice(image_mask, box[:2], size_hw), mask[i, :h, :w])
            image_prob = tf.raw_ops.TensorStridedSliceUpdate(input=image_prob, begin=box[:2], end=box[2:],
                                                             strides=[1, 1], value=p)
            image_mask = tf.raw_ops.TensorStridedSliceUpdate(input=image_mask, begin=box[:2], end=box[2:],
                                                             strides=[1, 1], value=m)
            return i + 1, image_prob, image_mask

        shape = tf.shape(image)
        _, image_prob, image_mask = tf.while_loop(
            lambda i, *_: i < n, paste, (tf.constant(0), tf.zeros(shape, tf.float32), tf.zeros(shape, tf.uint8)))
        return {"probability": prob, "mask": mask, "uncertainty": unc, "box_size": hw,
                "image_mask": image_mask, "image_probability": image_prob}

    boxes_fn.ensemble = fn
    boxes_fn.members = fn.members
    boxes_fn.size = size
    boxes_fn.min_side = min_side
    boxes_fn.max_boxes = max_boxes
    boxes_fn.max_pixels = max_pixels
    return boxes_fn
