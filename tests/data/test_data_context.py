"""Context windows (issue 19): kerasseg.data.roi.context_window, the windows `data prepare` writes for
every reader and the phantom's, their geometry, and the save/load round trip."""

import numpy as np
import pydicom
import pytest
from skimage.io import imsave

from fixtures.data import gradient_image, make_inbreast, rect
from kerasseg.data import phantom, transforms
from kerasseg.data.dataset import CONTEXT_KEYS, load_npz, save_npz
from kerasseg.data.info import summarize
from kerasseg.data.readers import prepare
from kerasseg.data.roi import context_window, mask_box, resize_image, resize_mask
from kerasseg.errors import KerassegError

H, W = 60, 80
DIAMOND = [(140, 30), (160, 50), (140, 70), (120, 50)]  # |x-140| + |y-50| <= 20 in a 150x200 image


def coord_image():
    """Every pixel holds its own coordinates: value = 1000 * row + column (exact in float32)."""
    yy, xx = np.mgrid[:H, :W]
    return (1000.0 * yy + xx).astype(np.float32)


def ref_window(image, mask, box):
    """Independent NumPy reference: the square (side twice the longer box side, top-left the centre
    minus half the side rounded half up), edge padding by clipping the indices, mask 0 outside."""
    x0, y0, x1, y1 = box
    side = 2 * max(y1 - y0, x1 - x0)
    top = int(np.floor((y0 + y1 - side) / 2 + 0.5))
    left = int(np.floor((x0 + x1 - side) / 2 + 0.5))
    rows, cols = np.arange(top, top + side), np.arange(left, left + side)
    h, w = image.shape
    win = image[np.clip(rows, 0, h - 1)][:, np.clip(cols, 0, w - 1)]
    inside = ((rows >= 0) & (rows < h))[:, None] & ((cols >= 0) & (cols < w))[None, :]
    win_mask = np.where(inside, mask[np.clip(rows, 0, h - 1)][:, np.clip(cols, 0, w - 1)], 0)
    valid = [max(0, -top), max(0, -left), min(side, h - top), min(side, w - left)]
    return win, win_mask.astype(np.uint8), top, left, side, valid


def box_mask(box):
    x0, y0, x1, y1 = box
    m = np.zeros((H, W), np.uint8)
    m[y0:y1, x0:x1] = 1
    m[y0, x0] = 0 if (y1 - y0) * (x1 - x0) > 1 else 1  # not a full rectangle: a corner cut
    return m


# boxes inside, at each border and in each corner of the 60x80 image (x0, y0, x1, y1)
BOXES = {"inside": (30, 20, 45, 31), "top": (35, 0, 45, 12), "bottom": (10, 50, 25, 60),
         "left": (0, 25, 9, 40), "right": (70, 20, 80, 28), "top-left": (0, 0, 14, 10),
         "top-right": (66, 0, 80, 7), "bottom-left": (0, 44, 12, 60), "bottom-right": (75, 57, 80, 60),
         "odd-centre": (31, 21, 44, 30), "one-pixel": (40, 30, 41, 31)}


# ------------------------------------------------------------------ context_window geometry
@pytest.mark.parametrize("where", sorted(BOXES))
@pytest.mark.parametrize("mirror", [False, True])
def test_window_at_native_size_is_the_padded_crop(where, mirror):
    box = BOXES[where]
    img, m = coord_image(), box_mask(box)
    assert mask_box(m) == box
    ref, ref_mask, top, left, side, valid = ref_window(img, m, box)
    if side >= 8:  # size == side: the resize is the identity, the window is the reference pixel for pixel
        size, scale = side, 1.0
    else:          # a tiny box: at 8 x 8 through the one resize
        size, scale = 8, 8 / side
        ref = np.asarray(transforms.resize(ref[None].astype(np.float32), 8))[0]
        ref_mask = np.asarray(transforms.resize_mask(ref_mask[None], 8))[0]
    win, win_mask, box_in, valid_in, sp = context_window(img, m, box, size=size, mirror=mirror)
    if mirror:
        ref, ref_mask = ref[:, ::-1], ref_mask[:, ::-1]
    np.testing.assert_array_equal(win, ref)
    np.testing.assert_array_equal(win_mask, ref_mask)
    assert win.dtype == np.float32 and win_mask.dtype == np.uint8 and sp is None
    n = win.shape[0]
    x0, y0, x1, y1 = box
    exp_box = np.array([y0 - top, x0 - left, y1 - top, x1 - left], np.float64) * scale
    exp_valid = np.array(valid, np.float64) * scale
    if mirror:
        exp_box = np.array([exp_box[0], n - exp_box[3], exp_box[2], n - exp_box[1]])
        exp_valid = np.array([exp_valid[0], n - exp_valid[3], exp_valid[2], n - exp_valid[1]])
    np.testing.assert_allclose(box_in, exp_box, atol=1e-5)
    np.testing.assert_allclose(valid_in, exp_valid, atol=1e-5)
    assert box_in.dtype == np.float32 and valid_in.dtype == np.float32
    if side >= 8:
        # the coordinates encoded in the pixels: inside the valid part, the window pixel at
        # (r, c) is the original pixel (top + r, left + c) (mirrored: column read from the right)
        vy0, vx0, vy1, vx1 = (int(round(v)) for v in valid_in)
        sub = win[vy0:vy1, vx0:vx1]
        rr = (sub // 1000).astype(int)
        cc = (sub % 1000).astype(int)
        assert np.all(np.diff(rr, axis=0) == 1) and np.all(np.diff(cc, axis=1) == (-1 if mirror else 1))
        # the mask lies inside box_in_window and fills its border rows/columns
        by0, bx0, by1, bx1 = (int(round(v)) for v in box_in)
        assert win_mask.sum() == win_mask[by0:by1, bx0:bx1].sum() == m.sum()
        # the box is centred in the window (to half a pixel) and its longer side is half the window
        assert abs((box_in[0] + box_in[2]) / 2 - n / 2) <= 0.5 and abs((box_in[1] + box_in[3]) / 2 - n / 2) <= 0.5
        assert max(box_in[2] - box_in[0], box_in[3] - box_in[1]) == pytest.approx(n / 2)
    # padding: valid is the whole window exactly when the square lies inside the image
    inside = top >= 0 and left >= 0 and top + side <= H and left + side <= W
    assert np.allclose(valid_in, [0, 0, n, n]) == inside


def test_resized_window_geometry_and_spacing():
    img, box = coord_image(), (20, 15, 50, 39)       # 24 rows x 30 columns: side 60 -> 32 pixels
    m = np.zeros((H, W), np.uint8)
    m[15:39, 20:50] = 1
    win, win_mask, box_in, valid, sp = context_window(img, m, box, size=32, spacing=(0.05, 0.08))
    ref, ref_mask, top, left, side, ref_valid = ref_window(img, m, box)
    assert side == 60 and (top, left) == (-3, 5)
    # the one resize of the padded crop
    np.testing.assert_allclose(win, np.asarray(transforms.resize(ref[None], 32))[0], rtol=1e-6, atol=1e-2)
    s = 32 / 60
    np.testing.assert_allclose(box_in, [18 * s, 15 * s, 42 * s, 45 * s], rtol=1e-6)
    np.testing.assert_allclose(valid, [3 * s, 0, 32, 32], rtol=1e-6)
    # the resized mask's bounding box is the box in window pixels (to a pixel)
    rows, cols = np.flatnonzero(win_mask.any(1)), np.flatnonzero(win_mask.any(0))
    np.testing.assert_allclose([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1], box_in, atol=1.0)
    # area-preserving pixel size of the 60 x 60 square at 32 x 32; the mass area in mm^2 is kept
    assert sp == pytest.approx(np.sqrt(0.05 * 0.08) * 60 / 32)
    assert win_mask.sum() * sp ** 2 == pytest.approx(m.sum() * 0.05 * 0.08, rel=0.1)
    # intensities: the pixel values (row * 1000 + column) follow the window coordinates
    r, c = 16, 20
    y, x = top + (r + 0.5) / s - 0.5, left + (c + 0.5) / s - 0.5
    assert win[r, c] == pytest.approx(1000 * y + x, rel=2e-3)


def test_thin_mass_keeps_a_pixel():
    m = np.zeros((H, W), np.uint8)
    m[30, 5:75] = 1                                    # 1 x 70: side 140, the row is 0.06 window px
    win, win_mask, box_in, _, _ = context_window(coord_image(), m, mask_box(m), size=8)
    assert win_mask.sum() >= 1
    r, c = np.argwhere(win_mask)[0]
    assert box_in[0] - 1 <= r <= box_in[2] and box_in[1] - 1 <= c <= box_in[3]


@pytest.mark.parametrize("kwargs, box", [(dict(size=4), (10, 10, 20, 20)), (dict(size=8.0), (10, 10, 20, 20)),
                                         (dict(size=True), (10, 10, 20, 20)), ({}, (10, 10, 10, 20)),
                                         ({}, (10, 10, 90, 20)), ({}, (-1, 10, 5, 20)), ({}, (1, 2, 3)),
                                         ({}, "box")])
def test_bad_arguments_are_one_line_errors(kwargs, box):
    img = coord_image()
    with pytest.raises(KerassegError) as exc:
        context_window(img, np.ones_like(img), box, **kwargs)
    assert "\n" not in str(exc.value)


def test_shape_mismatch_and_not_2d():
    img = coord_image()
    with pytest.raises(KerassegError, match="differs"):
        context_window(img, np.ones((H, W + 1)), (0, 0, 5, 5))
    with pytest.raises(KerassegError, match="2-D"):
        context_window(img[None], img[None], (0, 0, 5, 5))


# ------------------------------------------------------------------ the phantom
@pytest.fixture(scope="module")
def small_phantom():
    return phantom.make_phantom(4, 1, 3, seed=3, context_size=64, return_info=True)


def _crop(window, box):
    y0, x0, y1, x1 = (int(np.floor(v + 0.5)) for v in box)
    return window[y0:y1, x0:x1]


def test_phantom_rois_do_not_depend_on_the_windows(small_phantom):
    ds, _ = small_phantom
    plain = phantom.make_phantom(4, 1, 3, seed=3, context_size=0)
    assert not plain.has_context and ds.has_context
    for key in ("images", "masks", "boxes", "spacing_mm"):
        np.testing.assert_array_equal(getattr(ds, key), getattr(plain, key))
    assert ds.data_hash() == plain.data_hash()
    # the windows are deterministic too
    again = phantom.make_phantom(4, 1, 3, seed=3, context_size=64)
    for key in CONTEXT_KEYS:
        np.testing.assert_array_equal(getattr(ds, key), getattr(again, key))


def test_phantom_windows_hold_the_rois(small_phantom):
    ds, info = small_phantom
    n = len(ds)
    assert ds.context.shape == (n, 64, 64) and ds.context_mask.shape == (n, 64, 64)
    assert ds.context_box.shape == (n, 4) and ds.context_valid.shape == (n, 4)
    for i in range(n):
        # the ROI's own box (the tight box with the phantom's jitter) cut back out of the window
        # and resized like the ROIs is the ROI
        roi = resize_image(_crop(ds.context[i], info[i]["roi_box_in_window"]), 40)
        assert np.corrcoef(roi.ravel(), ds.images[i].ravel())[0, 1] > 0.95
        got = resize_mask(_crop(ds.context_mask[i], info[i]["roi_box_in_window"]), 40).astype(bool)
        dice = 2 * (got & (ds.masks[i] == 1)).sum() / (got.sum() + ds.masks[i].sum())
        assert dice > 0.9
        # context_box is the tight box of the mass: the window mask lies inside it and touches it
        y0, x0, y1, x1 = ds.context_box[i]
        rows, cols = np.flatnonzero(ds.context_mask[i].any(1)), np.flatnonzero(ds.context_mask[i].any(0))
        np.testing.assert_allclose([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1], [y0, x0, y1, x1], atol=1.0)
        # the window around it: centred, twice the longer side
        assert max(y1 - y0, x1 - x0) == pytest.approx(32, abs=1e-4)
        assert abs((y0 + y1) / 2 - 32) <= 0.5 and abs((x0 + x1) / 2 - 32) <= 0.5
        # the synthetic image continues around the canvas: the whole window is image
        np.testing.assert_array_equal(ds.context_valid[i], [0, 0, 64, 64])
    # one physical mass: its area in mm^2 from the window and from the ROI agree
    area_roi = ds.masks.reshape(n, -1).sum(1) * ds.spacing_mm.astype(np.float64) ** 2
    area_win = ds.context_mask.reshape(n, -1).sum(1) * ds.context_spacing_mm.astype(np.float64) ** 2
    np.testing.assert_allclose(area_win, area_roi, rtol=0.1)


def test_phantom_window_has_no_seam(small_phantom):
    # the pixels added around the canvas (the window's outer bands) have the canvas's texture and
    # quantum noise, not copies of the edge: their pixel-to-pixel differences, along both axes, are
    # like those in the middle of the window
    ds, _ = small_phantom
    for i in range(len(ds)):
        w = ds.context[i].astype(np.float64)

        def roughness(a):
            return 0.5 * (np.abs(np.diff(a, axis=0)).mean() + np.abs(np.diff(a, axis=1)).mean())

        mid = roughness(w[24:40, 24:40])
        for band in (w[:6], w[-6:], w[:, :6], w[:, -6:]):
            assert 0.5 < roughness(band) / mid < 2.0


def test_phantom_context_size_validation():
    for bad in (4, -1, 2.5, True):
        with pytest.raises(KerassegError, match="context_size"):
            phantom.make_phantom(1, 0, 0, context_size=bad)
    assert not phantom.make_phantom(1, 0, 0, context_size=None).has_context


# ------------------------------------------------------------------ data prepare
def _inbreast(tmp_path):
    # a mass inside, one touching the left and bottom borders (150 x 200 image); case 2 is a right breast
    return make_inbreast(tmp_path, [dict(id="1", patient="p1", lat="L", rois=[("Mass", DIAMOND),
                                                                              ("Mass", rect(2, 100, 30, 140))]),
                                    dict(id="2", patient="p2", lat="R", rois=[("Mass", [(40, 30), (90, 40),
                                                                                        (50, 90)])])])


def test_inbreast_prepare_writes_windows_around_the_tight_box(tmp_path):
    src = _inbreast(tmp_path / "ib")
    ds, _ = prepare("inbreast", src, size=40, val_fraction=0.0, context_size=32)
    assert ds.has_context and ds.context.shape == (3, 32, 32)
    assert ds.context_box.dtype == np.float32 and ds.context_mask.dtype == np.uint8
    pixels = pydicom.dcmread(next((src / "AllDICOMs").glob("1_*.dcm"))).pixel_array.astype(np.float32)
    # the diamond: box (120, 30, 161, 71), side 82, top-left (10, 100): inside the 150 x 200 image
    diamond = (np.abs(np.mgrid[:150, :200][1] - 140) + np.abs(np.mgrid[:150, :200][0] - 50)) <= 20
    ref, ref_mask, top, left, side, valid = ref_window(pixels, diamond.astype(np.uint8), (120, 30, 161, 71))
    assert (top, left, side) == (10, 100, 82)
    np.testing.assert_allclose(ds.context[0], np.asarray(transforms.resize(ref[None], 32))[0], rtol=1e-5, atol=0.05)
    np.testing.assert_array_equal(ds.context_mask[0], np.asarray(transforms.resize_mask(ref_mask[None], 32))[0])
    np.testing.assert_allclose(ds.context_box[0], np.array([20, 20, 61, 61]) * 32 / 82, rtol=1e-6)
    np.testing.assert_array_equal(ds.context_valid[0], [0, 0, 32, 32])
    assert ds.context_spacing_mm[0] == pytest.approx(0.07 * 82 / 32)
    # the rectangle at the left/bottom border: the window is edge-padded there and valid says so
    y0, x0, y1, x1 = ds.context_valid[1]
    assert y0 == 0 and x0 > 0 and y1 < 32 and x1 == 32
    # the margin changes the ROIs, never the windows (tight box)
    wide, _ = prepare("inbreast", src, size=40, margin=0.25, val_fraction=0.0, context_size=32)
    assert not np.array_equal(wide.images, ds.images)
    for key in CONTEXT_KEYS:
        np.testing.assert_array_equal(getattr(wide, key), getattr(ds, key))
    # --mirror flips the right breast's window like its ROI; the box follows
    mirrored, _ = prepare("inbreast", src, size=40, val_fraction=0.0, mirror=True, context_size=32)
    np.testing.assert_array_equal(mirrored.context[2], ds.context[2][:, ::-1])
    np.testing.assert_array_equal(mirrored.context_mask[2], ds.context_mask[2][:, ::-1])
    b = ds.context_box[2]
    np.testing.assert_allclose(mirrored.context_box[2], [b[0], 32 - b[3], b[2], 32 - b[1]], rtol=1e-6)
    np.testing.assert_array_equal(mirrored.context[:2], ds.context[:2])
    # no windows on request
    none, _ = prepare("inbreast", src, size=40, val_fraction=0.0, context_size=0)
    assert not none.has_context and all(getattr(none, k) is None for k in CONTEXT_KEYS)
    np.testing.assert_array_equal(none.images, ds.images)


def test_folder_prepare_windows_all_or_nothing(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    img = gradient_image(60, 70)
    mask = np.zeros((60, 70), np.uint8)
    mask[5:20, 40:60] = 255
    mask[35:55, 3:15] = 255
    imsave(tmp_path / "images" / "a.png", img, check_contrast=False)
    imsave(tmp_path / "masks" / "a.png", mask, check_contrast=False)
    ds, _ = prepare("folder", tmp_path, size=20, val_fraction=0.0, test_fraction=0.0, context_size=16)
    assert ds.has_context and ds.context.shape == (2, 16, 16)
    np.testing.assert_allclose(ds.context_box[0], np.array([12, 10, 27, 30]) * 16 / 40, rtol=1e-6)
    assert np.isnan(ds.context_spacing_mm).all()          # PNGs: pixel size unknown
    # already-cropped ROIs have no surrounding image: no file with any of them gets windows
    np.save(tmp_path / "images" / "b.npy", img[:30, :30].astype(np.float32))
    np.save(tmp_path / "masks" / "b.npy", np.pad(np.ones((10, 10)), 10))
    ready, _ = prepare("folder", tmp_path, size=20, ready_rois=True, val_fraction=0.0, context_size=16)
    assert len(ready) == 2 and not ready.has_context


def test_save_load_round_trip_and_info(tmp_path):
    ds, _ = prepare("phantom", None, size=24, n_train=3, n_val=1, n_test=2, context_size=16)
    assert ds.has_context and ds.context.shape == (6, 16, 16)
    path = save_npz(ds, tmp_path / "ph.npz")
    back = load_npz(path)
    for key in CONTEXT_KEYS:
        got, want = getattr(back, key), getattr(ds, key)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    assert back.data_hash() == ds.data_hash()
    test = back.subset("test")
    np.testing.assert_array_equal(test.context, ds.context[ds.split == "test"])
    assert "context windows: 16x16" in summarize(back)
    plain, _ = prepare("phantom", None, size=24, n_train=3, n_val=1, n_test=2, context_size=0)
    assert not plain.has_context and "context windows: none" in summarize(plain)
    np.testing.assert_array_equal(plain.images, ds.images)


@pytest.mark.parametrize("bad", [4, -1, 2.5, "64", True])
def test_prepare_rejects_bad_context_size(tmp_path, bad):
    with pytest.raises(KerassegError, match="context_size"):
        prepare("phantom", None, n_train=1, n_val=0, n_test=0, context_size=bad)
