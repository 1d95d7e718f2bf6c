"""``kerasseg predict``: segment masses in DICOM/PNG/TIFF images or ``.npz`` ROI datasets.

The model is a training run directory, a ``.keras`` file, a cross-validation folds dir (``kerasseg
fit --folds``: the ensemble of its folds with the post-processing its cv.json chose) or a TF Serving
export (``BASE/NAME`` or ``BASE/NAME/<version>``); all go through the same ``serving_default``
computation (:func:`kerasseg.models.ensemble.ensemble_function`: resize to the model size, the TTA
transforms, normalise, network + CRF of every member, mean, resize back, threshold, post-process),
so ``predict`` on a run and on its export agree.

For a whole image the ROI is given as a box ``x0,y0,x1,y1`` (x = column; x1, y1 exclusive) or as the
bounding box of a hint mask; the image and the box then go through the whole-image graph
(:func:`kerasseg.models.whole_image.boxes_function`, the export's ``serving_boxes``: crop, resize,
network, resize back and paste, all in the graph; :meth:`Segmenter.predict_boxes`). Without either
the whole image is taken as the ROI crop. Per input the
outputs are ``<stem>_mask.png`` (0/255 at full resolution), ``<stem>_uncertainty.png`` (the std of the
mass probability over members x TTA transforms, 8 bit: ``round(255 * std / 0.5)``, 0 outside the ROI),
``<stem>_overlay.png`` and ``<stem>.json`` (box, area in px and mm^2 when the pixel spacing is known,
perimeter from ``skimage.measure.perimeter``). An ``.npz`` dataset gives ``<stem>_predictions.npz``
(ids, prob, pred, uncertainty) and ``<stem>.json`` per ROI.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kerasseg.data.imageio import read_image  # the one reader, shared with data prepare
from kerasseg.errors import KerassegError
from kerasseg.export.outputs import measure, overlay, uncertainty_to_uint8, write_png
from kerasseg.export.roi_input import box_from_hint, check_box, parse_roi, serving_boxes
from kerasseg.fileio import output_dir, write_json, write_npz


# --------------------------------------------------------------------------- the segmenter
class Segmenter:
    """Wraps a run dir / ``.keras`` file / folds dir / TF Serving export as
    ``images (B,h,w) -> (prob, mask)`` (:meth:`predict` adds the uncertainty).

    A run, ``.keras`` file or folds dir runs the very function that export saves as
    ``serving_default`` (:func:`kerasseg.export.savedmodel.build_serving_module`, with ``tta``);
    an export runs its loaded signature (its TTA is part of it: ``tta`` must be ``"none"``).
    """

    def __init__(self, source, batch_size: int = 32, tta: str = "none"):
        from kerasseg.export.savedmodel import build_serving_module, find_export, load_ensemble
        from kerasseg.models.ensemble import tta_transforms

        self.batch_size = int(batch_size)
        self.source = source
        self.tta = tta
        tta_transforms(tta)  # a one-line error for an unknown mode
        export = find_export(source) if isinstance(source, (str, Path)) and Path(source).is_dir() else None
        if export is not None:
            if tta != "none":
                raise KerassegError("--tta applies to run dirs, .keras files and folds dirs; an export has "
                                    "its TTA built in (see its assets/model_card.json)", export)
            import tensorflow as tf

            try:
                self._loaded = tf.saved_model.load(str(export))
                self._fn = self._loaded.signatures["serving_default"]
            except Exception as exc:  # noqa: BLE001 - a broken export is a user-input problem
                raise KerassegError(f"cannot load SavedModel: {str(exc).splitlines()[0]}", export) from None
            # exports written before the whole-image signature: boxes are cropped here instead
            self._boxes_fn = self._loaded.signatures.get("serving_boxes")
            self.kind = "export"
        else:
            src = load_ensemble(source)
            self._module = build_serving_module(src, tta=tta)
            self._fn = self._module.serve
            self._boxes_fn = self._module.serve_boxes
            self.kind = "keras"

    def __call__(self, images):
        """Segment ROI crops ``images`` float (B, h, w) or (B, h, w, 1); returns (prob float32, mask uint8)."""
        out = self.predict(images)
        return out["probability"], out["mask"]

    def predict(self, images) -> dict:
        """Segment ROI crops ``images`` float (B, h, w) or (B, h, w, 1).

        Returns ``{"probability": float32, "mask": uint8, "uncertainty": float32}`` (B, h, w) NumPy
        arrays (uncertainty 0 from an export written before it had that output).
        """
        import tensorflow as tf

        x = np.asarray(images, dtype=np.float32)
        if x.ndim == 4 and x.shape[-1] == 1:
            x = x[..., 0]
        if x.ndim != 3:
            raise KerassegError(
                f"images must be [batch, height, width] or [batch, height, width, 1], got shape {tuple(x.shape)}"
            )
        from kerasseg.export.savedmodel import MIN_SIDE

        if x.shape[1] < MIN_SIDE or x.shape[2] < MIN_SIDE:
            raise KerassegError(f"ROI crops must be at least {MIN_SIDE} x {MIN_SIDE} pixels, got shape {tuple(x.shape)}")
        if not np.all(np.isfinite(x)):
            raise KerassegError("images contain NaN or infinite values")
        dtypes = {"probability": np.float32, "mask": np.uint8, "uncertainty": np.float32}
        parts = {k: [] for k in dtypes}
        for i in range(0, len(x), self.batch_size):
            out = self._fn(image=tf.constant(x[i:i + self.batch_size]))
            for k in dtypes:
                parts[k].append(out[k].numpy() if k in out else np.zeros(out["probability"].shape, dtypes[k]))
        return {k: (np.concatenate(v).astype(dtypes[k]) if v else np.zeros(x.shape, dtypes[k]))
                for k, v in parts.items()}

    def predict_boxes(self, image, boxes, path=None) -> dict:
        """Segment boxes of a whole image through the whole-image graph (``serving_boxes``).

        Args:
            image: float (H, W) whole image (raw intensities).
            boxes: int (N, 4) ``(y0, x0, y1, x1)`` pixels, ends exclusive (the order of
                ``serving_boxes``; :func:`kerasseg.export.roi_input.serving_boxes` converts
                ``--roi`` boxes).
            path: the input file, named in errors.

        Returns:
            NumPy arrays of :data:`kerasseg.models.whole_image.OUTPUTS`: ``probability`` float32
            (N, Hmax, Wmax), ``mask`` uint8 and ``uncertainty`` float32 (box i in ``[i, :h_i, :w_i]``,
            zero-padded), ``box_size`` int32 (N, 2), ``image_mask`` uint8 (H, W) and
            ``image_probability`` float32 (H, W).

        The boxes are checked here first (one-line KerassegError). An image over
        :data:`kerasseg.export.savedmodel.MAX_PIXELS` is sent as the region spanning the boxes
        (the per-box results depend only on the pixels inside each box).
        """
        import tensorflow as tf

        from kerasseg.export import savedmodel

        x = np.asarray(image, dtype=np.float32)
        if x.ndim != 2:
            raise KerassegError(f"image must be [height, width], got shape {tuple(x.shape)}", path)
        b = np.asarray(boxes)
        if b.ndim != 2 or b.shape[1] != 4 or len(b) == 0:
            raise KerassegError(f"boxes must be [N, 4] (y0, x0, y1, x1) with N >= 1, got shape {tuple(b.shape)}", path)
        if len(b) > savedmodel.MAX_BOXES:
            raise KerassegError(f"at most {savedmodel.MAX_BOXES} boxes per image, got {len(b)}", path)
        b = b.astype(np.int64)
        for y0, x0, y1, x1 in b:
            check_box((x0, y0, x1, y1), x.shape, path, min_side=savedmodel.MIN_SIDE)
            if not np.all(np.isfinite(x[y0:y1, x0:x1])):
                raise KerassegError(f"ROI {x0},{y0},{x1},{y1} contains NaN or infinite values", path)
        oy, ox = 0, 0
        if x.size > savedmodel.MAX_PIXELS:  # only the region the boxes span goes to the graph
            oy, ox = int(b[:, 0].min()), int(b[:, 1].min())
            ey, ex = int(b[:, 2].max()), int(b[:, 3].max())
            if (ey - oy) * (ex - ox) > savedmodel.MAX_PIXELS:
                raise KerassegError(f"the boxes span {ey - oy} x {ex - ox} pixels, more than the "
                                    f"{savedmodel.MAX_PIXELS} pixels of one request", path)
            region, rboxes = x[oy:ey, ox:ex], b - np.array([oy, ox, oy, ox])
        else:
            region, rboxes = x, b
        if self._boxes_fn is None:
            out = self._crop_boxes(region, rboxes)
        else:
            try:
                res = self._boxes_fn(image=tf.constant(region), boxes=tf.constant(rboxes.astype(np.int32)))
            except tf.errors.InvalidArgumentError as exc:
                raise KerassegError(_graph_error(exc), path) from None
            out = {k: v.numpy() for k, v in res.items()}
        if (oy, ox) != (0, 0) or region.shape != x.shape:
            for k in ("image_mask", "image_probability"):
                full = np.zeros(x.shape, out[k].dtype)
                full[oy:oy + region.shape[0], ox:ox + region.shape[1]] = out[k]
                out[k] = full
        return out

    def _crop_boxes(self, image, boxes) -> dict:
        """``predict_boxes`` for an export without ``serving_boxes``: each box cropped in NumPy."""
        hs, ws = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        n, hmax, wmax = len(boxes), int(hs.max()), int(ws.max())
        out = {"probability": np.zeros((n, hmax, wmax), np.float32), "mask": np.zeros((n, hmax, wmax), np.uint8),
               "uncertainty": np.zeros((n, hmax, wmax), np.float32),
               "box_size": np.stack([hs, ws], axis=1).astype(np.int32),
               "image_mask": np.zeros(image.shape, np.uint8), "image_probability": np.zeros(image.shape, np.float32)}
        for i, (y0, x0, y1, x1) in enumerate(boxes):
            one = self.predict(image[np.newaxis, y0:y1, x0:x1])
            for k in ("probability", "mask", "uncertainty"):
                out[k][i, :y1 - y0, :x1 - x0] = one[k][0]
            out["image_mask"][y0:y1, x0:x1] |= one["mask"][0]
            np.maximum(out["image_probability"][y0:y1, x0:x1], one["probability"][0],
                       out=out["image_probability"][y0:y1, x0:x1])
        return out


def _graph_error(exc) -> str:
    """The one-line text of a graph's InvalidArgumentError (its assertion message, brackets dropped)."""
    msg = str(getattr(exc, "message", exc))
    if "assertion failed:" in msg:
        text = msg.split("assertion failed:", 1)[1].strip().splitlines()[0]
        return " ".join(part.strip("[] ") for part in text.split("] [")).strip()
    lines = [ln.strip() for ln in msg.splitlines() if ln.strip() and not ln.strip().startswith(("[[", "File "))]
    return lines[-1] if lines else "the model refused the request"


# --------------------------------------------------------------------------- reading inputs
# Images are read by kerasseg.data.imageio.read_image (imported above), the reader data prepare uses.


def predict_image(segmenter, path, out_dir, roi=None, mask_hint=None) -> dict:
    """Segment one DICOM/PNG/TIFF image; writes mask, overlay and JSON into ``out_dir``; returns the JSON dict."""
    path = Path(path)
    out_dir = Path(out_dir)
    image = read_image(path)
    h, w = image.pixels.shape
    if h == 0 or w == 0:
        raise KerassegError("image is empty", path)
    if roi is not None and mask_hint is not None:
        raise KerassegError("give either --roi or --mask-hint, not both")
    if roi is not None:
        box = check_box(roi, (h, w), path)
    elif mask_hint is not None:
        hint = read_image(mask_hint).pixels if not isinstance(mask_hint, np.ndarray) else np.asarray(mask_hint)
        box = check_box(box_from_hint(hint, (h, w), mask_hint if not isinstance(mask_hint, np.ndarray) else path),
                        (h, w), path)
    else:
        box = None
    full_unc = np.zeros((h, w), np.uint8)
    if box is None:  # the whole image is the ROI crop
        x0, y0, x1, y1 = 0, 0, w, h
        out = segmenter.predict(image.pixels[np.newaxis])
        prob, unc = out["probability"][0], out["uncertainty"][0]
        full = out["mask"][0].astype(np.uint8)
    else:  # the whole image and the box through the whole-image graph (serving_boxes)
        x0, y0, x1, y1 = box
        out = segmenter.predict_boxes(image.pixels, serving_boxes([box]), path)
        prob = out["probability"][0, :y1 - y0, :x1 - x0]
        unc = out["uncertainty"][0, :y1 - y0, :x1 - x0]
        full = out["image_mask"].astype(np.uint8)
    full_unc[y0:y1, x0:x1] = uncertainty_to_uint8(unc)
    output_dir(out_dir)
    stem = path.stem
    mask_path = out_dir / f"{stem}_mask.png"
    unc_path = out_dir / f"{stem}_uncertainty.png"
    overlay_path = out_dir / f"{stem}_overlay.png"
    write_png(mask_path, full * np.uint8(255))
    write_png(unc_path, full_unc)
    write_png(overlay_path, overlay(image.pixels, full, (x0, y0, x1, y1)))
    info = {
        "input": str(path),
        "image_size": [int(w), int(h)],
        "box": [int(x0), int(y0), int(x1), int(y1)],
        "pixel_spacing_mm": list(image.spacing_mm) if image.spacing_mm else None,
        **measure(full, image.spacing_mm),
        "max_probability": float(prob.max()),
        "mean_uncertainty": float(unc.mean()),
        "mask": str(mask_path),
        "uncertainty": str(unc_path),
        "overlay": str(overlay_path),
    }
    write_json(out_dir / f"{stem}.json", info)
    return info


def predict_npz(segmenter, path, out_dir) -> dict:
    """Segment every ROI of a ``.npz`` dataset; writes ``<stem>_predictions.npz`` and ``<stem>.json``."""
    from kerasseg.data.dataset import load_npz

    path = Path(path)
    out_dir = Path(out_dir)
    ds = load_npz(path)
    if len(ds.images) == 0:
        raise KerassegError("dataset holds no ROI", path)
    out = segmenter.predict(ds.images)
    prob, pred, unc = out["probability"], out["mask"], out["uncertainty"]
    output_dir(out_dir)
    pred_path = out_dir / f"{path.stem}_predictions.npz"

    write_npz(pred_path, ids=ds.ids, prob=prob, pred=pred, uncertainty=unc, data_hash=np.array(ds.data_hash()))
    rois = []
    for i, rid in enumerate(ds.ids):
        spacing = None if ds.spacing_mm is None else float(ds.spacing_mm[i])
        entry = {"id": str(rid), **measure(pred[i], spacing)}
        if ds.boxes is not None:
            entry["box"] = [int(v) for v in ds.boxes[i]]
        rois.append(entry)
    info = {"input": str(path), "n": int(len(ds.ids)), "predictions": str(pred_path), "rois": rois}
    write_json(out_dir / f"{path.stem}.json", info)
    return info


def predict_inputs(source, inputs, out_dir, roi=None, mask_hint=None, on_result=None, progress=False,
                   tta: str = "none"):
    """Run :func:`predict_image` / :func:`predict_npz` over ``inputs``; one bad input does not stop the others.

    Returns ``(results, failures)``: results maps input -> JSON dict, failures maps input -> message.
    ``on_result(path, info_or_None, error_or_None)`` is called after each input.
    """
    output_dir(out_dir, create=False)  # before loading the model
    segmenter = source if isinstance(source, Segmenter) else Segmenter(source, tta=tta)
    if isinstance(roi, str):
        roi = parse_roi(roi)
    results, failures = {}, {}
    items = list(inputs)
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc="predict", unit="input")
    for inp in items:
        try:
            if Path(inp).suffix.lower() == ".npz":
                if roi is not None or mask_hint is not None:
                    raise KerassegError("--roi/--mask-hint do not apply to .npz datasets (they hold ROI crops)", inp)
                info = predict_npz(segmenter, inp, out_dir)
            else:
                info = predict_image(segmenter, inp, out_dir, roi=roi, mask_hint=mask_hint)
        except KerassegError as exc:
            msg = str(exc)
            if str(inp) not in msg:
                msg = f"{inp}: {msg}"
            failures[str(inp)] = msg
            if on_result:
                on_result(inp, None, msg)
            continue
        results[str(inp)] = info
        if on_result:
            on_result(inp, info, None)
    return results, failures
