"""``kerasseg predict``: segment masses in DICOM/PNG/TIFF images or ``.npz`` ROI datasets.

The model is a training run directory, a ``.keras`` file, a cross-validation folds dir (``kerasseg
fit --folds``: the ensemble of its folds with the post-processing its cv.json chose) or a TF Serving
export (``BASE/NAME`` or ``BASE/NAME/<version>``); all go through the same ``serving_default``
computation (:func:`kerasseg.models.ensemble.ensemble_function`: resize to the model size, the TTA
transforms, normalise, network + CRF of every member, mean, resize back, threshold, post-process),
so ``predict`` on a run and on its export agree.

For a whole image the ROI is given as one or several boxes ``x0,y0,x1,y1`` (x = column; x1, y1
exclusive) or as the bounding box of a hint mask; the image and the boxes then go through the
whole-image graph (:func:`kerasseg.models.whole_image.boxes_function`, the export's ``serving_boxes``:
crop, resize, network, resize back and paste, all in the graph; :meth:`Segmenter.predict_boxes`).
Without either the whole image is taken as the ROI crop. Per input the outputs are
``<stem>_mask.png`` (0/255 at full resolution; with several boxes the union of their masks),
``<stem>_uncertainty.png`` (the std of the mass probability over members x TTA transforms, 8 bit:
``round(255 * std / 0.5)``, 0 outside the ROIs), ``<stem>_overlay.png`` and ``<stem>.json`` (boxes,
area in px and mm^2 when the pixel spacing is known, perimeter from ``skimage.measure.perimeter``, the
same per box). With ``--dicom-seg`` a DICOM input also gets ``<stem>.seg.dcm`` (DICOM Segmentation of
the full-size mask, BINARY, or FRACTIONAL probability with ``--probability``) and ``<stem>.sr.dcm``
(TID 1500 SR, one mass per box), written by :mod:`kerasseg.export.dicom`. An ``.npz`` dataset gives
``<stem>_predictions.npz`` (ids, prob, pred, uncertainty) and ``<stem>.json`` per ROI.

``<stem>`` is the input's file stem, made unique within one run (:func:`kerasseg.export.outputs.unique_stems`:
``a/scan.png``, ``b/scan.png`` -> ``scan``, ``scan-2``), so one input's results never replace another's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kerasseg.data.imageio import read_image  # the one reader, shared with data prepare
from kerasseg.errors import KerassegError
from kerasseg.export.outputs import measure, overlay, uncertainty_to_uint8, unique_stems, write_png
from kerasseg.export.roi_input import as_boxes, box_from_hint, check_box, serving_boxes
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
            self._export = Path(export)
        else:
            src = load_ensemble(source)
            self._module = build_serving_module(src, tta=tta)
            self._fn = self._module.serve
            self._boxes_fn = self._module.serve_boxes
            self.kind = "keras"
            self._export = None
            self._config_name = (src.config or {}).get("name")
            self._n_members = len(src.members)
            if src.folds_dir is not None:
                self._model_files = [Path(src.folds_dir) / f"fold-{k}" / "model.keras"
                                     for k in range(1, len(src.members) + 1)]
            elif src.run_dir is not None:
                self._model_files = [Path(src.run_dir) / "model.keras"]
            elif isinstance(source, (str, Path)) and Path(source).is_file():
                self._model_files = [Path(source)]
            else:  # an in-memory keras.Model: no file to identify it by
                self._model_files = []

    def _model_card(self) -> dict:
        """An export's ``assets/model_card.json`` ({} when missing or unreadable)."""
        import json

        try:
            card = json.loads((self._export / "assets" / "model_card.json").read_text())
        except (OSError, ValueError):
            return {}
        return card if isinstance(card, dict) else {}

    @property
    def has_uncertainty(self) -> bool:
        """True when the ``uncertainty`` output means something: an ensemble or TTA (more than one
        prediction per pixel) and, for an export, a graph that has that output."""
        if self._export is None:
            return self._n_members > 1 or self.tta != "none"
        if "uncertainty" not in (self._fn.structured_outputs or {}):
            return False
        ensemble = self._model_card().get("ensemble") or {}
        members = ensemble.get("members") or [None]
        return len(members) > 1 or ensemble.get("tta", "none") != "none"

    def algorithm(self) -> dict:
        """The Algorithm Identification of the DICOM outputs (:mod:`kerasseg.export.dicom`).

        ``{"name": "kerasseg", "version": kerasseg's version, "config": the config name (None when
        unknown), and the model's fingerprint}``: ``model_card_sha256`` for an export (SHA-256 of its
        ``assets/model_card.json``; ``saved_model_sha256`` of ``saved_model.pb`` when it has no card),
        ``model_sha256`` for a run dir / ``.keras`` file (SHA-256 of the ``model.keras`` file; for a
        folds dir of ``fold-1/model.keras``, ``fold-2/model.keras``, ... read one after the other);
        ``tta`` when a run / folds dir is predicted with TTA (an export's TTA is in its model card).
        Cached after the first call.
        """
        cached = getattr(self, "_algorithm", None)
        if cached is not None:
            return dict(cached)
        from kerasseg import __version__

        alg = {"name": "kerasseg", "version": __version__, "config": None}
        if self._export is not None:
            config = self._model_card().get("config")
            alg["config"] = config.get("name") if isinstance(config, dict) else None
            card = self._export / "assets" / "model_card.json"
            if card.is_file():
                alg["model_card_sha256"] = _sha256([card])
            else:
                alg["saved_model_sha256"] = _sha256([self._export / "saved_model.pb"])
        else:
            alg["config"] = self._config_name
            if self._model_files:
                alg["model_sha256"] = _sha256(self._model_files)
            if self.tta != "none":
                alg["tta"] = self.tta
        self._algorithm = alg
        return dict(alg)

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


def _sha256(paths) -> str | None:
    """Hex SHA-256 of the files ``paths`` read one after the other (None when one cannot be read)."""
    import hashlib

    digest = hashlib.sha256()
    try:
        for path in paths:
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


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


def _check_outputs(paths, protect, path) -> None:
    """Refuse (one line naming the input) to write an output onto an input file of the same run
    (``protect``: resolved paths), which a later input would then read as the wrong file."""
    for out in paths:
        if Path(out).resolve() in protect:
            raise KerassegError(f"its output {out} would replace an input file of this run; give another --out",
                                path)


def _check_flags(roi, mask_hint, dicom_seg: bool, probability: bool) -> None:
    if roi is not None and mask_hint is not None:
        raise KerassegError("give either --roi or --mask-hint, not both")
    if dicom_seg and roi is None and mask_hint is None:
        raise KerassegError("--dicom-seg needs --roi or --mask-hint: the SEG and SR report the masses of the boxes")
    if probability and not dicom_seg:
        raise KerassegError("--probability applies with --dicom-seg (it makes the SEG a FRACTIONAL probability map)")


def predict_image(segmenter, path, out_dir, roi=None, mask_hint=None, *, stem=None, dicom_seg=False,
                  probability=False, protect=()) -> dict:
    """Segment one DICOM/PNG/TIFF image; writes mask, uncertainty, overlay and JSON into ``out_dir`` (and
    with ``dicom_seg`` a DICOM SEG and SR); returns the JSON dict.

    Args:
        segmenter: a :class:`Segmenter`.
        roi: None, one box ``(x0, y0, x1, y1)`` / ``"x0,y0,x1,y1"``, or a list of boxes (all through one
            ``serving_boxes`` call; the mask is their union).
        mask_hint: a hint mask (file or array): its non-zero bounding box is the ROI.
        stem: the name of the outputs (default: the input's file stem; :func:`predict_inputs` makes it
            unique within a run, :func:`kerasseg.export.outputs.unique_stems`).
        dicom_seg: also write ``<stem>.seg.dcm`` (DICOM Segmentation of the full-size mask) and
            ``<stem>.sr.dcm`` (TID 1500 SR: one mass per box) for a DICOM input with boxes.
        probability: the SEG is FRACTIONAL (the full-size probability) instead of BINARY.
        protect: resolved paths no output may replace (the run's inputs).
    """
    path = Path(path)
    out_dir = Path(out_dir)
    _check_flags(roi, mask_hint, dicom_seg, probability)
    image = read_image(path)
    if dicom_seg and image.meta.get("format") != "dicom":
        raise KerassegError("--dicom-seg needs a DICOM input: this image has no patient, study or source image "
                            "for a SEG/SR to reference", path)
    h, w = image.pixels.shape
    if h == 0 or w == 0:
        raise KerassegError("image is empty", path)
    if roi is not None:
        boxes = [check_box(b, (h, w), path) for b in as_boxes(roi)]
    elif mask_hint is not None:
        hint = read_image(mask_hint).pixels if not isinstance(mask_hint, np.ndarray) else np.asarray(mask_hint)
        boxes = [check_box(box_from_hint(hint, (h, w), mask_hint if not isinstance(mask_hint, np.ndarray) else path),
                           (h, w), path)]
    else:
        boxes = None
    stem = path.stem if stem is None else str(stem)
    paths = {"mask": out_dir / f"{stem}_mask.png", "uncertainty": out_dir / f"{stem}_uncertainty.png",
             "overlay": out_dir / f"{stem}_overlay.png", "json": out_dir / f"{stem}.json"}
    if dicom_seg:
        paths.update(seg=out_dir / f"{stem}.seg.dcm", sr=out_dir / f"{stem}.sr.dcm")
    _check_outputs(paths.values(), protect, path)
    if boxes is None:  # the whole image is the ROI crop
        boxes_used = [(0, 0, w, h)]
        out = segmenter.predict(image.pixels[np.newaxis])
        probs, uncs = [out["probability"][0]], [out["uncertainty"][0]]
        full = out["mask"][0].astype(np.uint8)
        full_prob = out["probability"][0]
    else:  # the whole image and the boxes through the whole-image graph (serving_boxes)
        boxes_used = boxes
        out = segmenter.predict_boxes(image.pixels, serving_boxes(boxes), path)
        probs = [out["probability"][i, :y1 - y0, :x1 - x0] for i, (x0, y0, x1, y1) in enumerate(boxes)]
        uncs = [out["uncertainty"][i, :y1 - y0, :x1 - x0] for i, (x0, y0, x1, y1) in enumerate(boxes)]
        full = out["image_mask"].astype(np.uint8)
        full_prob = out["image_probability"]
    full_unc = np.zeros((h, w), np.uint8)
    for (x0, y0, x1, y1), unc in zip(boxes_used, uncs):
        np.maximum(full_unc[y0:y1, x0:x1], uncertainty_to_uint8(unc), out=full_unc[y0:y1, x0:x1])
    output_dir(out_dir)
    write_png(paths["mask"], full * np.uint8(255))
    write_png(paths["uncertainty"], full_unc)
    write_png(paths["overlay"], overlay(image.pixels, full, boxes_used))
    b = np.asarray(boxes_used)
    info = {
        "input": str(path),
        "image_size": [int(w), int(h)],
        # the box; with several boxes the box spanning them all (each one is in "boxes")
        "box": [int(b[:, 0].min()), int(b[:, 1].min()), int(b[:, 2].max()), int(b[:, 3].max())],
        "boxes": [[int(v) for v in box] for box in boxes_used],
        "pixel_spacing_mm": list(image.spacing_mm) if image.spacing_mm else None,
        **measure(full, image.spacing_mm),
        "max_probability": float(max(p.max() for p in probs)),
        "mean_uncertainty": float(np.concatenate([u.ravel() for u in uncs]).mean()),
        "per_box": [{"box": [int(v) for v in (x0, y0, x1, y1)], **measure(full[y0:y1, x0:x1], image.spacing_mm),
                     "max_probability": float(p.max()), "mean_uncertainty": float(u.mean())}
                    for (x0, y0, x1, y1), p, u in zip(boxes_used, probs, uncs)],
        "mask": str(paths["mask"]),
        "uncertainty": str(paths["uncertainty"]),
        "overlay": str(paths["overlay"]),
    }
    if dicom_seg:
        info.update(_write_seg_and_sr(segmenter, path, full, full_prob if probability else None, boxes, uncs,
                                 paths["seg"], paths["sr"]))
    write_json(paths["json"], info)
    return info


def _write_seg_and_sr(segmenter, path, mask, probability, boxes, uncertainties, seg_path, sr_path) -> dict:
    """The SEG and SR of one DICOM input (:mod:`kerasseg.export.dicom`); returns their JSON entries.

    ``mask`` (and ``probability``) are full size in the source's stored pixel grid: ``read_image``
    never moves pixels (MONOCHROME1 only inverts values; right breasts are not mirrored), and the boxes
    are pasted where they were cut. One mass per box: :func:`~kerasseg.export.dicom.measure_masses` of
    the mask inside the box, and, when the model has an uncertainty (ensemble or TTA), the mean of the
    box's own uncertainty map over those mask pixels.
    """
    from kerasseg.export.dicom import measure_masses, source_spacing, write_seg, write_sr

    algorithm = segmenter.algorithm()
    prob = None if probability is None else np.clip(np.asarray(probability, np.float32), 0.0, 1.0)
    seg = write_seg(path, mask, seg_path, probability=prob, algorithm=algorithm)
    spacing, _ = source_spacing(path)
    masses = measure_masses(mask, spacing, boxes=boxes)
    if segmenter.has_uncertainty:
        for m, (x0, y0, x1, y1), unc in zip(masses, boxes, uncertainties):
            sel = mask[y0:y1, x0:x1].astype(bool)
            m["mean_uncertainty"] = float(unc[sel].mean()) if sel.any() else None
    sr = write_sr(path, seg.dataset, masses, sr_path, algorithm=algorithm)
    return {"seg": str(seg.path), "seg_type": str(seg.dataset.SegmentationType),
            "sr": None if sr.path is None else str(sr.path),
            "masses": [_as_lists(m) for m in masses], "algorithm": algorithm,
            "notes": [n for n in (seg.note, sr.note) if n]}


def _as_lists(value):
    """Tuples as lists, recursively: the returned dict equals the JSON written."""
    if isinstance(value, dict):
        return {k: _as_lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_lists(v) for v in value]
    return value


def predict_npz(segmenter, path, out_dir, *, stem=None, protect=()) -> dict:
    """Segment every ROI of a ``.npz`` dataset; writes ``<stem>_predictions.npz`` and ``<stem>.json``."""
    from kerasseg.data.dataset import load_npz

    path = Path(path)
    out_dir = Path(out_dir)
    stem = path.stem if stem is None else str(stem)
    pred_path, json_path = out_dir / f"{stem}_predictions.npz", out_dir / f"{stem}.json"
    _check_outputs((pred_path, json_path), protect, path)
    ds = load_npz(path)
    if len(ds.images) == 0:
        raise KerassegError("dataset holds no ROI", path)
    out = segmenter.predict(ds.images)
    prob, pred, unc = out["probability"], out["mask"], out["uncertainty"]
    output_dir(out_dir)

    write_npz(pred_path, ids=ds.ids, prob=prob, pred=pred, uncertainty=unc, data_hash=np.array(ds.data_hash()))
    rois = []
    for i, rid in enumerate(ds.ids):
        spacing = None if ds.spacing_mm is None else float(ds.spacing_mm[i])
        entry = {"id": str(rid), **measure(pred[i], spacing)}
        if ds.boxes is not None:
            entry["box"] = [int(v) for v in ds.boxes[i]]
        rois.append(entry)
    info = {"input": str(path), "n": int(len(ds.ids)), "predictions": str(pred_path), "rois": rois}
    write_json(json_path, info)
    return info


def predict_inputs(source, inputs, out_dir, roi=None, mask_hint=None, on_result=None, progress=False,
                   tta: str = "none", *, dicom_seg: bool = False, probability: bool = False):
    """Run :func:`predict_image` / :func:`predict_npz` over ``inputs``; one bad input does not stop the others.

    ``roi``: None, one box ``(x0, y0, x1, y1)`` or ``"x0,y0,x1,y1"``, or a list of boxes (applied to
    every image). ``dicom_seg`` / ``probability``: see :func:`predict_image` (``dicom_seg`` needs ``roi``
    or ``mask_hint``; a non-DICOM input is then an error for that input).

    Output names: each input's outputs are named after its stem, made unique within the run by
    :func:`kerasseg.export.outputs.unique_stems` (``a/scan.png``, ``b/scan.png`` -> ``scan``, ``scan-2``),
    so no input's results replace another's; an output that would replace one of the run's input files
    is an error for that input. Files of an earlier run with the same names are replaced.

    Returns ``(results, failures)``: results maps input -> JSON dict, failures maps input -> message.
    ``on_result(path, info_or_None, error_or_None)`` is called after each input.
    """
    roi = as_boxes(roi)
    _check_flags(roi, mask_hint, dicom_seg, probability)
    output_dir(out_dir, create=False)  # before loading the model
    segmenter = source if isinstance(source, Segmenter) else Segmenter(source, tta=tta)
    items = list(inputs)
    stems = unique_stems(items)
    protect = {Path(p).resolve() for p in items}
    if mask_hint is not None and not isinstance(mask_hint, np.ndarray):
        protect.add(Path(mask_hint).resolve())
    results, failures = {}, {}
    pairs = list(zip(items, stems))
    if progress:
        from tqdm import tqdm

        pairs = tqdm(pairs, desc="predict", unit="input")
    for inp, stem in pairs:
        try:
            if Path(inp).suffix.lower() == ".npz":
                if dicom_seg:
                    raise KerassegError("--dicom-seg needs a DICOM input: an .npz dataset holds ROI crops, no "
                                        "patient, study or source image", inp)
                if roi is not None or mask_hint is not None:
                    raise KerassegError("--roi/--mask-hint do not apply to .npz datasets (they hold ROI crops)", inp)
                info = predict_npz(segmenter, inp, out_dir, stem=stem, protect=protect)
            else:
                info = predict_image(segmenter, inp, out_dir, roi=roi, mask_hint=mask_hint, stem=stem,
                                     dicom_seg=dicom_seg, probability=probability, protect=protect)
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
