"""Readers, ROI extraction and splits on fixtures written in the real formats."""

import warnings

import numpy as np
import pydicom
import pytest
from skimage.io import imsave

from fixtures.data import (gradient_image, make_ddsm_case, make_inbreast, osirix_plist, rect, write_cbis,
                           write_dicom)
from kerasseg.data import splits
from kerasseg.data.readers import prepare
from kerasseg.data.roi import expand_box, extract_roi, resize_mask
from kerasseg.errors import KerassegError, KerassegWarning

DIAMOND = [(140, 30), (160, 50), (140, 70), (120, 50)]  # |x-140| + |y-50| <= 20, x = column


def diamond_ref(shape, cx, cy, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (np.abs(xx - cx) + np.abs(yy - cy)) <= r


def ib_case(i, rois, patient=None, lat="L", **kw):
    return dict(id=str(i), patient=patient or f"hash{i}", lat=lat, rois=rois, **kw)


# ------------------------------------------------------------------ INbreast
def test_inbreast_geometry_exact(tmp_path):
    # 150 rows x 200 columns; the diamond sits right of centre and high: x = column
    make_inbreast(tmp_path, [ib_case(7, [("Mass", DIAMOND), ("Calcification", rect(5, 5, 9, 9))])])
    ds, summary = prepare("inbreast", tmp_path, size=41, val_fraction=0.0)
    assert list(ds.ids) == ["7-mass1"] and summary.masses == 1
    assert ds.boxes[0].tolist() == [120, 30, 161, 71]
    dcm = next((tmp_path / "AllDICOMs").glob("7_*.dcm"))
    pixels = pydicom.dcmread(dcm).pixel_array.astype(np.float32)
    assert pixels.shape == (150, 200)
    # box is 41x41 and size 41: the ROI is the crop itself
    np.testing.assert_array_equal(ds.images[0], pixels[30:71, 120:161])
    ref = diamond_ref((150, 200), 140, 50, 20)
    assert ref.sum() == 2 * 20 ** 2 + 2 * 20 + 1
    np.testing.assert_array_equal(ds.masks[0], ref[30:71, 120:161])
    assert ds.spacing_mm[0] == pytest.approx(0.07)


def test_inbreast_resized_roi_keeps_area_and_spacing(tmp_path):
    poly = [(30, 20), (110, 25), (120, 60), (60, 90), (25, 70)]
    make_inbreast(tmp_path, [ib_case(1, [("Mass", poly)], spacing=(0.05, 0.08))])
    ds, _ = prepare("inbreast", tmp_path, size=40, val_fraction=0.0)
    x0, y0, x1, y1 = ds.boxes[0]
    assert (x0, y0, x1, y1) == (25, 20, 121, 91)
    from skimage.draw import polygon

    full = np.zeros((150, 200), bool)
    rr, cc = polygon([p[1] for p in poly], [p[0] for p in poly], full.shape)
    full[rr, cc] = True
    frac_full = full[y0:y1, x0:x1].mean()
    assert abs(ds.masks[0].mean() - frac_full) < 0.03
    # one ROI pixel has the area of (h*w/size^2) original pixels
    expected = np.sqrt(0.05 * (y1 - y0) / 40 * 0.08 * (x1 - x0) / 40)
    assert ds.spacing_mm[0] == pytest.approx(expected, rel=1e-6)
    assert ds.masks.dtype == np.uint8 and ds.images.dtype == np.float32


def test_inbreast_margin_contains_mass_and_clips(tmp_path):
    make_inbreast(tmp_path, [ib_case(1, [("Mass", DIAMOND), ("Mass", rect(2, 100, 30, 140))])])
    ds, _ = prepare("inbreast", tmp_path, size=40, margin=0.25, val_fraction=0.0)
    assert list(ds.ids) == ["1-mass1", "1-mass2"]
    # diamond 41 wide: 10 pixels more on each side
    assert ds.boxes[0].tolist() == [110, 20, 171, 81]
    # the rectangle touches the left/bottom border: clipped to the 200x150 image
    x0, y0, x1, y1 = ds.boxes[1]
    assert x0 == 0 and y1 == 150 and x1 == 31 + 7 and y0 == 100 - 10
    # the whole mass is inside the box and away from the ROI border after margin
    assert ds.masks[0][0].sum() == 0 and ds.masks[0][-1].sum() == 0
    assert ds.masks[0][:, 0].sum() == 0 and ds.masks[0][:, -1].sum() == 0


def test_inbreast_mirror_flips_right_breasts(tmp_path):
    make_inbreast(tmp_path, [ib_case(1, [("Mass", DIAMOND)], lat="L"),
                             ib_case(2, [("Mass", [(40, 30), (90, 40), (50, 90)])], lat="R")])
    plain, _ = prepare("inbreast", tmp_path, size=40, val_fraction=0.0)
    mirrored, _ = prepare("inbreast", tmp_path, size=40, val_fraction=0.0, mirror=True)
    np.testing.assert_array_equal(mirrored.images[0], plain.images[0])
    np.testing.assert_array_equal(mirrored.images[1], plain.images[1][:, ::-1])
    np.testing.assert_array_equal(mirrored.masks[1], plain.masks[1][:, ::-1])
    assert not np.array_equal(plain.masks[1], plain.masks[1][:, ::-1])  # asymmetric: the flip shows
    np.testing.assert_array_equal(mirrored.boxes, plain.boxes)  # boxes stay in original coordinates


def _many_cases(n=10, patients=5):
    ids = [3, 25, 100, 7, 51, 12, 9, 64, 33, 80, 2, 41][:n]
    return [ib_case(i, [("Mass", DIAMOND)] + ([("Mass", rect(10, 10, 30, 30))] if k % 3 == 0 else []),
                    patient=f"pat{k % patients}") for k, i in enumerate(ids)]


def test_inbreast_protocol_split_first_half_by_numeric_id(tmp_path):
    make_inbreast(tmp_path, _many_cases(8))
    ds, _ = prepare("inbreast", tmp_path, size=40, val_fraction=0.0)
    order = sorted(range(len(ds)), key=lambda i: (int(ds.ids[i].split("-")[0]), ds.ids[i]))
    n = len(ds)
    assert n == 11
    assert [ds.split[i] for i in order] == ["train"] * 6 + ["test"] * 5
    with_val, _ = prepare("inbreast", tmp_path, size=40, val_fraction=0.34, seed=3)
    assert set(with_val.ids[with_val.split == "test"]) == set(ds.ids[ds.split == "test"])
    assert (with_val.split == "val").sum() == 2  # round(0.34 * 6), carved from train


def test_inbreast_patient_split_groups_and_determinism(tmp_path):
    make_inbreast(tmp_path, _many_cases(12, patients=6))
    a, _ = prepare("inbreast", tmp_path, split="patient", seed=1, val_fraction=0.3)
    b, _ = prepare("inbreast", tmp_path, split="patient", seed=1, val_fraction=0.3)
    np.testing.assert_array_equal(a.split, b.split)
    assert a.data_hash() == b.data_hash()
    patient_of = {}
    for f in (tmp_path / "AllDICOMs").glob("*.dcm"):
        patient_of[f.name.split("_")[0]] = f.name.split("_")[1]
    for s in range(6):
        ds, _ = prepare("inbreast", tmp_path, split="patient", seed=s, val_fraction=0.3)
        sides = {}
        for i, split in zip(ds.ids, ds.split):
            sides.setdefault(patient_of[i.split("-")[0]], set()).add(split)
        assert all(len(v) == 1 for v in sides.values()), sides
        c = ds.counts()
        assert c["test"] > 0 and c["train"] > 0 and c["val"] > 0
        assert abs(c["test"] - len(ds) / 2) <= 3
    seeds = {tuple(prepare("inbreast", tmp_path, split="patient", seed=s, val_fraction=0.0)[0].split)
             for s in range(6)}
    assert len(seeds) > 1


def test_inbreast_contour_leaving_image_is_clipped_with_warning(tmp_path):
    make_inbreast(tmp_path, [ib_case(1, [("Mass", [(180, 100), (230, 120), (190, 170)])])])
    with pytest.warns(KerassegWarning, match="leaves"):
        ds, summary = prepare("inbreast", tmp_path, size=40, val_fraction=0.0)
    x0, y0, x1, y1 = ds.boxes[0]
    assert x1 == 200 and y1 == 150 and x0 == 180 and y0 == 100
    assert any("leaves" in w for w in summary.warnings)


def test_inbreast_xml_without_dicom_is_skipped_and_counted(tmp_path):
    make_inbreast(tmp_path, [ib_case(1, [("Mass", DIAMOND)]), ib_case(2, [("Mass", DIAMOND)], dicom=False)])
    with pytest.warns(KerassegWarning, match="no DICOM"):
        ds, summary = prepare("inbreast", tmp_path, size=40, val_fraction=0.0)
    assert list(ds.ids) == ["1-mass1"]
    assert len(summary.skipped) == 1 and summary.skipped[0][0].endswith("2.xml")


@pytest.mark.parametrize("problem", ["garbage", "no_pixels", "bad_xml", "two_points", "no_mass"])
def test_inbreast_bad_input_is_one_line_error(tmp_path, problem):
    make_inbreast(tmp_path, [ib_case(1, [("Mass", DIAMOND)])])
    dcm = next((tmp_path / "AllDICOMs").glob("*.dcm"))
    xml = tmp_path / "AllXML" / "1.xml"
    if problem == "garbage":
        dcm.write_bytes(b"not a dicom at all" * 10)
        target, words = dcm, "DICOM"
    elif problem == "no_pixels":
        write_dicom(dcm, None, pixel_data=False)
        target, words = dcm, "no pixel data"
    elif problem == "bad_xml":
        xml.write_text("<plist><dict><key>Images</key><array>")
        target, words = xml, "parse"
    elif problem == "two_points":
        xml.write_bytes(osirix_plist([("Mass", [(1, 2), (3, 4)])]))
        target, words = xml, "at least 3"
    else:
        xml.write_bytes(osirix_plist([("Calcification", DIAMOND)]))
        target, words = None, "no masses"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KerassegWarning)
        with pytest.raises(KerassegError) as info:
            prepare("inbreast", tmp_path)
    msg = str(info.value)
    assert "\n" not in msg and words in msg
    if target is not None:
        assert msg.startswith(str(target))


# ------------------------------------------------------------------ DDSM
def test_ddsm_chain_codes_directions_and_area(tmp_path):
    img = gradient_image(150, 200)
    rect_codes = [0] * 20 + [2] * 30 + [4] * 20 + [6] * 30       # up first: 0 = up (y decreases)
    diamond_codes = [3] * 10 + [5] * 10 + [7] * 10 + [1] * 10   # diagonals, clockwise from the top
    make_ddsm_case(tmp_path / "BCRP_MASS_0", "case0001",
                   {"LEFT_CC": (img, [("MASS SHAPE OVAL MARGINS CIRCUMSCRIBED", 50, 60, rect_codes),
                                      ("MASS SHAPE ROUND", 150, 40, diamond_codes)]),
                    "RIGHT_CC": (img, [("CALCIFICATION TYPE PLEOMORPHIC", 50, 60, rect_codes)])})
    ds, _ = prepare("ddsm-bcrp", tmp_path, size=21, val_fraction=0.0)
    assert list(ds.ids) == ["A_0001_1.LEFT_CC-mass1", "A_0001_1.LEFT_CC-mass2"]
    assert ds.boxes[0].tolist() == [50, 40, 81, 61]
    assert ds.boxes[1].tolist() == [140, 40, 161, 61]
    # the diamond's box is 21x21 = size: exact pixels, boundary included
    ref = diamond_ref((150, 200), 150, 50, 10)
    assert ref.sum() == 221
    np.testing.assert_array_equal(ds.masks[1], ref[40:61, 140:161])
    np.testing.assert_array_equal(ds.images[1], img[40:61, 140:161].astype(np.float32))
    assert ds.masks[0].all()  # a filled rectangle fills its own box
    np.testing.assert_allclose(ds.spacing_mm, [0.05 * np.sqrt(21 * 31) / 21, 0.05], rtol=1e-6)
    assert set(ds.split) == {"train"}


def test_ddsm_official_split_from_layout_and_lists(tmp_path):
    img = gradient_image(120, 100)
    codes = [2] * 10 + [4] * 10 + [6] * 10 + [0] * 10
    for vol, case in [("bcrp_mass_0", "case0001"), ("bcrp_mass_0", "case0002"), ("bcrp_mass_1", "case0003")]:
        make_ddsm_case(tmp_path / vol, case, {"LEFT_MLO": (img, [("MASS", 20, 20, codes)])})
    ds, _ = prepare("ddsm-bcrp", tmp_path, val_fraction=0.0)
    assert dict(zip(ds.ids, ds.split)) == {"A_0001_1.LEFT_MLO-mass1": "train", "A_0002_1.LEFT_MLO-mass1": "train",
                                           "A_0003_1.LEFT_MLO-mass1": "test"}
    tr, te = tmp_path / "train.txt", tmp_path / "test.txt"
    tr.write_text("# official\ncase0003\n")
    te.write_text("A_0001_1\n")
    with pytest.warns(KerassegWarning, match="neither"):
        ds2, summary = prepare("ddsm-bcrp", tmp_path, val_fraction=0.0, train_list=tr, test_list=te)
    assert dict(zip(ds2.ids, ds2.split)) == {"A_0001_1.LEFT_MLO-mass1": "test", "A_0003_1.LEFT_MLO-mass1": "train"}
    assert len(summary.skipped) == 1


def test_ddsm_missing_image_names_the_ljpeg(tmp_path):
    make_ddsm_case(tmp_path, "case0001", {"LEFT_CC": (None, [("MASS", 20, 20, [2, 4, 6, 0])])})
    with pytest.raises(KerassegError, match=r"A_0001_1\.LEFT_CC\.LJPEG"):
        prepare("ddsm-bcrp", tmp_path, split="random")


def test_ddsm_without_official_labels_needs_lists(tmp_path):
    make_ddsm_case(tmp_path, "case0001", {"LEFT_CC": (gradient_image(60, 60), [("MASS", 20, 20, [2, 4, 6, 0])])})
    with pytest.raises(KerassegError, match="official"):
        prepare("ddsm-bcrp", tmp_path)


# ------------------------------------------------------------------ CBIS-DDSM
def _blob(shape, box):
    m = np.zeros(shape, bool)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = True
    return m


def test_cbis_reads_csv_and_tcia_layout(tmp_path):
    shape = (150, 200)
    img = gradient_image(*shape)
    m1, m2 = _blob(shape, (120, 20, 160, 50)), _blob(shape, (10, 90, 40, 140))
    crop = img[20:50, 120:160]
    write_cbis(tmp_path, [dict(patient="P_00001", side="LEFT", view="CC", abn=1, image=img, mask=m1, crop=crop),
                          dict(patient="P_00001", side="LEFT", view="CC", abn=2, image=img, mask=m2, crop=crop)])
    write_cbis(tmp_path, [dict(patient="P_00002", side="RIGHT", view="MLO", abn=1, image=gradient_image(*shape, 5),
                               mask=m1, crop=crop)], csv_name="mass_case_description_test_set.csv")
    ds, _ = prepare("cbis-ddsm", tmp_path, size=40, val_fraction=0.0)
    got = dict(zip(ds.ids, zip(ds.split, map(tuple, ds.boxes))))
    assert got == {"Mass-Training_P_00001_LEFT_CC-mass1": ("train", (120, 20, 160, 50)),
                   "Mass-Training_P_00001_LEFT_CC-mass2": ("train", (10, 90, 40, 140)),
                   "Mass-Test_P_00002_RIGHT_MLO-mass1": ("test", (120, 20, 160, 50))}
    assert all(m.all() for m in ds.masks)  # rectangles fill their boxes
    assert ds.spacing_mm is None


def test_cbis_missing_files_are_skipped(tmp_path):
    shape = (80, 90)
    img = gradient_image(*shape)
    csv_path = write_cbis(tmp_path, [dict(patient="P_00009", side="LEFT", view="CC", abn=1, image=img,
                                          mask=_blob(shape, (5, 5, 30, 30)), crop=img[5:30, 5:30])])
    text = csv_path.read_text().replace("Mass-Training_P_00009_LEFT_CC_1", "Mass-Training_P_00009_LEFT_CC_7")
    csv_path.write_text(text)
    with pytest.raises(KerassegError, match="no masses"), pytest.warns(KerassegWarning, match="ROI mask"):
        prepare("cbis-ddsm", tmp_path)


# ------------------------------------------------------------------ folder
def test_folder_components_and_ready_rois(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    img = gradient_image(100, 120)
    mask = np.zeros((100, 120), np.uint8)
    mask[10:30, 80:110] = 255   # component 1 (raster order: top first)
    mask[60:90, 5:25] = 255     # component 2
    imsave(tmp_path / "images" / "a.png", img, check_contrast=False)
    imsave(tmp_path / "masks" / "a.png", mask, check_contrast=False)
    np.save(tmp_path / "images" / "b.npy", img[:50, :50].astype(np.float32))
    np.save(tmp_path / "masks" / "b.npy", np.pad(np.ones((20, 20)), 15)[:50, :50])
    imsave(tmp_path / "images" / "c.png", img, check_contrast=False)  # no mask: skipped
    with pytest.warns(KerassegWarning, match="no mask"):
        ds, summary = prepare("folder", tmp_path, size=20, val_fraction=0.0, test_fraction=0.34, seed=0)
    assert list(ds.ids) == ["a-mass1", "a-mass2", "b-mass1"]
    assert ds.boxes.tolist() == [[80, 10, 110, 30], [5, 60, 25, 90], [15, 15, 35, 35]]
    np.testing.assert_array_equal(ds.images[2], img[15:35, 15:35])
    assert (ds.split == "test").sum() == 1 and len(summary.skipped) == 1
    with pytest.warns(KerassegWarning):
        ready, _ = prepare("folder", tmp_path, size=50, ready_rois=True, val_fraction=0.0)
    assert list(ready.ids) == ["a-mass1", "b-mass1"]
    np.testing.assert_array_equal(ready.images[1], img[:50, :50])
    assert ready.masks[1].sum() == 400


# ------------------------------------------------------------------ ROI and splits units
def test_resize_mask_is_area_faithful(rng):
    yy, xx = np.mgrid[:300, :240]
    for _ in range(5):
        cy, cx, a, b = rng.uniform(100, 200), rng.uniform(80, 160), rng.uniform(30, 80), rng.uniform(30, 70)
        m = ((yy - cy) / a) ** 2 + ((xx - cx) / b) ** 2 <= 1
        out = resize_mask(m, 40)
        assert set(np.unique(out)) <= {0, 1}
        assert abs(out.mean() - m.mean()) < 0.02


def test_expand_box_and_extract_roi_bounds():
    assert expand_box((10, 20, 30, 60), 0.5, (100, 100)) == (0, 0, 40, 80)
    assert expand_box((10, 20, 30, 60), 0.0, (100, 100)) == (10, 20, 30, 60)
    img = np.arange(100 * 80, dtype=np.float32).reshape(100, 80)
    m = np.zeros((100, 80), bool)
    m[40:42, 70:80] = True
    roi, roi_mask, box, sp = extract_roi(img, m, size=10, spacing=(0.1, 0.2))
    assert box == (70, 40, 80, 42) and roi.shape == (10, 10) and roi_mask.all()
    assert sp == pytest.approx(np.sqrt(0.1 * 2 / 10 * 0.2 * 10 / 10))
    with pytest.raises(KerassegError):
        extract_roi(img, np.zeros_like(m))


def test_split_helpers():
    s = splits.random_split(20, 0.25, seed=4)
    assert (s == "test").sum() == 5
    np.testing.assert_array_equal(s, splits.random_split(20, 0.25, seed=4))
    groups = [f"g{i // 3}" for i in range(30)]
    g = splits.group_split(groups, 0.5, seed=2)
    for name in set(groups):
        assert len({g[i] for i in range(30) if groups[i] == name}) == 1
    v = splits.carve_val(g, 0.2, seed=2, groups=groups)
    assert set(np.flatnonzero(v == "test")) == set(np.flatnonzero(g == "test"))
    assert (v == "val").sum() == 3  # round(0.2 * 15) = 3, one whole group of three
    assert splits.natural_key("img2") < splits.natural_key("img10")
    with pytest.raises(KerassegError):
        splits.assign("official", n=3, official=[None, "train", "test"])


def test_cbis_tolerates_swapped_crop_and_mask_paths(tmp_path):
    shape = (90, 110)
    img = gradient_image(*shape)
    m = _blob(shape, (60, 10, 100, 40))
    csv_path = write_cbis(tmp_path, [dict(patient="P_00003", side="RIGHT", view="CC", abn=1, image=img, mask=m,
                                          crop=img[10:40, 60:100])])
    text = csv_path.read_text()
    text = text.replace("000001.dcm", "XXXX").replace("000000.dcm\n", "000001.dcm\n").replace("XXXX", "000000.dcm")
    csv_path.write_text(text)
    ds, _ = prepare("cbis-ddsm", csv_path, size=20, val_fraction=0.0, mirror=True)
    assert ds.boxes.tolist() == [[60, 10, 100, 40]] and list(ds.split) == ["train"]


def test_ddsm_converted_image_of_other_size_scales_outline(tmp_path):
    small = gradient_image(75, 100)  # half of the 150 x 200 the .ics says
    codes = [2] * 40 + [4] * 20 + [6] * 40 + [0] * 20
    case = make_ddsm_case(tmp_path / "mass_1", "case0005", {"RIGHT_MLO": (small, [("MASS", 40, 20, codes)])})
    ics = case / "A_0005_1.ics"
    ics.write_text(ics.read_text().replace("LINES 75 PIXELS_PER_LINE 100", "LINES 150 PIXELS_PER_LINE 200"))
    with pytest.warns(KerassegWarning, match="scaled"):
        ds, _ = prepare("ddsm-bcrp", tmp_path, size=21, val_fraction=0.0)
    assert ds.boxes.tolist() == [[20, 10, 41, 21]] and list(ds.split) == ["test"]
    # 50 micron pixels at half resolution = 0.1 mm, box 21 x 11 resized to 21 x 21
    assert ds.spacing_mm[0] == pytest.approx(0.1 * np.sqrt(21 * 11) / 21)


def test_folder_dicom_spacing_and_laterality(tmp_path):
    img = gradient_image(60, 80)
    mask = np.zeros((60, 80), np.uint8)
    mask[10:30, 50:60] = 1
    mask[10:30, 50] = 0  # asymmetric so the mirror is visible
    write_dicom(tmp_path / "images" / "x1.dcm", img, spacing=(0.1, 0.1), laterality="R")
    (tmp_path / "masks").mkdir()
    np.save(tmp_path / "masks" / "x1.npy", mask)
    plain, _ = prepare("folder", tmp_path, size=20, val_fraction=0.0, test_fraction=0.0)
    mirrored, _ = prepare("folder", tmp_path, size=20, val_fraction=0.0, test_fraction=0.0, mirror=True)
    assert plain.boxes.tolist() == [[51, 10, 60, 30]]
    np.testing.assert_array_equal(mirrored.masks[0], plain.masks[0][:, ::-1])
    assert plain.spacing_mm[0] == pytest.approx(0.1 * np.sqrt(9 * 20) / 20)
