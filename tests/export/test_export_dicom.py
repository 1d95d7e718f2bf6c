"""kerasseg.export.dicom: DICOM Segmentation and TID 1500 SR of a predicted mask (no TensorFlow).

Synthetic source mammograms are written with pydicom (``fixtures_data.write_dicom`` plus the study
attributes a real mammogram has); the outputs are read back with highdicom and plain pydicom, checked
with dciodvfy (dicom3tools) when it is installed, and the SR's numbers are compared with scikit-image.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from fixtures.data import write_dicom
from kerasseg.errors import KerassegError
from fixtures import REPO as _REPO
from fixtures.dicom import DCIODVFY, dciodvfy_errors

hd = pytest.importorskip("highdicom")
from kerasseg.export import dicom  # noqa: E402
from fixtures.docs import python_blocks, run_example

ROOT = _REPO
ROWS, COLS = 256, 200


def make_mammogram(path, *, photometric="MONOCHROME2", laterality="L", spacing_tag="PixelSpacing",
                   spacing=(0.07, 0.07), rows=ROWS, cols=COLS) -> Path:
    """A single-frame digital mammogram (MG, for presentation) without Frame of Reference or plane
    position, with the patient/study attributes of a real one."""
    path = write_dicom(path, np.full((rows, cols), 1000), spacing=None, laterality=laterality,
                       photometric=photometric)
    ds = pydicom.dcmread(path)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "Doe^Jane", "19600101", "F"
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240102", "101500", "S1", "A1"
    ds.ReferringPhysicianName = ""
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.Manufacturer = "Synthetic"
    ds.BodyPartExamined, ds.ViewPosition = "BREAST", "CC"
    ds.PatientOrientation = ["P", "L"] if laterality == "R" else ["A", "R"]
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    if spacing_tag:
        setattr(ds, spacing_tag, list(spacing))
    ds.save_as(path, enforce_file_format=True)
    return Path(path)


def two_masses(rows=ROWS, cols=COLS) -> np.ndarray:
    from skimage.draw import ellipse, polygon

    mask = np.zeros((rows, cols), np.uint8)
    rr, cc = ellipse(80, 70, 25, 15, shape=mask.shape, rotation=0.4)
    mask[rr, cc] = 1
    rr, cc = polygon([170, 230, 215, 180], [120, 150, 180, 165], shape=mask.shape)  # not convex
    mask[rr, cc] = 1
    return mask


def read_seg_mask(path, source_uid) -> np.ndarray:
    seg = hd.seg.segread(path)
    return seg.get_pixels_by_source_instance([source_uid], segment_numbers=[1])[0, :, :, 0]


# --------------------------------------------------------------------------- no TensorFlow
def test_module_imports_without_tensorflow(tmp_path):
    """``import kerasseg.export.dicom`` (through the package, as a TF Serving client does) and a full
    SEG + SR write leave TensorFlow and Keras out of sys.modules."""
    src = make_mammogram(tmp_path / "src.dcm")
    code = (
        "import sys, numpy as np\n"
        "import kerasseg.export.dicom as d\n"
        "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]\n"
        "assert not bad, bad\n"
        f"mask = np.zeros(({ROWS}, {COLS}), np.uint8); mask[10:20, 10:30] = 1\n"
        f"seg = d.write_seg({str(src)!r}, mask, {str(tmp_path / 'seg.dcm')!r})\n"
        f"d.write_sr({str(src)!r}, seg.dataset, None, {str(tmp_path / 'sr.dcm')!r})\n"
        "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]
    assert (tmp_path / "seg.dcm").is_file() and (tmp_path / "sr.dcm").is_file()


def test_export_package_names_still_resolve():
    """kerasseg.export loads its public names lazily; each one still resolves, and submodules too."""
    import kerasseg.export as export

    for name in export.__all__:
        assert getattr(export, name) is not None, name
    from kerasseg.export import savedmodel

    assert export.savedmodel is savedmodel and export.SIGNATURES is savedmodel.SIGNATURES
    with pytest.raises(AttributeError):
        export.no_such_name  # noqa: B018


# --------------------------------------------------------------------------- SEG
@pytest.mark.parametrize("photometric,laterality", [("MONOCHROME2", "L"), ("MONOCHROME1", "R")])
def test_seg_round_trip(tmp_path, photometric, laterality):
    src_path = make_mammogram(tmp_path / "src.dcm", photometric=photometric, laterality=laterality)
    src = pydicom.dcmread(src_path)
    mask = two_masses()
    algorithm = {"name": "kerasseg", "version": "9.9", "config": "crunet-l067", "model_card_sha256": "ab" * 32}
    out = dicom.write_seg(src_path, mask, tmp_path / "seg.dcm", algorithm=algorithm)
    assert out.path == tmp_path / "seg.dcm" and out.note is None

    # the pixels, read back by highdicom and by plain pydicom: the mask as given (nothing flipped)
    np.testing.assert_array_equal(read_seg_mask(out.path, src.SOPInstanceUID), mask)
    seg = pydicom.dcmread(out.path)
    np.testing.assert_array_equal(seg.pixel_array, mask)
    assert seg.SegmentationType == "BINARY" and seg.Modality == "SEG" and seg.NumberOfFrames == 1
    assert (seg.Rows, seg.Columns) == (ROWS, COLS)

    # the study and the references are the source's
    assert seg.StudyInstanceUID == src.StudyInstanceUID
    assert seg.PatientID == src.PatientID and seg.PatientName == src.PatientName
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == src.SeriesInstanceUID
    ref = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    assert (ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID) == (src.SOPClassUID, src.SOPInstanceUID)
    frame_src = seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0]
    assert frame_src.ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert list(seg.PatientOrientation) == list(src.PatientOrientation)
    assert "FrameOfReferenceUID" not in seg and "PixelData" in seg

    # the segment: Mass, its category, automatic, the algorithm
    segment = seg.SegmentSequence[0]
    assert segment.SegmentNumber == 1 and segment.SegmentLabel == "Mass"
    prop = segment.SegmentedPropertyTypeCodeSequence[0]
    cat = segment.SegmentedPropertyCategoryCodeSequence[0]
    assert (prop.CodeValue, prop.CodingSchemeDesignator, prop.CodeMeaning) == ("4147007", "SCT", "Mass")
    assert (cat.CodeValue, cat.CodingSchemeDesignator) == ("49755003", "SCT")
    assert cat.CodeMeaning == "Morphologically Abnormal Structure"
    assert segment.SegmentAlgorithmType == "AUTOMATIC"
    alg = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert (alg.AlgorithmName, alg.AlgorithmVersion) == ("kerasseg", "9.9")
    fam = alg.AlgorithmFamilyCodeSequence[0]
    assert (fam.CodeValue, fam.CodingSchemeDesignator, fam.CodeMeaning) == ("123110", "DCM", "Artificial Intelligence")
    assert "config=crunet-l067" in alg.AlgorithmParameters
    assert f"model_card_sha256={'ab' * 32}" in alg.AlgorithmParameters

    # a second call: a new series and instance in the same study
    again = dicom.write_seg(src, mask, tmp_path / "seg2.dcm").dataset
    assert again.StudyInstanceUID == seg.StudyInstanceUID
    assert again.SeriesInstanceUID != seg.SeriesInstanceUID and again.SOPInstanceUID != seg.SOPInstanceUID
    assert again.SOPInstanceUID != src.SOPInstanceUID


def test_seg_does_not_change_the_callers_dataset(tmp_path):
    src = pydicom.dcmread(make_mammogram(tmp_path / "src.dcm"))
    del src.PatientSex   # a type 2 attribute the SEG needs (written empty there)
    before = {e.keyword for e in src}
    seg = dicom.write_seg(src, two_masses(), tmp_path / "seg.dcm").dataset
    assert {e.keyword for e in src} == before
    assert "PatientSex" in seg and not seg.PatientSex


def test_seg_empty_mask_still_has_its_frame(tmp_path):
    src = make_mammogram(tmp_path / "src.dcm")
    out = dicom.write_seg(src, np.zeros((ROWS, COLS), bool), tmp_path / "seg.dcm")
    np.testing.assert_array_equal(read_seg_mask(out.path, out.dataset.ReferencedSeriesSequence[0]
                                                .ReferencedInstanceSequence[0].ReferencedSOPInstanceUID), 0)


def test_seg_fractional_probability_round_trip(tmp_path, rng):
    src_path = make_mammogram(tmp_path / "src.dcm", photometric="MONOCHROME1", laterality="R")
    src = pydicom.dcmread(src_path)
    prob = rng.uniform(0, 1, (ROWS, COLS)).astype(np.float32)
    prob[:5, :5] = 0.0
    prob[-5:, -5:] = 1.0
    mask = (prob >= 0.5).astype(np.uint8)
    out = dicom.write_seg(src_path, mask, tmp_path / "seg.dcm", probability=prob)
    seg = pydicom.dcmread(out.path)
    assert seg.SegmentationType == "FRACTIONAL" and seg.SegmentationFractionalType == "PROBABILITY"
    assert seg.MaximumFractionalValue == 255
    back = read_seg_mask(out.path, src.SOPInstanceUID)
    assert back.dtype.kind == "f"
    assert np.abs(back - prob).max() <= 0.5 / 255 + 1e-6          # 8-bit quantisation, rounded
    stored = seg.pixel_array.astype(np.float64)                    # round(255 p), computed in float32
    assert np.abs(stored - prob.astype(np.float64) * 255).max() <= 0.5 + 1e-4
    assert back[0, 0] == 0.0 and back[-1, -1] == 1.0


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian package dicom3tools) is not installed")
@pytest.mark.parametrize("spacing_tag", ["PixelSpacing", "ImagerPixelSpacing", None])
@pytest.mark.parametrize("laterality", ["L", "R"])
@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_dciodvfy_finds_no_errors(tmp_path, photometric, laterality, spacing_tag):
    """BINARY and FRACTIONAL SEGs and SRs (from the SEG's mask with uncertainty; from a FRACTIONAL SEG with
    box measurements) of every kind of mammogram: no dciodvfy errors (warnings are printed)."""
    src = make_mammogram(tmp_path / "src.dcm", photometric=photometric, laterality=laterality,
                         spacing_tag=spacing_tag)
    mask = two_masses()
    rng = np.random.default_rng(0)
    algorithm = {"config": "crunet", "model_card_sha256": "0" * 64}
    seg = dicom.write_seg(src, mask, tmp_path / "seg.dcm", algorithm=algorithm)
    frac = dicom.write_seg(src, mask, tmp_path / "frac.dcm", probability=rng.uniform(0, 1, mask.shape))
    sr = dicom.write_sr(src, seg.path, None, tmp_path / "sr.dcm", uncertainty=rng.uniform(0, 0.5, mask.shape))
    boxed = dicom.write_sr(src, frac.dataset, dicom.measure_masses(mask, (0.1, 0.1), boxes=[(10, 10, 60, 60)]),
                           tmp_path / "sr_box.dcm")
    for out in (seg, frac, sr, boxed):
        errors = dciodvfy_errors(out.path)
        assert not errors, f"{out.path.name}: {errors}"


# --------------------------------------------------------------------------- measurements and SR
def _groups(sr_path):
    """{tracking identifier: (measurement group, box group)} read back with highdicom."""
    sr = hd.sr.srread(sr_path)
    out = {}
    for group in sr.content.get_planar_roi_measurement_groups():
        key = group.tracking_identifier
        slot = out.setdefault(key, [None, None])
        slot[0 if group.reference_type == hd.sr.CodedConcept("121214", "DCM", "Referenced Segmentation Frame")
             else 1] = group
    return sr, out


def _measurement(group, code):
    found = group.get_measurements(name=code)
    return found[0].value if found else None


def test_sr_numbers_equal_scikit_image(tmp_path):
    """Isotropic PixelSpacing: the area equals regionprops area * row_mm * col_mm; the longest diameter
    equals regionprops feret_diameter_max * spacing for a mass that is its own convex hull image, and is
    at most that (and less than a pixel shorter) for a non-convex one; the mean uncertainty equals the
    mean over the component."""
    from pydicom.sr.codedict import codes
    from skimage.measure import label, regionprops
    from skimage.morphology import convex_hull_image

    sp = 0.07
    src_path = make_mammogram(tmp_path / "src.dcm", laterality="R", spacing=(sp, sp))
    src = pydicom.dcmread(src_path)
    mask = two_masses()
    ellipse = label(mask, connectivity=2) == 1
    for _ in range(20):                                    # grow the ellipse to its own convex hull image
        hull = convex_hull_image(ellipse)
        if np.array_equal(hull, ellipse):
            break
        ellipse = hull
    mask[ellipse] = 1
    unc = np.random.default_rng(3).uniform(0, 0.5, mask.shape)
    seg = dicom.write_seg(src_path, mask, tmp_path / "seg.dcm")
    out = dicom.write_sr(src_path, seg.path, None, tmp_path / "sr.dcm", uncertainty=unc)
    assert out.note is None

    sr, groups = _groups(out.path)
    assert sr.StudyInstanceUID == src.StudyInstanceUID and sr.Modality == "SR"
    assert "PixelSpacing" in sr.SeriesDescription
    lab = label(mask, connectivity=2)
    props = regionprops(lab)
    assert sorted(groups) == [f"Mass {k}" for k in (1, 2)] and len(props) == 2
    for k, rp in enumerate(props, start=1):
        meas, box = groups[f"Mass {k}"]
        assert meas is not None and box is not None
        assert meas.tracking_uid == box.tracking_uid
        area = _measurement(meas, codes.SCT.Area)
        assert area == pytest.approx(rp.area * sp * sp, rel=1e-9)
        diameter = _measurement(meas, codes.SCT.LongAxis)
        if np.array_equal(rp.image_convex, rp.image):
            assert diameter == pytest.approx(rp.feret_diameter_max * sp, rel=1e-9)
        else:
            assert rp.feret_diameter_max * sp - sp < diameter <= rp.feret_diameter_max * sp + 1e-9
        assert _measurement(meas, codes.SCT.StandardDeviation) == pytest.approx(unc[lab == k].mean(), rel=1e-9)
        assert meas.get_measurements(name=codes.SCT.Area)[0].unit == codes.UCUM.SquareMillimeter
        assert meas.get_measurements(name=codes.SCT.LongAxis)[0].unit == codes.UCUM.Millimeter
        # the box: a closed polyline through the bounding box corners (x = column)
        y0, x0, y1, x1 = rp.bbox
        np.testing.assert_allclose(box.roi.value, [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]])
        assert box.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    # the first mass is the convex one (raster order), so the exact Feret branch ran
    assert np.array_equal(props[0].image_convex, props[0].image)

    # plain pydicom: the segment reference item, the finding site laterality, the evidence
    items = list(_walk(sr))
    seg_refs = [i for i in items if i.get("ValueType") == "IMAGE"
                and i.ConceptNameCodeSequence[0].CodeValue == "121214"]
    assert len(seg_refs) == 2
    for item in seg_refs:
        sop = item.ReferencedSOPSequence[0]
        assert sop.ReferencedSOPInstanceUID == seg.dataset.SOPInstanceUID and sop.ReferencedSegmentNumber == 1
        assert sop.ReferencedSOPClassUID == seg.dataset.SOPClassUID
        assert "ReferencedFrameNumber" not in sop   # not with a segment number (Image SOP Instance Reference)
    sources = [i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in items if i.get("ValueType") == "IMAGE"
               and i.ConceptNameCodeSequence[0].CodeValue == "121233"]       # Source Image for Segmentation
    assert sources == [src.SOPInstanceUID] * 2
    lateralities = [i.ConceptCodeSequence[0].CodeValue for i in items if i.get("ValueType") == "CODE"
                    and i.ConceptNameCodeSequence[0].CodeValue == "272741003"]
    assert lateralities and set(lateralities) == {"24028007"}          # Right
    evidence = {s.ReferencedSOPInstanceUID for study in sr.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence for s in series.ReferencedSOPSequence}
    assert evidence == {src.SOPInstanceUID, seg.dataset.SOPInstanceUID}


def _walk(ds):
    for item in ds.get("ContentSequence", []):
        yield item
        yield from _walk(item)


def _outline_feret(region, spacing):
    """Reference: the largest distance between two vertices of scikit-image's 0.5 contours of the mask
    (no convex hull), with the spacing applied per axis."""
    from scipy.spatial.distance import pdist
    from skimage.measure import find_contours

    pts = np.vstack(find_contours(np.pad(region.astype(float), 1), 0.5, fully_connected="high")) - 1
    return float(np.sqrt(pdist(pts * np.asarray(spacing), "sqeuclidean").max()))


def test_sr_anisotropic_imager_pixel_spacing(tmp_path):
    from pydicom.sr.codedict import codes
    from skimage.measure import label, regionprops

    spacing = (0.1, 0.05)
    src = make_mammogram(tmp_path / "src.dcm", spacing_tag="ImagerPixelSpacing", spacing=spacing)
    mask = two_masses()
    seg = dicom.write_seg(src, mask, tmp_path / "seg.dcm")
    assert "PixelMeasuresSequence" not in seg.dataset.SharedFunctionalGroupsSequence[0]
    out = dicom.write_sr(src, seg.dataset, None, tmp_path / "sr.dcm")
    assert out.note is None
    sr, groups = _groups(out.path)
    assert "ImagerPixelSpacing" in sr.SeriesDescription
    lab = label(mask, connectivity=2)
    for k, rp in enumerate(regionprops(lab), start=1):
        meas = groups[f"Mass {k}"][0]
        assert _measurement(meas, codes.SCT.Area) == pytest.approx(rp.area * spacing[0] * spacing[1], rel=1e-9)
        assert _measurement(meas, codes.SCT.LongAxis) == pytest.approx(_outline_feret(lab == k, spacing), rel=1e-9)
        assert _measurement(meas, codes.SCT.StandardDeviation) is None


def test_sr_without_spacing_has_no_mm_and_says_so(tmp_path):
    from pydicom.sr.codedict import codes

    src = make_mammogram(tmp_path / "src.dcm", spacing_tag=None)
    mask = two_masses()
    seg = dicom.write_seg(src, mask, tmp_path / "seg.dcm")
    unc = np.full(mask.shape, 0.2)
    out = dicom.write_sr(src, seg.path, None, tmp_path / "sr.dcm", uncertainty=unc)
    assert out.note is not None and "\n" not in out.note
    assert "no mm measurements" in out.note and "sr.dcm" in out.note
    _, groups = _groups(out.path)
    assert len(groups) == 2
    for meas, box in groups.values():
        assert _measurement(meas, codes.SCT.Area) is None and _measurement(meas, codes.SCT.LongAxis) is None
        assert _measurement(meas, codes.SCT.StandardDeviation) == pytest.approx(0.2)
        assert box is not None
    # without uncertainty either: the groups have no measurements at all, still a valid report
    bare = dicom.write_sr(src, seg.path, None, tmp_path / "sr2.dcm")
    assert bare.note is not None
    _, groups = _groups(bare.path)
    assert all(not meas.get_measurements() for meas, _ in groups.values())


def test_sr_of_an_empty_mask(tmp_path):
    """No mass and no box: nothing to report, no file, a note. With the ROI box: one mass of area 0."""
    from pydicom.sr.codedict import codes

    src = make_mammogram(tmp_path / "src.dcm")
    seg = dicom.write_seg(src, np.zeros((ROWS, COLS), np.uint8), tmp_path / "seg.dcm")
    out = dicom.write_sr(src, seg.path, None, tmp_path / "sr.dcm")
    assert out.path is None and out.dataset is None and not (tmp_path / "sr.dcm").exists()
    assert "no SR written" in out.note and "\n" not in out.note
    boxed = dicom.write_sr(src, seg.path, None, tmp_path / "sr.dcm", boxes=[(5, 5, 50, 50)])
    assert boxed.note is None
    _, groups = _groups(boxed.path)
    meas, box = groups["Mass 1"]
    assert _measurement(meas, codes.SCT.Area) == 0.0 and _measurement(meas, codes.SCT.LongAxis) is None
    if DCIODVFY:
        assert not dciodvfy_errors(boxed.path)
    with pytest.raises(KerassegError, match="list of dicts"):
        dicom.write_sr(src, seg.path, [1, 2], tmp_path / "sr2.dcm")


def test_measure_masses_against_references(rng):
    from scipy import ndimage
    from skimage.measure import label, regionprops

    mask = two_masses()
    got = dicom.measure_masses(mask, (0.1, 0.1))
    props = regionprops(label(mask, connectivity=2))
    assert [g["index"] for g in got] == [1, 2]
    for g, rp in zip(got, props):
        assert g["area_px"] == rp.area
        np.testing.assert_allclose(g["centroid"], rp.centroid)
        y0, x0, y1, x1 = rp.bbox
        assert g["box"] == (x0, y0, x1, y1)
        assert g["longest_diameter_mm"] == pytest.approx(_outline_feret(rp.image, (0.1, 0.1)), rel=1e-12)
        (a, b) = np.asarray(g["diameter_endpoints"])
        assert np.hypot(*((a - b) * 0.1)) == pytest.approx(g["longest_diameter_mm"])
        for r, c in (a, b):   # on the outline: half a pixel outside a mask pixel, in image coordinates
            assert y0 - 0.5 <= r <= y1 - 0.5 and x0 - 0.5 <= c <= x1 - 0.5
            near = mask[int(np.clip(np.floor(r), 0, ROWS - 1)):int(np.ceil(r)) + 1,
                        int(np.clip(np.floor(c), 0, COLS - 1)):int(np.ceil(c)) + 1]
            assert near.any()
    # random blobs, anisotropic: the hull-based value equals the brute force over the whole outline
    for _ in range(20):
        blob = np.zeros((40, 50), bool)
        blob[rng.integers(5, 30, 12), rng.integers(5, 40, 12)] = True
        blob = ndimage.binary_dilation(blob, iterations=2)
        labels = label(blob, connectivity=2)
        for k, g in enumerate(dicom.measure_masses(blob, (0.3, 0.07)), start=1):
            assert g["longest_diameter_mm"] == pytest.approx(_outline_feret(labels == k, (0.3, 0.07)), rel=1e-12)
            assert g["area_mm2"] == pytest.approx((labels == k).sum() * 0.3 * 0.07)


def test_measure_masses_boxes_and_empty_box():
    mask = two_masses()
    unc = np.full(mask.shape, 0.25)
    got = dicom.measure_masses(mask, None, boxes=[(40, 40, 110, 120), (0, 0, 20, 20)], uncertainty=unc)
    assert [g["box"] for g in got] == [(40, 40, 110, 120), (0, 0, 20, 20)]
    assert got[0]["area_px"] == int(mask[40:120, 40:110].sum()) > 0
    assert got[0]["area_mm2"] is None and got[0]["longest_diameter_mm"] is None
    assert got[0]["longest_diameter_px"] > 0 and got[0]["mean_uncertainty"] == pytest.approx(0.25)
    rows, cols = np.nonzero(mask[40:120, 40:110])
    np.testing.assert_allclose(got[0]["centroid"], (rows.mean() + 40, cols.mean() + 40))
    assert got[1]["area_px"] == 0 and got[1]["centroid"] is None and got[1]["mean_uncertainty"] is None
    empty = dicom.measure_masses(mask, (0.1, 0.2), boxes=[(0, 0, 20, 20)])[0]
    assert empty["area_mm2"] == 0.0 and empty["longest_diameter_mm"] is None
    assert dicom.measure_masses(np.zeros((5, 5)), 0.1) == []
    single = dicom.measure_masses(np.pad(np.ones((1, 1)), 2), 1.0)[0]
    assert single["area_mm2"] == 1.0 and single["longest_diameter_mm"] == 1.0
    with pytest.raises(KerassegError, match="outside"):
        dicom.measure_masses(mask, None, boxes=[(0, 0, COLS + 1, 10)])


def test_source_spacing_is_the_imageio_rule():
    from kerasseg.data.imageio import dicom_spacing

    cases = [{"PixelSpacing": [0.1, 0.2]}, {"ImagerPixelSpacing": [0.07, 0.07]},
             {"PixelSpacing": [0.1, 0.2], "ImagerPixelSpacing": [0.3, 0.3]}, {},
             {"PixelSpacing": [0, 0.1], "ImagerPixelSpacing": [0.05, 0.05]}]
    for attrs in cases:
        ds = pydicom.Dataset()
        for key, value in attrs.items():
            setattr(ds, key, value)
        spacing, tag = dicom.source_spacing(ds)
        assert spacing == dicom_spacing(ds)
        assert (tag is None) == (spacing is None)
        if tag:
            assert tuple(float(v) for v in ds[tag].value) == spacing


# --------------------------------------------------------------------------- errors
def test_non_dicom_source_is_one_line_error(tmp_path):
    from skimage.io import imsave

    png = tmp_path / "scan.png"
    imsave(png, np.zeros((20, 20), np.uint8), check_contrast=False)
    text = tmp_path / "notes.dcm"
    text.write_text("not a DICOM file\nsecond line\n")
    mask = np.zeros((20, 20), np.uint8)
    for bad in (png, text):
        with pytest.raises(KerassegError) as err:
            dicom.write_seg(bad, mask, tmp_path / "seg.dcm")
        assert str(bad) in str(err.value) and "\n" not in str(err.value) and "DICOM" in str(err.value)
    with pytest.raises(KerassegError, match="no such file"):
        dicom.write_seg(tmp_path / "missing.dcm", mask, tmp_path / "seg.dcm")
    src = make_mammogram(tmp_path / "src.dcm")
    with pytest.raises(KerassegError, match="notes.dcm"):
        dicom.write_sr(src, text, [], tmp_path / "sr.dcm")
    with pytest.raises(KerassegError, match="not a DICOM Segmentation"):
        dicom.write_sr(src, src, [], tmp_path / "sr.dcm")
    assert not (tmp_path / "seg.dcm").exists() and not (tmp_path / "sr.dcm").exists()


def test_bad_inputs_are_one_line_errors(tmp_path):
    src = make_mammogram(tmp_path / "src.dcm")
    good = np.zeros((ROWS, COLS), np.uint8)
    cases = [
        (lambda: dicom.write_seg(src, np.zeros((ROWS, COLS + 1)), tmp_path / "a.dcm"), "does not match"),
        (lambda: dicom.write_seg(src, good * 255 + 255, tmp_path / "a.dcm"), "only 0 and 1"),
        (lambda: dicom.write_seg(src, good, tmp_path / "a.dcm", probability=np.full((ROWS, COLS), 1.5)), r"\[0, 1\]"),
        (lambda: dicom.write_seg(src, good, tmp_path / "a.dcm", probability=np.full((ROWS, COLS), np.nan)), "finite"),
        (lambda: dicom.write_seg(src, good, tmp_path / "a.dcm", algorithm="kerasseg"), "algorithm must be a dict"),
        (lambda: dicom.write_seg(src, good, tmp_path / "nowhere" / "a.dcm"), "does not exist"),
    ]
    for call, match in cases:
        with pytest.raises(KerassegError, match=match) as err:
            call()
        assert "\n" not in str(err.value)
    # the project's bare fixture has no StudyInstanceUID: a SEG cannot belong to its study
    bare = write_dicom(tmp_path / "bare.dcm", np.zeros((ROWS, COLS)))
    with pytest.raises(KerassegError, match="StudyInstanceUID") as err:
        dicom.write_seg(bare, good, tmp_path / "a.dcm")
    assert "bare.dcm" in str(err.value)
    # a SEG of another image is refused by write_sr
    other = make_mammogram(tmp_path / "other.dcm")
    seg = dicom.write_seg(other, good, tmp_path / "seg.dcm")
    with pytest.raises(KerassegError, match="does not reference"):
        dicom.write_sr(src, seg.path, None, tmp_path / "sr.dcm")
    frac = dicom.write_seg(src, good, tmp_path / "frac.dcm", probability=np.zeros((ROWS, COLS)))
    with pytest.raises(KerassegError, match="FRACTIONAL"):
        dicom.write_sr(src, frac.path, None, tmp_path / "sr.dcm")
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


# --------------------------------------------------------------------------- docs
def test_module_examples_run():
    """The ``Example:`` sections of kerasseg.export.dicom run as doctests."""
    import doctest

    result = doctest.testmod(dicom, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 10 and result.failed == 0


def test_docs_example_runs(capsys):
    """The Python example of docs/dicom.md runs as is (a synthetic mammogram, the faked served mask)."""
    assert len(python_blocks((ROOT / "docs" / "dicom.md").read_text())) == 1
    namespace = run_example("docs/dicom.md", "# example: served mask to DICOM SEG + SR")
    out = namespace["out"]
    assert (out / "scan.seg.dcm").is_file() and (out / "scan.sr.dcm").is_file()
    printed = capsys.readouterr().out
    assert "BINARY ImagerPixelSpacing" in printed and "True" in printed
    mask, masses = namespace["mask"], namespace["masses"]
    assert masses[0]["area_mm2"] == pytest.approx(mask.sum() * 0.07 * 0.07)
