"""The one image reader: DICOM, PNG, TIFF, JPEG, BMP and NPY files to a float32 grey image.

``kerasseg data prepare`` (every reader in :mod:`kerasseg.data.readers`) and ``kerasseg predict``
(:mod:`kerasseg.export.predict`) read their images only through :func:`read_image` /
:func:`read_dicom`, so a file gives the same pixels in training data and at prediction time.

What the pixels are
-------------------
* **DICOM** (``.dcm``, ``.dicom`` or no suffix): the Modality LUT's linear form is applied,
  ``value = stored * RescaleSlope + RescaleIntercept`` (slope 1, intercept 0 when absent). No VOI
  LUT / window is applied: the values stay in the modality's units. ``MONOCHROME1`` images (minimum =
  white) are inverted so that bright = dense in every source, **within the range the stored values
  can take** (not the image's own maximum)::

      stored' = stored_min + stored_max - stored      # unsigned: (2**BitsStored - 1) - stored
      value   = stored' * RescaleSlope + RescaleIntercept

  (``stored_min``/``stored_max`` from ``BitsStored`` and ``PixelRepresentation``). This equals the
  reflection of the rescaled value within its possible range, so the inverted image keeps the units and
  range of the file, and a pixel's value does not depend on the other pixels of the image (the same
  tissue gives the same number in two images, whatever their brightest pixel). Pixel spacing
  (:func:`dicom_spacing`) and laterality (:func:`dicom_laterality`) come from the header.
  Multi-frame DICOMs are refused.
* **PNG, TIFF, JPEG, BMP**: the decoded values as they are, no rescaling (8-bit files 0..255,
  16-bit files 0..65535, float TIFFs their floats, 1-bit files 0/1). A ``MINISWHITE`` TIFF of integers
  is inverted like MONOCHROME1 (``2**bits - 1 - value``). Multi-page files are refused, and so are
  16-bit colour PNGs (Pillow would silently reduce them to 8 bits).
* **NPY**: a 2-D (or RGB(A)) numeric array, as it is.

Colour
------
RGB(A) is turned into grey one way everywhere, :func:`rgb_to_grey`: the ITU-R BT.709 luma weights
:data:`RGB_TO_GREY` (the ones :func:`skimage.color.rgb2gray` uses) applied to the **raw** values.
Unlike ``rgb2gray`` the integer input is not first scaled to [0, 1], so the result stays on the file's
intensity scale: an 8-bit grey image stored as RGB (R = G = B) reads to exactly the numbers of the same
image stored as grey (the weights sum to 1). The alpha channel is dropped (not composited); a grey +
alpha image keeps its grey channel. Palette images are expanded to RGB first. The TF graph decoder of the
serving export uses the same :data:`RGB_TO_GREY`.

Errors: :class:`~kerasseg.errors.KerassegError`, one line naming the file (missing, empty, unreadable
or corrupt file, unsupported suffix, multi-frame image, wrong shape or dtype).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kerasseg.errors import KerassegError

#: ITU-R BT.709 luma weights (R, G, B), as in :func:`skimage.color.rgb2gray`; they sum to 1.
RGB_TO_GREY = (0.2125, 0.7154, 0.0721)

DICOM_SUFFIXES = (".dcm", ".dicom")          # and files without a suffix
PNG_SUFFIXES = (".png",)
TIFF_SUFFIXES = (".tif", ".tiff")
PILLOW_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
RASTER_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
ARRAY_SUFFIXES = (".npy",)
#: Every suffix :func:`read_image` reads (a file without a suffix is read as DICOM too).
IMAGE_SUFFIXES = RASTER_SUFFIXES + DICOM_SUFFIXES + ARRAY_SUFFIXES

_SUPPORTED = "DICOM (.dcm, .dicom or no suffix), PNG, TIFF, JPEG, BMP or NPY"


@dataclass
class Image2D:
    """One grey image as read from a file."""

    pixels: np.ndarray                          # float32 (H, W), raw intensities (see the module doc)
    spacing_mm: tuple | None = None             # (row, col) pixel size in mm, if the file says
    laterality: str | None = None               # "L", "R" or None (DICOM ImageLaterality / Laterality)
    meta: dict = field(default_factory=dict)    # format, source dtype, DICOM photometric, slope, ...


# --------------------------------------------------------------------------- colour
def rgb_to_grey(arr) -> np.ndarray:
    """(..., 3 or 4) RGB(A) -> (...) float64 grey: ``RGB_TO_GREY`` weights on the raw values; alpha dropped.

    No scaling to [0, 1]: R = G = B = v gives v (exactly, once cast to float32).
    """
    arr = np.asarray(arr)
    if arr.ndim < 1 or arr.shape[-1] not in (3, 4):
        raise ValueError(f"expected (..., 3) RGB or (..., 4) RGBA, got shape {arr.shape}")
    rgb = arr[..., :3].astype(np.float64)
    return rgb @ np.asarray(RGB_TO_GREY, dtype=np.float64)


def _to_grey(arr: np.ndarray, path, what: str = "image") -> np.ndarray:
    """2-D grey, (H, W, 1), grey + alpha (H, W, 2) or RGB(A) (H, W, 3|4) -> float32 (H, W)."""
    arr = np.asarray(arr)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise KerassegError(f"{what} has non-numeric or complex dtype {arr.dtype}", path)
    if arr.ndim == 3 and arr.shape[-1] in (1, 2):
        arr = arr[..., 0]                       # grey, or grey + alpha
    elif arr.ndim == 3 and arr.shape[-1] in (3, 4):
        arr = rgb_to_grey(arr)
    if arr.ndim != 2:
        raise KerassegError(f"expected a 2-D grey or RGB(A) {what}, got shape {arr.shape}", path)
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise KerassegError(f"{what} is empty (shape {arr.shape})", path)
    return arr.astype(np.float32)


def _one_line(exc) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def _check_file(path: Path, what: str) -> None:
    if not path.exists():
        raise KerassegError("no such file", path)
    if path.is_dir():
        raise KerassegError("is a folder, not a file", path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise KerassegError(f"cannot read {what} ({_one_line(exc)})", path) from None
    if size == 0:
        raise KerassegError(f"cannot read {what}: the file is empty (0 bytes)", path)


# --------------------------------------------------------------------------- dispatch
def read_image(path) -> Image2D:
    """Read a DICOM, PNG, TIFF, JPEG, BMP or NPY file as a float32 grey :class:`Image2D`.

    The suffix (case-insensitive) picks the decoder; a file without a suffix is read as DICOM.
    KerassegError naming the file if it is missing, empty, unreadable, multi-frame or not 2-D.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES or suffix == "":
        return read_dicom(path)
    if suffix in TIFF_SUFFIXES:
        return _read_tiff(path)
    if suffix in PILLOW_SUFFIXES:
        return _read_pillow(path)
    if suffix in ARRAY_SUFFIXES:
        return _read_npy(path)
    raise KerassegError(f"unsupported image type {suffix!r} (expected {_SUPPORTED})", path)


# --------------------------------------------------------------------------- DICOM
def dicom_spacing(ds):
    """(row, col) pixel size in mm from PixelSpacing, else ImagerPixelSpacing; None if neither is valid."""
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(key)
        if value is not None:
            try:
                sp = tuple(float(v) for v in value)
            except (TypeError, ValueError):
                continue
            if len(sp) == 2 and all(np.isfinite(s) and s > 0 for s in sp):
                return sp
    return None


def dicom_laterality(ds):
    """"L" / "R" from ImageLaterality, else Laterality; None if neither says."""
    for key in ("ImageLaterality", "Laterality"):
        value = str(ds.get(key, "") or "").strip().upper()
        if value in ("L", "R"):
            return value
    return None


def _rescale(ds, path) -> tuple[float, float]:
    out = []
    for key, default in (("RescaleSlope", 1.0), ("RescaleIntercept", 0.0)):
        raw = ds.get(key, None)
        if raw is None or str(raw).strip() == "":
            out.append(default)
            continue
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise KerassegError(f"DICOM {key} {str(raw)!r} is not a number", path) from None
        if not np.isfinite(value) or (key == "RescaleSlope" and value == 0):
            need = "a finite, non-zero number" if key == "RescaleSlope" else "a finite number"
            raise KerassegError(f"DICOM {key} is {value}; it must be {need}", path)
        out.append(value)
    return out[0], out[1]


def _stored_range(ds, arr: np.ndarray) -> tuple[float, float]:
    """(min, max) a stored value can take, from BitsStored and PixelRepresentation."""
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 0)
    if not 0 < bits <= arr.dtype.itemsize * 8:
        bits = arr.dtype.itemsize * 8
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        return -float(2 ** (bits - 1)), float(2 ** (bits - 1) - 1)
    return 0.0, float(2 ** bits - 1)


def read_dicom(path) -> Image2D:
    """One single-frame DICOM as an :class:`Image2D` (rescaled; MONOCHROME1 inverted; see the module doc).

    ``meta``: format "dicom", photometric, bits_stored, rescale_slope, rescale_intercept, inverted,
    patient_id (or None).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    _check_file(path, "DICOM")
    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise KerassegError(f"cannot read DICOM: corrupt or not a DICOM file ({type(exc).__name__}: "
                            f"{_one_line(exc)})", path) from None
    if "PixelData" not in ds:
        raise KerassegError("DICOM has no pixel data", path)
    frames = ds.get("NumberOfFrames", 1)
    try:
        frames = int(frames or 1)
    except (TypeError, ValueError):
        frames = 1
    if frames > 1:
        raise KerassegError(f"multi-frame DICOM ({frames} frames) is not supported; give one 2-D image", path)
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if photometric == "PALETTE COLOR":
        raise KerassegError("PALETTE COLOR DICOM is not supported; give a grey (MONOCHROME1/2) image", path)
    try:
        stored = np.asarray(ds.pixel_array)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for broken pixel data
        raise KerassegError(f"cannot read DICOM pixel data ({_one_line(exc)})", path) from None
    slope, intercept = _rescale(ds, path)
    values = stored.astype(np.float64)
    inverted = False
    if photometric == "MONOCHROME1":
        if values.ndim != 2:
            raise KerassegError(f"MONOCHROME1 DICOM with pixel array of shape {stored.shape}", path)
        lo, hi = _stored_range(ds, stored)
        values = (lo + hi) - values
        inverted = True
    values = values * slope + intercept
    pixels = _to_grey(values, path, "DICOM pixel array")
    meta = {"format": "dicom", "dtype": str(stored.dtype), "photometric": photometric or None,
            "bits_stored": int(ds.BitsStored) if ds.get("BitsStored") is not None else None,
            "rescale_slope": slope, "rescale_intercept": intercept, "inverted": inverted,
            "patient_id": str(ds.get("PatientID", "") or "") or None}
    return Image2D(pixels, dicom_spacing(ds), dicom_laterality(ds), meta)


# --------------------------------------------------------------------------- rasters
def _png_header(path: Path):
    """(bit depth, colour type) from a PNG's IHDR, or None if it does not look like a PNG."""
    with open(path, "rb") as fh:
        head = fh.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


_PILLOW_TO_RGB = {"P": None, "PA": "RGBA", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB",
                  "RGBX": "RGB", "RGBa": "RGBA", "La": "LA"}


def _read_pillow(path: Path) -> Image2D:
    from PIL import Image, UnidentifiedImageError

    _check_file(path, "image")
    if path.suffix.lower() in PNG_SUFFIXES:
        try:
            header = _png_header(path)
        except OSError as exc:
            raise KerassegError(f"cannot read image ({_one_line(exc)})", path) from None
        if header is not None and header[0] == 16 and header[1] in (2, 4, 6):
            raise KerassegError("16-bit colour / grey+alpha PNG is not supported (it would be read as 8 bits); "
                                "save it as 16-bit grey PNG or TIFF", path)
    try:
        with Image.open(path) as im:
            frames = int(getattr(im, "n_frames", 1) or 1)
            if frames > 1:
                raise KerassegError(f"multi-frame image ({frames} frames) is not supported; give one 2-D image",
                                    path)
            im.load()
            mode = im.mode
            if mode in _PILLOW_TO_RGB:
                target = _PILLOW_TO_RGB[mode]
                if target is None:   # palette: RGBA if it has transparency (alpha dropped later anyway)
                    target = "RGBA" if "transparency" in im.info else "RGB"
                im = im.convert(target)
            arr = np.asarray(im)
    except KerassegError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise KerassegError(f"cannot read image: corrupt or not a {path.suffix.lstrip('.').upper()} file "
                            f"({_one_line(exc)})", path) from None
    return Image2D(_to_grey(arr, path), None, None,
                   {"format": path.suffix.lower().lstrip("."), "dtype": str(arr.dtype), "mode": mode})


def _read_tiff(path: Path) -> Image2D:
    import tifffile

    _check_file(path, "image")
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise KerassegError("cannot read image: the TIFF holds no image", path)
            series = tif.series[0]             # further series (thumbnails, previews) are ignored
            if len(series.pages) > 1:
                raise KerassegError(f"multi-page TIFF ({len(series.pages)} pages) is not supported; "
                                    "give one 2-D image", path)
            page = series.pages[0] or tif.pages[0]
            photometric = int(page.photometric)
            planar_separate = int(getattr(page, "planarconfig", 1) or 1) == 2
            bits = int(getattr(page, "bitspersample", 0) or 0)
            arr = np.asarray(series.asarray())
    except KerassegError:
        raise
    except Exception as exc:  # noqa: BLE001 - tifffile raises many types for broken files
        raise KerassegError(f"cannot read image: corrupt or not a TIFF file ({_one_line(exc)})", path) from None
    # 0 MINISWHITE, 1 MINISBLACK, 2 RGB; palette/CMYK/YCbCr/... are refused rather than guessed
    if photometric not in (0, 1, 2):
        raise KerassegError(f"TIFF photometric interpretation {photometric} is not supported "
                            "(grey MINISBLACK/MINISWHITE or RGB only)", path)
    if planar_separate and arr.ndim == 3 and arr.shape[0] in (2, 3, 4) and arr.shape[-1] not in (2, 3, 4):
        arr = np.moveaxis(arr, 0, -1)
    inverted = False
    if photometric == 0:
        if arr.dtype == bool:
            arr, inverted = ~arr, True
        elif np.issubdtype(arr.dtype, np.unsignedinteger):
            bits = bits if 0 < bits <= arr.dtype.itemsize * 8 else arr.dtype.itemsize * 8
            arr, inverted = (2 ** bits - 1) - arr.astype(np.float64), True
    meta = {"format": "tiff", "dtype": str(series.dtype), "photometric": photometric, "inverted": inverted}
    return Image2D(_to_grey(arr, path), None, None, meta)


def _read_npy(path: Path) -> Image2D:
    _check_file(path, "image")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise KerassegError(f"cannot read image: corrupt or not an NPY file ({_one_line(exc)})", path) from None
    if not isinstance(arr, np.ndarray):
        raise KerassegError("cannot read image: the NPY file holds no array", path)
    return Image2D(_to_grey(arr, path, "array"), None, None, {"format": "npy", "dtype": str(arr.dtype)})
