"""The one image reader (kerasseg.data.imageio), used by both ``data prepare`` and ``predict``.

References are NumPy float64 from the values written, scikit-image's rgb2gray and the DICOM standard's
definitions (Modality LUT ``stored * slope + intercept``; MONOCHROME1 = minimum is white).
"""

import struct
import warnings
import zlib

import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image
from skimage.color import rgb2gray
from skimage.io import imsave

from fixtures.data import gradient_image, write_dicom
from kerasseg.data import imageio
from kerasseg.data.imageio import RGB_TO_GREY, Image2D, read_dicom, read_image, rgb_to_grey
from kerasseg.errors import KerassegError, KerassegWarning


def _edit_dicom(path, **attrs):
    ds = pydicom.dcmread(path)
    for key, value in attrs.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def _assert_one_line_error(path, match=None):
    with pytest.raises(KerassegError) as info:
        read_image(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: "), msg
    if match is not None:
        assert match in msg, msg
    return msg


# ------------------------------------------------------------------ DICOM
def test_dicom_rescale_slope_intercept(tmp_path):
    raw = gradient_image(30, 40, seed=3)
    p = write_dicom(tmp_path / "a.dcm", raw, slope=0.5, intercept=-100.0)
    img = read_image(p)
    assert isinstance(img, Image2D) and img.pixels.dtype == np.float32 and img.pixels.shape == raw.shape
    np.testing.assert_array_equal(img.pixels, raw.astype(np.float64) * 0.5 - 100.0)
    assert img.meta["rescale_slope"] == 0.5 and img.meta["rescale_intercept"] == -100.0
    # no slope/intercept in the header: the stored values as they are
    q = write_dicom(tmp_path / "b.dcm", raw)
    np.testing.assert_array_equal(read_dicom(q).pixels, raw.astype(np.float64))


def test_dicom_bad_rescale_slope_is_one_line_error(tmp_path):
    p = write_dicom(tmp_path / "s0.dcm", gradient_image(10, 12), slope=0.0)
    _assert_one_line_error(p, "RescaleSlope")


def test_monochrome1_inverted_within_the_stored_range(tmp_path):
    raw = gradient_image(30, 40, seed=4)
    p = write_dicom(tmp_path / "m1.dcm", raw, photometric="MONOCHROME1", slope=2.0, intercept=-5.0)
    img = read_image(p)
    # 16 bits stored, unsigned: stored' = 65535 - stored, then the rescale
    expected = (65535.0 - raw.astype(np.float64)) * 2.0 - 5.0
    np.testing.assert_array_equal(img.pixels, expected)
    # = the rescaled value reflected within its possible range [-5, 65535 * 2 - 5]
    lo, hi = -5.0, 65535 * 2.0 - 5.0
    np.testing.assert_array_equal(img.pixels, lo + hi - (raw.astype(np.float64) * 2 - 5))
    assert img.meta["inverted"]
    # bright = dense: the order of the values is reversed
    flat_raw, flat = raw.ravel().astype(np.int64), img.pixels.ravel()
    i, j = np.argmin(flat_raw), np.argmax(flat_raw)
    assert flat[i] > flat[j]


def test_monochrome1_does_not_depend_on_the_other_pixels(tmp_path):
    """Two 12-bit MONOCHROME1 images sharing a region but with different maxima read the same there."""
    raw = (gradient_image(20, 30, seed=5) % 3000).astype(np.uint16)
    brighter = raw.copy()
    brighter[0, 0] = 4095
    vals = []
    for name, arr in (("a.dcm", raw), ("b.dcm", brighter)):
        p = write_dicom(tmp_path / name, arr, photometric="MONOCHROME1")
        _edit_dicom(p, BitsStored=12, HighBit=11)
        vals.append(read_image(p).pixels)
        np.testing.assert_array_equal(vals[-1], 4095.0 - arr.astype(np.float64))
    np.testing.assert_array_equal(vals[0][1:], vals[1][1:])


def test_monochrome1_signed_range(tmp_path):
    raw = (gradient_image(10, 12, seed=6) % 2000).astype(np.uint16)
    p = write_dicom(tmp_path / "s.dcm", raw, photometric="MONOCHROME1")
    _edit_dicom(p, BitsStored=12, HighBit=11, PixelRepresentation=1)
    # signed 12 bits: [-2048, 2047], stored' = -2048 + 2047 - stored
    np.testing.assert_array_equal(read_image(p).pixels, -1.0 - raw.astype(np.float64))


def test_dicom_spacing_fallback_and_laterality(tmp_path):
    raw = gradient_image(10, 12)
    p = write_dicom(tmp_path / "px.dcm", raw, spacing=(0.1, 0.05), laterality="R")
    img = read_image(p)
    assert img.spacing_mm == (0.1, 0.05) and img.laterality == "R"
    # no PixelSpacing: ImagerPixelSpacing
    q = write_dicom(tmp_path / "imager.dcm", raw, spacing=None)
    _edit_dicom(q, ImagerPixelSpacing=[0.07, 0.08], Laterality="L")
    img = read_image(q)
    assert img.spacing_mm == (0.07, 0.08) and img.laterality == "L"
    # an unusable PixelSpacing (0) falls back too; neither -> None
    r = write_dicom(tmp_path / "zero.dcm", raw, spacing=(0.0, 0.0))
    _edit_dicom(r, ImagerPixelSpacing=[0.2, 0.2])
    assert read_image(r).spacing_mm == (0.2, 0.2)
    s = write_dicom(tmp_path / "none.dcm", raw, spacing=None)
    assert read_image(s).spacing_mm is None and read_image(s).laterality is None


def test_dicom_without_suffix(tmp_path):
    raw = gradient_image(10, 12)
    p = write_dicom(tmp_path / "IM0001", raw, slope=3.0)
    np.testing.assert_array_equal(read_image(p).pixels, raw.astype(np.float64) * 3.0)


def test_multiframe_dicom_is_refused(tmp_path):
    p = write_dicom(tmp_path / "mf.dcm", gradient_image(20, 12))
    _edit_dicom(p, NumberOfFrames=2, Rows=10)
    _assert_one_line_error(p, "multi-frame")


def test_dicom_errors(tmp_path):
    garbage = tmp_path / "broken.dcm"
    garbage.write_bytes(b"not a dicom at all" * 10)
    _assert_one_line_error(garbage, "cannot read DICOM")
    no_pixels = write_dicom(tmp_path / "nopix.dcm", None, pixel_data=False)
    _assert_one_line_error(no_pixels, "no pixel data")
    good = write_dicom(tmp_path / "good.dcm", gradient_image(40, 50))
    cut = tmp_path / "cut.dcm"
    data = good.read_bytes()
    cut.write_bytes(data[: len(data) - 2000])
    _assert_one_line_error(cut, "DICOM")


# ------------------------------------------------------------------ PNG / TIFF / BMP
@pytest.mark.parametrize("suffix", [".png", ".tif", ".tiff", ".PNG", ".bmp"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_grey_raster_round_trip_raw_values(tmp_path, suffix, dtype):
    if suffix == ".bmp" and dtype == np.uint16:
        pytest.skip("BMP has no 16-bit grey")
    rng = np.random.default_rng(0)
    top = np.iinfo(dtype).max
    arr = rng.integers(0, top, size=(23, 31), endpoint=True).astype(dtype)
    arr[0, 0], arr[0, 1] = 0, top           # the full range, no rescaling
    p = tmp_path / f"img{suffix}"
    if suffix == ".bmp":
        Image.fromarray(arr).save(p)
    else:
        imsave(p, arr, check_contrast=False)
    img = read_image(p)
    assert img.pixels.dtype == np.float32 and img.pixels.shape == arr.shape
    np.testing.assert_array_equal(img.pixels, arr.astype(np.float64))
    assert img.spacing_mm is None and img.laterality is None


def test_float_tiff_and_npy_as_they_are(tmp_path, rng):
    arr = rng.normal(0, 1000, size=(12, 17)).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", arr)
    np.testing.assert_array_equal(read_image(tmp_path / "f.tif").pixels, arr)
    np.save(tmp_path / "a.npy", arr.astype(np.float64))
    np.testing.assert_array_equal(read_image(tmp_path / "a.npy").pixels, arr)


def test_miniswhite_tiff_is_inverted_like_monochrome1(tmp_path):
    arr = np.random.default_rng(2).integers(0, 256, size=(9, 11)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "w.tif", arr, photometric="miniswhite")
    np.testing.assert_array_equal(read_image(tmp_path / "w.tif").pixels, 255.0 - arr)


def test_rgb_to_grey_weights_are_skimage_bt709():
    # rgb2gray of the unit colours gives its weights: an independent check of the constants
    unit = np.eye(3, dtype=np.float64)[None]
    np.testing.assert_allclose(rgb2gray(unit)[0], RGB_TO_GREY, rtol=0, atol=1e-12)
    assert sum(RGB_TO_GREY) == pytest.approx(1.0, abs=1e-12)
    # raw scale kept: rgb2gray scales uint8 to [0, 1], ours does not
    rgb = np.random.default_rng(3).integers(0, 256, size=(5, 7, 3)).astype(np.uint8)
    np.testing.assert_allclose(rgb_to_grey(rgb), rgb2gray(rgb) * 255.0, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".bmp"])
def test_rgb_and_rgba_files_to_grey(tmp_path, suffix):
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, size=(16, 21, 3)).astype(np.uint8)
    p = tmp_path / f"rgb{suffix}"
    Image.fromarray(rgb, mode="RGB").save(p) if suffix == ".bmp" else imsave(p, rgb, check_contrast=False)
    ref = rgb.astype(np.float64) @ np.array([0.2125, 0.7154, 0.0721])
    got = read_image(p).pixels
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    np.testing.assert_array_equal(got, rgb_to_grey(rgb).astype(np.float32))
    if suffix != ".bmp":
        rgba = np.dstack([rgb, rng.integers(0, 256, size=(16, 21)).astype(np.uint8)])
        q = tmp_path / f"rgba{suffix}"
        imsave(q, rgba, check_contrast=False)
        np.testing.assert_array_equal(read_image(q).pixels, got)   # alpha dropped, not composited


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_grey_stored_as_rgb_reads_like_grey(tmp_path, dtype):
    top = np.iinfo(dtype).max
    grey = np.linspace(0, top, 20 * 24).round().astype(dtype).reshape(20, 24)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    if dtype == np.uint8:
        imsave(tmp_path / "g.png", grey, check_contrast=False)
        imsave(tmp_path / "rgb.png", rgb, check_contrast=False)
        a, b = read_image(tmp_path / "g.png"), read_image(tmp_path / "rgb.png")
    else:   # no 16-bit colour PNG writer: TIFF
        tifffile.imwrite(tmp_path / "g.tif", grey)
        tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
        a, b = read_image(tmp_path / "g.tif"), read_image(tmp_path / "rgb.tif")
    np.testing.assert_array_equal(b.pixels, a.pixels)
    np.testing.assert_array_equal(b.pixels, grey.astype(np.float64))


def test_palette_and_grey_alpha_png(tmp_path):
    idx = np.array([[0, 1, 1], [1, 0, 1]], np.uint8)
    pal = [10, 20, 30, 200, 100, 50]
    im = Image.fromarray(idx, mode="P")
    im.putpalette(pal + [0] * (768 - len(pal)))
    im.save(tmp_path / "p.png")
    colours = np.array(pal, np.float64).reshape(2, 3)
    np.testing.assert_allclose(read_image(tmp_path / "p.png").pixels, (colours @ RGB_TO_GREY)[idx], rtol=1e-6)
    grey = np.array([[5, 250], [77, 0]], np.uint8)
    Image.fromarray(np.dstack([grey, np.full_like(grey, 128)]), mode="LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "la.png").pixels, grey.astype(np.float64))


# ------------------------------------------------------------------ errors
def _png16_rgb(path, arr):
    """A 16-bit RGB PNG written by hand (no installed writer makes one)."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in arr)

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("suffix", [".png", ".tif", ".jpg", ".bmp", ".npy", ".dcm", ""])
def test_empty_and_corrupt_files_name_the_file(tmp_path, suffix):
    empty = tmp_path / f"empty{suffix}"
    empty.write_bytes(b"")
    _assert_one_line_error(empty, "empty")
    corrupt = tmp_path / f"corrupt{suffix}"
    corrupt.write_bytes(b"\x89PNG garbage" + b"\x00" * 300 if suffix == ".png" else b"II*\x00garbage" * 30)
    _assert_one_line_error(corrupt, "cannot read")


def test_truncated_png(tmp_path, rng):
    p = tmp_path / "t.png"
    imsave(p, rng.integers(0, 256, size=(60, 70)).astype(np.uint8), check_contrast=False)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    _assert_one_line_error(p, "cannot read image")


def test_unsupported_suffix_missing_file_and_folder(tmp_path):
    gif = tmp_path / "a.gif"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(gif)
    _assert_one_line_error(gif, "unsupported image type '.gif'")
    _assert_one_line_error(tmp_path / "missing.png", "no such file")
    folder = tmp_path / "dir.png"
    folder.mkdir()
    _assert_one_line_error(folder, "folder")


def test_wrong_shapes_and_multi_page(tmp_path):
    tifffile.imwrite(tmp_path / "pages.tif", np.zeros((2, 8, 9), np.uint16))
    _assert_one_line_error(tmp_path / "pages.tif", "multi-page")
    np.save(tmp_path / "vol.npy", np.zeros((5, 8, 9)))
    _assert_one_line_error(tmp_path / "vol.npy", "shape (5, 8, 9)")
    np.save(tmp_path / "line.npy", np.zeros(7))
    _assert_one_line_error(tmp_path / "line.npy", "2-D")
    np.save(tmp_path / "c.npy", np.zeros((3, 3), np.complex64))
    _assert_one_line_error(tmp_path / "c.npy", "dtype")
    _assert_one_line_error(_png16_rgb(tmp_path / "rgb16.png", np.zeros((4, 5, 3), np.uint16)), "16-bit colour")


# ------------------------------------------------------------------ one reader for prepare and predict
def test_prepare_and_predict_use_the_same_reader(tmp_path):
    from kerasseg.data.readers import cbis, ddsm, folder, inbreast
    from kerasseg.export import predict

    import inspect

    from kerasseg.export import outputs, roi_input

    assert predict.read_image is imageio.read_image
    # no second reader anywhere in export: nothing defined there reads images or decodes pixels
    for mod in (predict, outputs, roi_input):
        own = [n for n, o in vars(mod).items() if (inspect.isfunction(o) or inspect.isclass(o))
               and o.__module__ == mod.__name__]
        assert not [n for n in own if "read" in n.lower() or "dicom" in n.lower()], own
    assert folder.read_image is imageio.read_image and ddsm.read_image is imageio.read_image
    assert inbreast.read_dicom is imageio.read_dicom and cbis.read_dicom is imageio.read_dicom


def test_prepare_and_predict_read_a_dicom_to_the_same_values(tmp_path):
    """A constant DICOM with slope/intercept: the prepared ROI (any resize keeps a constant) holds
    raw * slope + intercept, the value predict reads."""
    from kerasseg.data.readers import prepare
    from kerasseg.export.predict import read_image as predict_read

    raw = np.full((30, 30), 1000, np.uint16)
    dcm = write_dicom(tmp_path / "src" / "images" / "x1.dcm", raw, slope=2.0, intercept=-5.0)
    mask = np.zeros((30, 30), np.uint8)
    mask[8:20, 10:22] = 255
    (tmp_path / "src" / "masks").mkdir()
    imsave(tmp_path / "src" / "masks" / "x1.png", mask, check_contrast=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KerassegWarning)
        ds, _ = prepare("folder", tmp_path / "src", size=20, val_fraction=0.0, test_fraction=0.0)
    np.testing.assert_allclose(predict_read(dcm).pixels, 1995.0)
    np.testing.assert_allclose(ds.images[0], 1995.0, rtol=1e-6)
