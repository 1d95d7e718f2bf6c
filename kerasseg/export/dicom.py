"""Clinical outputs: a predicted mass mask as a DICOM Segmentation and a TID 1500 measurement SR.

The viewers a result must reach (OHIF, 3D Slicer, a PACS) read DICOM, not PNGs. This module writes

* :func:`write_seg`: a **DICOM Segmentation** (``highdicom.seg.Segmentation``), ``BINARY`` from the
  mask, or ``FRACTIONAL`` / ``PROBABILITY`` (8 bit, 255 = 1.0) from a probability map; one segment
  "Mass" (SCT 4147007, category "Morphologically Abnormal Structure" SCT 49755003), algorithm type
  ``AUTOMATIC`` with its Algorithm Identification (name, version, family DCM 123110 "Artificial
  Intelligence", parameters ``config=...`` and ``model_card_sha256=...``);
* :func:`write_sr`: a **Comprehensive 3D SR** (``highdicom.sr.Comprehensive3DSR``) holding a TID 1500
  Measurement Report, one TID 1410 planar ROI group per mass (see :func:`write_sr`);
* :func:`measure_masses`: the numbers the SR reports (area, longest diameter, centroid, box, mean
  uncertainty), computed from the mask with NumPy.

It imports neither TensorFlow nor Keras (nor any kerasseg module that does: only ``kerasseg.errors``,
``kerasseg.fileio``, NumPy, pydicom, highdicom, and SciPy's ``ndimage.label`` inside
:func:`measure_masses`), so a TF Serving client turns the served ``mask`` into the same objects as
``kerasseg predict --dicom-seg`` without TensorFlow (``docs/dicom.md``).

Mammograms (single frame, no Frame of Reference)
------------------------------------------------
A digital mammogram (MG, DX, CR or secondary capture) usually has no ``FrameOfReferenceUID``, no
plane position/orientation and often no ``PixelSpacing`` (``ImagerPixelSpacing`` instead). highdicom
(tested with 0.28) segments such an image when the IOD does not require a Frame of Reference (it does not for
these IODs): the segmentation must then be one frame, pixel for pixel on the source image, referenced
through the per-frame Derivation Image Sequence; no plane position / orientation may be given, and the
Pixel Measures functional group is written only when the source has ``PixelSpacing``. The SEG then
needs ``PatientOrientation`` (General Image, type 2C without a Frame of Reference): it is copied from
the source (empty when the source has none), which is right because the SEG pixels lie exactly on the
source's stored pixels. ``ImagerPixelSpacing`` (the spacing at the detector, not corrected for the
geometric magnification of the breast) is **not** written as the SEG's Pixel Measures, which would
claim a spacing in the patient; the SR uses it for its mm numbers and says so in its Series
Description.

Orientation: the mask is in the **source's stored pixel orientation** (row 0 = the first stored row),
whatever ``PhotometricInterpretation`` (``MONOCHROME1`` only inverts grey values, not positions) or
laterality (``ImageLaterality`` / ``Laterality`` "R": nothing is flipped here). A caller that mirrored
a right breast for the model must mirror the mask back before calling :func:`write_seg`;
``kerasseg predict`` never mirrors.

What comes from the source
--------------------------
Only what the SEG and SR IODs need (everything else of the source stays out):

* Patient, Clinical Trial Subject, General Study, Patient Study and Clinical Trial Study module
  attributes (highdicom's ``copy_patient_and_study_information``: PatientName, PatientID,
  PatientBirthDate, PatientSex, StudyInstanceUID, StudyDate, StudyTime, StudyID, AccessionNumber,
  ReferringPhysicianName, ... where present; the type 2 ones are written empty when the source lacks
  them), ``SpecificCharacterSet``;
* the references: ``SOPClassUID``, ``SOPInstanceUID`` and ``SeriesInstanceUID`` of the source
  (SEG: Referenced Series Sequence and per-frame Source Image Sequence; SR: the image references and
  the evidence sequence);
* SEG only: ``Rows``/``Columns`` (the SEG's size), ``PatientOrientation``, ``FrameOfReferenceUID`` and
  ``PositionReferenceIndicator`` when present, ``PixelSpacing`` (-> Pixel Measures) when present,
  ``LossyImageCompression`` (and its ratio/method), and the source's Manufacturer / model / serial
  number / station as Contributing Equipment (highdicom);
* SR only: ``ImageLaterality`` / ``Laterality`` as the laterality of the finding site (breast).

Every call makes new Series and SOP Instance UIDs (``highdicom.UID()``); the Study is the source's.
Files are written atomically (a temporary name beside the target, then renamed). Errors are one-line
:class:`~kerasseg.errors.KerassegError` naming the file (not a DICOM file, no StudyInstanceUID,
multi-frame source, mask of the wrong shape or not 0/1, probability outside [0, 1], ...).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import NamedTuple

import numpy as np

from kerasseg import __version__
from kerasseg.errors import KerassegError
from kerasseg.fileio import atomic_write

#: Segmented property type and category of the one segment (SNOMED CT).
MASS_CODE = ("4147007", "SCT", "Mass")
CATEGORY_CODE = ("49755003", "SCT", "Morphologically Abnormal Structure")
#: Algorithm family (DICOM CID 7162).
AI_FAMILY_CODE = ("123110", "DCM", "Artificial Intelligence")
SEGMENT_LABEL = "Mass"
SEGMENT_NUMBER = 1
#: Default series numbers of the outputs (the caller may pass others).
SEG_SERIES_NUMBER = 9001
SR_SERIES_NUMBER = 9002
_SPACING_TAGS = ("PixelSpacing", "ImagerPixelSpacing")
#: Type 2 attributes that highdicom reads from the source: written empty when the source lacks them.
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
          "StudyDate", "StudyTime", "ReferringPhysicianName")


class DicomOutput(NamedTuple):
    """What :func:`write_seg` / :func:`write_sr` wrote: the file, the dataset, and a one-line note for the
    user (``None`` when there is nothing to say; the caller prints it)."""

    path: Path
    dataset: object
    note: str | None = None


# --------------------------------------------------------------------------- helpers
def _hd():
    try:
        import highdicom
    except ImportError:  # pragma: no cover - highdicom is in install_requires
        raise KerassegError("writing DICOM SEG/SR needs highdicom: pip install highdicom") from None
    return highdicom


def _code(triple):
    from pydicom.sr.coding import Code

    return Code(*triple)


def _one_line(exc) -> str:
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__


def _dataset_of(source, what: str, stop_before_pixels: bool):
    """(pydicom Dataset, name for messages) from a Dataset or a path; KerassegError otherwise."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    if isinstance(source, pydicom.Dataset):
        return source, str(getattr(source, "filename", "") or f"{what} dataset")
    path = Path(source)
    if not path.is_file():
        raise KerassegError(f"{what}: no such file", path)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise KerassegError(f"{what}: not a DICOM file or corrupt ({type(exc).__name__}: {_one_line(exc)})",
                            path) from None
    return ds, str(path)


def _source_header(source):
    """The source's attributes without pixel data (a copy: the caller's dataset is never changed),
    checked and with empty type 2 attributes added; and its name for messages."""
    import pydicom

    ds, name = _dataset_of(source, "source image", stop_before_pixels=True)
    for key in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        if not str(ds.get(key, "") or "").strip():
            raise KerassegError(f"source DICOM has no {key}: a SEG/SR must reference the image and its study",
                                name)
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError):
        raise KerassegError("source DICOM is not an image (no Rows/Columns)", name) from None
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        frames = 1
    if frames > 1:
        raise KerassegError(f"multi-frame source DICOM ({frames} frames) is not supported; give one 2-D image",
                            name)
    header = pydicom.Dataset()
    for elem in ds:
        if elem.tag.group in (0x7FE0, 0x0002) or elem.keyword in ("FloatPixelData", "DoubleFloatPixelData"):
            continue
        header.add(copy.deepcopy(elem))
    for key in _TYPE2:
        if key not in header:
            setattr(header, key, None)
    header.Rows, header.Columns = rows, cols
    return header, name


def source_spacing(source):
    """``((row_mm, col_mm), tag)`` of a source image: ``PixelSpacing``, else ``ImagerPixelSpacing`` (the
    usual tag of mammograms: the spacing at the detector), else ``(None, None)``. A value counts when it
    has two finite positive numbers (the rule of ``kerasseg.data.imageio.dicom_spacing``).

    Example:

    >>> import pydicom
    >>> ds = pydicom.Dataset(); ds.ImagerPixelSpacing = [0.07, 0.065]
    >>> source_spacing(ds)
    ((0.07, 0.065), 'ImagerPixelSpacing')
    """
    import pydicom

    ds = source if isinstance(source, pydicom.Dataset) else _dataset_of(source, "source image", True)[0]
    for key in _SPACING_TAGS:
        value = ds.get(key)
        if value is None:
            continue
        try:
            sp = tuple(float(v) for v in value)
        except (TypeError, ValueError):
            continue
        if len(sp) == 2 and all(np.isfinite(s) and s > 0 for s in sp):
            return sp, key
    return None, None


def _laterality(ds):
    for key in ("ImageLaterality", "Laterality"):
        value = str(ds.get(key, "") or "").strip().upper()
        if value in ("L", "R"):
            return value
    return None


def _algorithm(algorithm) -> tuple[str, str, dict]:
    """(name, version, parameters) from the ``algorithm`` dict of write_seg / write_sr."""
    algorithm = {} if algorithm is None else algorithm
    if not isinstance(algorithm, dict):
        raise KerassegError(f"algorithm must be a dict (name, version, config, model_card_sha256), "
                            f"got {type(algorithm).__name__}")
    name = str(algorithm.get("name") or "kerasseg")
    version = str(algorithm.get("version") or __version__)
    params = {str(k): str(v) for k, v in algorithm.items() if k not in ("name", "version") and v is not None}
    return name, version, params


def _check_mask(mask, shape, name) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.shape != tuple(shape):
        raise KerassegError(f"mask of shape {arr.shape} does not match the source image "
                            f"({shape[0]} rows x {shape[1]} columns): paste the ROI result into a full-size mask",
                            name)
    if arr.dtype != bool:
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise KerassegError(f"mask must be bool or uint8 0/1, got dtype {arr.dtype}", name)
        values = np.unique(arr)
        if not np.isin(values, (0, 1)).all():
            raise KerassegError(f"mask must hold only 0 and 1, got values up to {values.max()!r} "
                                "(pass mask > 0 for a 0/255 mask)", name)
    return arr.astype(bool)


def _check_probability(probability, shape, name) -> np.ndarray:
    arr = np.asarray(probability)
    if arr.shape != tuple(shape):
        raise KerassegError(f"probability of shape {arr.shape} does not match the source image "
                            f"({shape[0]} x {shape[1]})", name)
    if not np.issubdtype(arr.dtype, np.floating):
        raise KerassegError(f"probability must be a float array in [0, 1], got dtype {arr.dtype}", name)
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all() or arr.min(initial=0.0) < 0 or arr.max(initial=0.0) > 1:
        raise KerassegError("probability must be finite and in [0, 1]", name)
    return arr


def _write(dataset, out_path) -> Path:
    return atomic_write(Path(out_path), lambda fh: dataset.save_as(fh, enforce_file_format=True))


# --------------------------------------------------------------------------- SEG
def write_seg(source, mask, out_path, *, probability=None, algorithm=None, series_number=SEG_SERIES_NUMBER,
              instance_number=1, series_description=None, manufacturer="kerasseg",
              device_serial_number="0") -> DicomOutput:
    """Write the predicted mask of ``source`` as a DICOM Segmentation (one segment "Mass").

    Args:
        source: the source mammogram, a pydicom ``Dataset`` or a path (its pixel data is not needed).
        mask: bool / uint8 0-1 array (Rows, Columns): the prediction at the source image's full size, in
            its stored pixel orientation (the caller pastes the ROI result into a zero image).
        out_path: the ``.dcm`` file to write (atomically).
        probability: optional float array in [0, 1] of the same shape: then the SEG is ``FRACTIONAL``
            of type ``PROBABILITY`` (stored as ``round(255 * p)``) and holds the probability; without it
            the SEG is ``BINARY`` and holds ``mask``.
        algorithm: dict with ``name`` (default "kerasseg"), ``version`` (default kerasseg's), and any
            parameters, e.g. ``config`` (the config name) and ``model_card_sha256`` (the export's
            ``assets/model_card.json`` hash): they become the Algorithm Parameters (``key=value``).
        series_number, instance_number, series_description: of the new series (new UIDs every call).
        manufacturer, device_serial_number: the Enhanced General Equipment of the SEG.

    Returns:
        :class:`DicomOutput` ``(path, dataset, note)``; ``note`` is None.

    Example:

    >>> import numpy as np, pydicom, tempfile, os
    >>> from pydicom.uid import generate_uid
    >>> src = pydicom.Dataset()
    >>> src.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"   # digital mammography, for presentation
    >>> src.SOPInstanceUID, src.StudyInstanceUID, src.SeriesInstanceUID = (generate_uid() for _ in range(3))
    >>> src.Modality, src.Rows, src.Columns = "MG", 64, 48
    >>> mask = np.zeros((64, 48), np.uint8); mask[20:30, 10:25] = 1
    >>> out = write_seg(src, mask, os.path.join(tempfile.mkdtemp(), "seg.dcm"))
    >>> out.dataset.SegmentationType, out.dataset.StudyInstanceUID == src.StudyInstanceUID
    ('BINARY', True)
    """
    hd = _hd()
    from pydicom.uid import ExplicitVRLittleEndian

    header, name = _source_header(source)
    shape = (int(header.Rows), int(header.Columns))
    binary = _check_mask(mask, shape, name)
    alg_name, alg_version, params = _algorithm(algorithm)
    alg = hd.AlgorithmIdentificationSequence(name=alg_name, family=_code(AI_FAMILY_CODE), version=alg_version,
                                             parameters=params or None)
    description = hd.seg.SegmentDescription(
        segment_number=SEGMENT_NUMBER, segment_label=SEGMENT_LABEL,
        segmented_property_category=_code(CATEGORY_CODE), segmented_property_type=_code(MASS_CODE),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=alg,
        tracking_uid=hd.UID(), tracking_id="kerasseg mass")
    if probability is not None:
        pixels = _check_probability(probability, shape, name)
        kind = {"segmentation_type": hd.seg.SegmentationTypeValues.FRACTIONAL,
                "fractional_type": hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
                "max_fractional_value": 255}
    else:
        pixels = binary.astype(np.uint8)
        kind = {"segmentation_type": hd.seg.SegmentationTypeValues.BINARY}
    planar = "ImagePositionPatient" not in header  # a projection image: no plane position (mammograms)
    seg_header = copy.copy(header)
    if planar:
        # no Pixel Measures without a plane position: highdicom would write PixelSpacing alone, and its
        # reader (segread) refuses Pixel Measures without SliceThickness, which a projection image has not
        for key in ("PixelSpacing", "SliceThickness", "SpacingBetweenSlices"):
            if key in seg_header:
                del seg_header[key]
    try:
        seg = hd.seg.Segmentation(
            source_images=[seg_header], pixel_array=pixels, segment_descriptions=[description],
            series_instance_uid=hd.UID(), series_number=int(series_number), sop_instance_uid=hd.UID(),
            instance_number=int(instance_number), manufacturer=manufacturer, manufacturer_model_name=alg_name,
            software_versions=alg_version, device_serial_number=str(device_serial_number),
            content_label="MASS", content_description=f"{alg_name} mass segmentation",
            transfer_syntax_uid=ExplicitVRLittleEndian, omit_empty_frames=False,
            series_description=series_description or f"{alg_name} mass segmentation", **kind)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise KerassegError(f"cannot build a DICOM Segmentation for this source ({_one_line(exc)})", name) from None
    if planar:
        # General Image: PatientOrientation is type 2C, needed without Image Position/Orientation (Patient)
        seg.PatientOrientation = header.get("PatientOrientation", None)
    return DicomOutput(_write(seg, out_path), seg)


# --------------------------------------------------------------------------- measurements
def _edge_points(region: np.ndarray) -> np.ndarray:
    """(K, 2) float (row, col): the midpoints between each mask pixel and each of its 4-neighbours outside
    the mask: the vertices of the mask's outline at level 0.5 (what ``skimage.measure.find_contours`` of a
    0/1 image passes through)."""
    padded = np.pad(region, 1)
    inner = padded[1:-1, 1:-1]
    h, w = region.shape
    points = []
    for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        neighbour = padded[1 + dr:1 + dr + h, 1 + dc:1 + dc + w]
        r, c = np.nonzero(inner & ~neighbour)
        points.append(np.stack([r + 0.5 * dr, c + 0.5 * dc], axis=1))
    return np.concatenate(points).astype(np.float64)


def _convex_hull(points: np.ndarray) -> np.ndarray:
    """Vertices of the convex hull of (K, 2) points (Andrew's monotone chain); fewer than 3 points as is."""
    pts = np.unique(points, axis=0)  # sorted by (row, col)
    if len(pts) < 3:
        return pts

    def chain(seq):
        out = []
        for p in seq:
            while len(out) >= 2:
                (r0, c0), (r1, c1) = out[-2], out[-1]
                if (r1 - r0) * (p[1] - c0) - (c1 - c0) * (p[0] - r0) > 0:
                    break
                out.pop()
            out.append(p)
        return out

    lower, upper = chain(pts), chain(pts[::-1])
    return np.array(lower[:-1] + upper[:-1])


def _feret(region: np.ndarray, scale) -> tuple[float, tuple]:
    """Max Feret diameter of a non-empty mask with pixel size ``scale`` = (row, col), and its two end
    points in pixel coordinates (row, col)."""
    hull = _convex_hull(_edge_points(region))
    scaled = hull * np.asarray(scale, np.float64)
    d2 = ((scaled[:, None, :] - scaled[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(np.argmax(d2)), d2.shape)
    return float(np.sqrt(d2[i, j])), (tuple(map(float, hull[i])), tuple(map(float, hull[j])))


def _check_boxes(boxes, shape) -> list:
    arr = np.asarray(boxes)
    if arr.size == 0:
        return []
    if arr.ndim == 1 and arr.shape[0] == 4:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise KerassegError(f"boxes must be (N, 4) x0, y0, x1, y1, got shape {arr.shape}")
    out = []
    for x0, y0, x1, y1 in arr.astype(np.int64).tolist():
        if not (0 <= x0 < x1 <= shape[1] and 0 <= y0 < y1 <= shape[0]):
            raise KerassegError(f"box {x0},{y0},{x1},{y1} is empty or outside the mask "
                                f"({shape[1]} x {shape[0]} pixels, x = column, ends exclusive)")
        out.append((x0, y0, x1, y1))
    return out


def measure_masses(mask, spacing_mm=None, boxes=None, uncertainty=None) -> list[dict]:
    """Measurements of the masses of a predicted mask: the numbers :func:`write_sr` reports.

    Args:
        mask: (H, W) bool / 0-1 array.
        spacing_mm: ``(row_mm, col_mm)`` (``source_spacing(source)[0]``), a number for square pixels, or
            None (no mm values).
        boxes: optional (N, 4) ``x0, y0, x1, y1`` (pixels, x = column, ends exclusive): one mass per box,
            the mask pixels inside it (a box may hold no mass: area 0). Without boxes: one mass per
            8-connected component of the mask, in the order of their first pixel (raster order).
        uncertainty: optional (H, W) float map (e.g. the served ``uncertainty``, the std over ensemble
            members x TTA): its mean over each mass's pixels.

    Returns:
        One dict per mass: ``index`` (1, 2, ...), ``box`` (x0, y0, x1, y1), ``area_px``, ``area_mm2``
        (``area_px * row_mm * col_mm``), ``longest_diameter_px`` / ``longest_diameter_mm`` (the maximum
        Feret diameter: the largest distance between two points of the mask's outline, the polygon
        through the pixel-edge midpoints, measured in mm with each axis's spacing, so anisotropic pixels
        are handled), ``diameter_endpoints`` (two (row, col) points, pixel centres at integers),
        ``centroid`` ((row, col) mean pixel position), ``mean_uncertainty``. mm values are None without
        spacing; an empty box has area 0 and no diameter, centroid or uncertainty (None).

    Note: scikit-image's ``regionprops(...).feret_diameter_max`` measures the same outline of the
    *rasterised convex hull* (``image_convex``), which can add pixels: its value is equal or up to about
    one pixel larger (equal when the mask is its own convex hull image).

    Example:

    >>> import numpy as np
    >>> m = np.zeros((20, 20), np.uint8); m[2:5, 3:7] = 1
    >>> [(d["area_mm2"], round(d["longest_diameter_mm"], 3), d["box"]) for d in measure_masses(m, (0.5, 0.5))]
    [(3.0, 2.236, (3, 2, 7, 5))]
    """
    region_mask = np.asarray(mask)
    if region_mask.ndim != 2:
        raise KerassegError(f"mask must be 2-D (rows, columns), got shape {region_mask.shape}")
    region_mask = region_mask.astype(bool)
    if spacing_mm is not None:
        sp = (float(spacing_mm),) * 2 if np.isscalar(spacing_mm) else tuple(float(s) for s in spacing_mm)
        if len(sp) != 2 or not all(np.isfinite(s) and s > 0 for s in sp):
            raise KerassegError(f"spacing_mm must be (row_mm, col_mm) > 0, got {spacing_mm!r}")
    else:
        sp = None
    unc = None
    if uncertainty is not None:
        unc = np.asarray(uncertainty, np.float64)
        if unc.shape != region_mask.shape:
            raise KerassegError(f"uncertainty of shape {unc.shape} does not match the mask {region_mask.shape}")
    # each region: (box, its pixels as a sub-mask, the sub-mask's top-left (row, col) in the image)
    if boxes is not None:
        regions = [((x0, y0, x1, y1), region_mask[y0:y1, x0:x1], (y0, x0))
                   for x0, y0, x1, y1 in _check_boxes(boxes, region_mask.shape)]
    else:
        from scipy import ndimage

        labels, _ = ndimage.label(region_mask, structure=np.ones((3, 3), bool))
        regions = [((sl[1].start, sl[0].start, sl[1].stop, sl[0].stop), labels[sl] == k, (sl[0].start, sl[1].start))
                   for k, sl in enumerate(ndimage.find_objects(labels), start=1)]
    out = []
    for index, (box, sel, (top, left)) in enumerate(regions, start=1):
        rows, cols = np.nonzero(sel)
        item = {"index": index, "box": tuple(int(v) for v in box), "area_px": int(rows.size),
                "area_mm2": None if sp is None else float(rows.size * sp[0] * sp[1]),
                "longest_diameter_px": None, "longest_diameter_mm": None, "diameter_endpoints": None,
                "centroid": None, "mean_uncertainty": None}
        if rows.size:
            r0, c0 = rows.min(), cols.min()
            crop = sel[r0:rows.max() + 1, c0:cols.max() + 1]
            item["centroid"] = (float(rows.mean() + top), float(cols.mean() + left))
            item["longest_diameter_px"], ends = _feret(crop, (1.0, 1.0))
            if sp is not None:
                item["longest_diameter_mm"], ends = _feret(crop, sp)
            item["diameter_endpoints"] = tuple((p[0] + r0 + top, p[1] + c0 + left) for p in ends)
            if unc is not None:
                item["mean_uncertainty"] = float(unc[rows + top, cols + left].mean())
        out.append(item)
    return out


# --------------------------------------------------------------------------- SR
def _seg_mask(seg, source_uid: str, name) -> np.ndarray:
    """The segment's binary mask (Rows, Columns) on the source image; KerassegError for a FRACTIONAL SEG."""
    hd = _hd()
    if str(seg.get("SegmentationType", "")) != "BINARY":
        raise KerassegError("the SEG is FRACTIONAL: pass measurements=measure_masses(mask, spacing, ...) "
                            "computed from the binary mask", name)
    seg = seg if isinstance(seg, hd.seg.Segmentation) else hd.seg.Segmentation.from_dataset(seg, copy=False)
    pixels = seg.get_pixels_by_source_instance([source_uid], segment_numbers=[SEGMENT_NUMBER])
    return pixels[0, :, :, 0].astype(bool)


def _referenced_instances(seg) -> set:
    uids = set()
    for series in seg.get("ReferencedSeriesSequence", []):
        for item in series.get("ReferencedInstanceSequence", []):
            uids.add(str(item.ReferencedSOPInstanceUID))
    return uids


def write_sr(source, seg, measurements, out_path, *, boxes=None, uncertainty=None, algorithm=None,
             series_number=SR_SERIES_NUMBER, instance_number=1, series_description=None,
             manufacturer="kerasseg") -> DicomOutput:
    """Write a Comprehensive 3D SR holding a TID 1500 Measurement Report of the masses of a SEG.

    Per mass (``index`` k) the report holds two TID 1410 planar ROI groups sharing one Tracking UID
    (tracking identifier "Mass k"), finding type Mass (SCT 4147007), the algorithm, and the finding site
    breast (SCT 76752008) with the source's laterality when known:

    1. the measurements, ROI = the SEG's segment 1 (an IMAGE reference to the SEG instance with
       Referenced Segment Number 1, whose source image is the mammogram): Area (SCT 42798000, mm2),
       Long axis (SCT 103339001, mm: the maximum Feret diameter of :func:`measure_masses`), and, when
       known, the mean uncertainty as Standard Deviation (SCT 386136009) with derivation Mean
       (SCT 373098007), unit ``1``;
    2. the box: an Image Region on the source image, a closed POLYLINE through the box corners
       (``x0, y0`` ... in DICOM image coordinates, the top-left corner of the first pixel = 0, 0), with
       geometric purpose "Bounded by" (SCT 75958009).

    Without pixel spacing the SR carries no mm measurements (only the mean uncertainty, when given)
    and the returned note says so.

    Args:
        source: the source mammogram (Dataset or path), the one the SEG references.
        seg: the SEG of :func:`write_seg` (a Dataset or a path).
        measurements: the list of :func:`measure_masses`, or None: then it is computed from the SEG's
            mask (BINARY SEGs only) with ``source_spacing(source)``, ``boxes`` and ``uncertainty``.
        out_path: the ``.dcm`` file to write (atomically).
        algorithm: as for :func:`write_seg`.

    Returns:
        :class:`DicomOutput` ``(path, dataset, note)``; ``note`` is a line such as ``"<out>: the SR has no
        mm measurements (the source has neither PixelSpacing nor ImagerPixelSpacing)"`` or None. With no
        mass at all (an empty mask and no boxes) nothing is written: ``path`` and ``dataset`` are None and
        the note says so (a TID 1500 report needs at least one measurement group).
    """
    hd = _hd()
    from pydicom.sr.codedict import codes

    header, name = _source_header(source)
    seg_ds, seg_name = _dataset_of(seg, "SEG", stop_before_pixels=False)
    if str(seg_ds.get("Modality", "")) != "SEG" or "SegmentSequence" not in seg_ds:
        raise KerassegError("not a DICOM Segmentation (Modality SEG with a Segment Sequence)", seg_name)
    if str(seg_ds.StudyInstanceUID) != str(header.StudyInstanceUID) or \
            str(header.SOPInstanceUID) not in _referenced_instances(seg_ds):
        raise KerassegError(f"the SEG does not reference the source image {header.SOPInstanceUID} of its study",
                            seg_name)
    spacing, spacing_tag = source_spacing(header)
    if measurements is None:
        mask = _seg_mask(seg_ds, str(header.SOPInstanceUID), seg_name)
        measurements = measure_masses(mask, spacing, boxes=boxes, uncertainty=uncertainty)
    alg_name, alg_version, params = _algorithm(algorithm)
    alg = hd.sr.AlgorithmIdentification(name=alg_name, version=alg_version,
                                        parameters=[f"{k}={v}" for k, v in params.items()] or None,
                                        family=_code(AI_FAMILY_CODE))
    laterality = {"L": codes.SCT.Left, "R": codes.SCT.Right}.get(_laterality(header))
    site = hd.sr.FindingSite(anatomic_location=codes.SCT.Breast, laterality=laterality)
    source_ref = (str(header.SOPClassUID), str(header.SOPInstanceUID))
    rows, cols = int(header.Rows), int(header.Columns)

    if not isinstance(measurements, (list, tuple)) or not all(isinstance(m, dict) for m in measurements):
        raise KerassegError("measurements must be a list of dicts (from measure_masses) or None", name)
    if not measurements:
        # TID 1500 needs at least one measurement group (highdicom too): an empty result has no SR
        return DicomOutput(None, None, f"{out_path}: no SR written: no mass to report (empty mask, no boxes)")
    groups, any_mm = [], False
    for m in measurements:
        k = int(m.get("index", len(groups) // 2 + 1))
        tracking = hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"Mass {k}")
        values = []
        if m.get("area_mm2") is not None:
            values.append(hd.sr.Measurement(name=codes.SCT.Area, value=float(m["area_mm2"]),
                                            unit=codes.UCUM.SquareMillimeter, algorithm_id=alg))
        if m.get("longest_diameter_mm") is not None:
            values.append(hd.sr.Measurement(name=codes.SCT.LongAxis, value=float(m["longest_diameter_mm"]),
                                            unit=codes.UCUM.Millimeter, algorithm_id=alg))
        any_mm = any_mm or bool(values)
        if m.get("mean_uncertainty") is not None:
            values.append(hd.sr.Measurement(name=codes.SCT.StandardDeviation, value=float(m["mean_uncertainty"]),
                                            unit=codes.UCUM.NoUnits, derivation=codes.SCT.Mean, algorithm_id=alg))
        segment = hd.sr.ReferencedSegmentationFrame(
            sop_class_uid=str(seg_ds.SOPClassUID), sop_instance_uid=str(seg_ds.SOPInstanceUID), frame_number=1,
            segment_number=SEGMENT_NUMBER, source_image=hd.sr.SourceImageForSegmentation(*source_ref))
        # The Image SOP Instance Reference macro allows Referenced Segment Number only without a Referenced
        # Frame Number (dciodvfy: "shall not be present"); the SEG has one frame holding segment 1.
        del segment[0].ReferencedSOPSequence[0].ReferencedFrameNumber
        common = {"tracking_identifier": tracking, "finding_type": _code(MASS_CODE), "algorithm_id": alg,
                  "finding_sites": [site]}
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            referenced_segment=segment, finding_category=_code(CATEGORY_CODE), measurements=values or None,
            **common))
        if m.get("box") is None:
            continue
        x0, y0, x1, y1 = (float(v) for v in m["box"])
        if not (0 <= x0 < x1 <= cols and 0 <= y0 < y1 <= rows):
            raise KerassegError(f"mass {k}: box {m['box']} lies outside the source image ({cols} x {rows})", name)
        corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], np.float64)
        region = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=corners,
                                   source_image=hd.sr.SourceImageForRegion(*source_ref))
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            referenced_region=region, geometric_purpose=codes.SCT.BoundedBy, **common))

    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=hd.UID.from_uuid(_device_uuid(alg_name, alg_version)), name=alg_name, manufacturer_name=manufacturer,
        model_name=alg_name)
    context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(observer_type=codes.DCM.Device,
                                                      observer_identifying_attributes=device))
    report = hd.sr.MeasurementReport(observation_context=context, procedure_reported=codes.SCT.Mammography,
                                     imaging_measurements=groups or None)
    if spacing_tag == "ImagerPixelSpacing":
        where = "mm from ImagerPixelSpacing (detector plane)"
    elif spacing_tag:
        where = "mm from PixelSpacing"
    else:
        where = "no pixel spacing: no mm values"
    description = series_description or f"{alg_name} mass measurements ({where})"[:64]
    try:
        sr = hd.sr.Comprehensive3DSR(
            evidence=[header, seg_ds], content=report, series_instance_uid=hd.UID(), series_number=int(series_number),
            sop_instance_uid=hd.UID(), instance_number=int(instance_number), manufacturer=manufacturer,
            is_complete=True, series_description=description)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise KerassegError(f"cannot build the measurement SR ({_one_line(exc)})", name) from None
    path = _write(sr, out_path)
    note = None
    if not any_mm:
        why = ("the source has neither PixelSpacing nor ImagerPixelSpacing" if spacing is None
               else "the measurements have no mm values")
        note = f"{path}: the SR has no mm measurements ({why})"
    return DicomOutput(path, sr, note)


def _device_uuid(name: str, version: str) -> str:
    """A stable UUID for the algorithm as an observer device (the same for every report of one version)."""
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"kerasseg:{name}:{version}"))
