"""kerasseg predict --dicom-seg: the DICOM SEG / TID 1500 SR of a prediction on a DICOM mammogram, and
predict's output names (two inputs of one run never share their output files).

The model is a tiny segmenter saved as a ``.keras`` file (``test_export_common.tiny_segmenter``: bright
pixels are mass, so the masks are not trivial). The mammograms are synthetic DICOMs written with pydicom
(``fixtures_data.write_dicom`` plus the study attributes a SEG/SR needs); references are computed from
the known pixel arrays: every box cropped by hand from the array as the model sees it and run through
``Segmenter.predict`` (``serving_default``), pasted into a zero image with NumPy.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import skimage.io
from click.testing import CliRunner
from pydicom.uid import generate_uid

from fixtures.data import write_dicom
from kerasseg.errors import KerassegError
from fixtures.export import tiny_segmenter
from fixtures.dicom import DCIODVFY, dciodvfy_errors

hd = pytest.importorskip("highdicom")
from kerasseg.export import Segmenter, predict_inputs  # noqa: E402
from kerasseg.export.dicom import measure_masses  # noqa: E402
from kerasseg.export.outputs import unique_stems  # noqa: E402

ROWS, COLS = 96, 128
SPACING = (0.07, 0.065)  # (row, col) mm, anisotropic on purpose
BOX_A = (14, 12, 62, 56)   # x0, y0, x1, y1: a mass near the left edge of the stored image
BOX_B = (76, 44, 120, 90)
SEGMENTED_FRAME = hd.sr.CodedConcept("121214", "DCM", "Referenced Segmentation Frame")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    tiny_segmenter(40, crf=False, seed=3).save(path)
    return path


@pytest.fixture(scope="module")
def segmenter(model_file):
    return Segmenter(model_file)


@pytest.fixture(scope="module")
def view():
    """The image as the model sees it (bright = dense): two blobs, both off-centre in their boxes, so a
    mirrored or shifted paste would not match."""
    rng = np.random.default_rng(11)
    img = rng.normal(1000, 30, size=(ROWS, COLS))
    yy, xx = np.mgrid[:ROWS, :COLS]
    img += 700 * (((yy - 30) / 10.0) ** 2 + ((xx - 28) / 8.0) ** 2 < 1)
    img += 650 * (((yy - 70) / 9.0) ** 2 + ((xx - 104) / 7.0) ** 2 < 1)
    return np.clip(img, 0, 65535).astype(np.uint16)


def mammogram(path, view, *, photometric="MONOCHROME2", laterality="L", spacing_tag="ImagerPixelSpacing"):
    """A single-frame MG DICOM whose pixels read (``read_image``) as ``view``: MONOCHROME1 stores
    ``65535 - view`` (16 bits stored), which the reader inverts back."""
    stored = 65535 - view.astype(np.int64) if photometric == "MONOCHROME1" else view
    write_dicom(path, stored, spacing=None, laterality=laterality, photometric=photometric)
    ds = pydicom.dcmread(path)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "Doe^Jane", "19600101", "F"
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240102", "101500", "S1", "A1"
    ds.PatientOrientation = ["P", "L"] if laterality == "R" else ["A", "R"]
    if spacing_tag:
        setattr(ds, spacing_tag, list(SPACING))
    ds.save_as(path, enforce_file_format=True)
    return Path(path)


def reference(segmenter, view, boxes):
    """Each box cropped by hand and segmented alone; pasted: (mask union, probability max, per-box maps)."""
    mask = np.zeros(view.shape, np.uint8)
    prob = np.zeros(view.shape, np.float32)
    per_box = []
    for x0, y0, x1, y1 in boxes:
        out = segmenter.predict(view[np.newaxis, y0:y1, x0:x1].astype(np.float32))
        mask[y0:y1, x0:x1] |= out["mask"][0]
        np.maximum(prob[y0:y1, x0:x1], out["probability"][0], out=prob[y0:y1, x0:x1])
        per_box.append({k: v[0] for k, v in out.items()})
    return mask, prob, per_box


def seg_pixels(path, source):
    seg = hd.seg.segread(path)
    uid = str(pydicom.dcmread(source, stop_before_pixels=True).SOPInstanceUID)
    return seg, seg.get_pixels_by_source_instance([uid], segment_numbers=[1])[0, :, :, 0]


def sr_masses(path):
    """[(measurement group, box group)] in the order of the masses ("Mass 1", "Mass 2", ...)."""
    groups = {}
    for group in hd.sr.srread(path).content.get_planar_roi_measurement_groups():
        slot = groups.setdefault(group.tracking_identifier, [None, None])
        slot[0 if group.reference_type == SEGMENTED_FRAME else 1] = group
    return [tuple(groups[k]) for k in sorted(groups, key=lambda k: int(k.split()[-1]))]


def value(group, name):
    found = group.get_measurements(name=name)
    return found[0].value if found else None


# --------------------------------------------------------------------------- --dicom-seg
def test_seg_is_the_pasted_mask_monochrome1_right_breast(model_file, segmenter, view, tmp_path):
    """MONOCHROME1, right breast (ImageLaterality R), one --roi, through the CLI: the SEG read back with
    highdicom equals the mask PNG, which equals the crop's own prediction pasted at the box in the stored
    pixel grid (not mirrored); the SR's area and longest diameter are measure_masses of that mask."""
    from pydicom.sr.codedict import codes

    from kerasseg.cli.main import cli

    src = mammogram(tmp_path / "scan.dcm", view, photometric="MONOCHROME1", laterality="R")
    out = tmp_path / "pred"
    res = CliRunner().invoke(cli, ["predict", str(model_file), str(src), "--roi", ",".join(map(str, BOX_A)),
                                   "--dicom-seg", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f"DICOM SEG (BINARY) -> {out / 'scan.seg.dcm'}, SR -> {out / 'scan.sr.dcm'}" in res.output
    ref_mask, _, _ = reference(segmenter, view, [BOX_A])
    x0, y0, x1, y1 = BOX_A
    assert 0 < ref_mask.sum() < (x1 - x0) * (y1 - y0)
    # not mirrored: the mass is left of the box centre, where the blob is in the stored pixels
    assert np.nonzero(ref_mask)[1].mean() < (x0 + x1) / 2
    png = skimage.io.imread(out / "scan_mask.png") // 255
    np.testing.assert_array_equal(png, ref_mask)
    seg, pixels = seg_pixels(out / "scan.seg.dcm", src)
    assert seg.SegmentationType == "BINARY" and pixels.shape == (ROWS, COLS)
    np.testing.assert_array_equal(pixels, ref_mask)
    source = pydicom.dcmread(src, stop_before_pixels=True)
    assert seg.StudyInstanceUID == source.StudyInstanceUID and seg.PatientID == "P1"
    alg = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    model_hash = hashlib.sha256(Path(model_file).read_bytes()).hexdigest()
    assert f"model_sha256={model_hash}" in alg.AlgorithmParameters
    # the SR: one mass, its numbers = measure_masses of the SEG's mask in the box; area also by NumPy
    masses = measure_masses(pixels, SPACING, boxes=[BOX_A])
    (meas, box_group), = sr_masses(out / "scan.sr.dcm")
    area = value(meas, codes.SCT.Area)
    assert area == pytest.approx(masses[0]["area_mm2"], rel=1e-6)
    assert area == pytest.approx(ref_mask[y0:y1, x0:x1].sum() * SPACING[0] * SPACING[1], rel=1e-6)
    assert value(meas, codes.SCT.LongAxis) == pytest.approx(masses[0]["longest_diameter_mm"], rel=1e-6)
    assert value(meas, codes.SCT.StandardDeviation) is None  # one model, no TTA: no uncertainty
    np.testing.assert_allclose(box_group.roi.value[:4], [[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    # the JSON records the SEG/SR and the algorithm
    info = json.loads((out / "scan.json").read_text())
    assert info["seg"] == str(out / "scan.seg.dcm") and info["sr"] == str(out / "scan.sr.dcm")
    assert info["seg_type"] == "BINARY" and info["algorithm"]["model_sha256"] == model_hash
    assert info["masses"][0]["area_px"] == int(ref_mask.sum()) == info["area_px"]
    if DCIODVFY:  # dicom3tools (installed by .ci/run when missing)
        for name in ("scan.seg.dcm", "scan.sr.dcm"):
            assert not dciodvfy_errors(out / name), name


def test_two_boxes_probability_seg_and_uncertainty(model_file, view, tmp_path):
    """Two boxes, --probability, TTA (so there is an uncertainty): the SEG is FRACTIONAL and holds the
    pasted probability (8 bit); the SR has one mass per box with its area and the mean of the box's own
    uncertainty over its mask pixels."""
    from pydicom.sr.codedict import codes

    seg_tta = Segmenter(model_file, tta="flips")
    assert seg_tta.has_uncertainty and seg_tta.algorithm()["tta"] == "flips"
    src = mammogram(tmp_path / "two.dcm", view, spacing_tag="PixelSpacing")
    results, failures = predict_inputs(seg_tta, [src], tmp_path / "o", roi=[BOX_A, BOX_B], dicom_seg=True,
                                       probability=True)
    assert failures == {}
    info = results[str(src)]
    mask, prob, per_box = reference(seg_tta, view, [BOX_A, BOX_B])
    assert all(0 < m["mask"].sum() for m in per_box)
    np.testing.assert_array_equal(skimage.io.imread(tmp_path / "o" / "two_mask.png") // 255, mask)
    seg, pixels = seg_pixels(tmp_path / "o" / "two.seg.dcm", src)
    assert seg.SegmentationType == "FRACTIONAL" and seg.SegmentationFractionalType == "PROBABILITY"
    assert np.abs(pixels - prob).max() <= 0.5 / 255 + 1e-4
    assert info["boxes"] == [list(BOX_A), list(BOX_B)] and info["seg_type"] == "FRACTIONAL"
    masses = sr_masses(tmp_path / "o" / "two.sr.dcm")
    assert len(masses) == 2
    for (meas, _), (x0, y0, x1, y1), ref in zip(masses, (BOX_A, BOX_B), per_box):
        sel = mask[y0:y1, x0:x1].astype(bool)
        assert value(meas, codes.SCT.Area) == pytest.approx(sel.sum() * SPACING[0] * SPACING[1], rel=1e-6)
        assert value(meas, codes.SCT.StandardDeviation) == pytest.approx(
            float(ref["uncertainty"][sel].mean()), rel=1e-4, abs=1e-6)
    if DCIODVFY:
        for name in ("two.seg.dcm", "two.sr.dcm"):
            assert not dciodvfy_errors(tmp_path / "o" / name), name
    assert [m["area_px"] for m in info["masses"]] == [int(mask[y0:y1, x0:x1].sum()) for x0, y0, x1, y1 in
                                                     (BOX_A, BOX_B)]


def test_non_dicom_input_no_spacing_note_and_usage_errors(model_file, view, tmp_path):
    """A PNG with --dicom-seg is a one-line error for that input (the DICOM beside it is processed; exit
    1 at the end); a DICOM without pixel spacing gets an SR without mm values and its note is printed;
    --dicom-seg without a box and --probability without --dicom-seg are usage errors."""
    from kerasseg.cli.main import cli

    png = tmp_path / "flat.png"
    skimage.io.imsave(png, view, check_contrast=False)
    src = mammogram(tmp_path / "nospacing.dcm", view, spacing_tag=None)
    out = tmp_path / "pred"
    roi = ",".join(map(str, BOX_A))
    res = CliRunner().invoke(cli, ["predict", str(model_file), str(png), str(src), "--roi", roi, "--dicom-seg",
                                   "--out", str(out)])
    assert res.exit_code == 1
    assert f"Error: {png}: --dicom-seg needs a DICOM input" in res.output
    assert f"Note: {out / 'nospacing.sr.dcm'}: the SR has no mm measurements" in res.output
    assert "1 of 2 input(s) failed" in res.output and "Traceback" not in res.output
    assert not list(out.glob("flat*"))
    assert (out / "nospacing.seg.dcm").is_file() and (out / "nospacing.sr.dcm").is_file()
    for args, text in ((["--dicom-seg"], "--dicom-seg needs --roi or --mask-hint"),
                       (["--roi", roi, "--probability"], "--probability applies with --dicom-seg")):
        res = CliRunner().invoke(cli, ["predict", str(model_file), str(src), *args, "--out", str(tmp_path / "x")])
        assert res.exit_code == 2 and text in res.output, res.output
    with pytest.raises(KerassegError, match="--dicom-seg needs --roi or --mask-hint"):
        predict_inputs(model_file, [src], tmp_path / "x", dicom_seg=True)


def test_npz_with_dicom_seg_is_an_input_error(segmenter, tmp_path):
    from kerasseg.data.dataset import save_npz
    from kerasseg.data.phantom import make_phantom

    path = tmp_path / "rois.npz"
    save_npz(make_phantom(n_train=1, n_val=1, n_test=1, size=40, seed=2), path)
    _, failures = predict_inputs(segmenter, [path], tmp_path / "o", roi=BOX_A, dicom_seg=True)
    assert "--dicom-seg needs a DICOM input" in failures[str(path)]


def test_mask_hint_dicom_seg(segmenter, view, tmp_path):
    """--mask-hint gives the box of the SEG/SR as --roi does."""
    src = mammogram(tmp_path / "hinted.dcm", view)
    hint = np.zeros(view.shape, np.uint8)
    x0, y0, x1, y1 = BOX_B
    hint[y0:y1, x0:x1] = 255
    hint_path = tmp_path / "hint.png"
    skimage.io.imsave(hint_path, hint, check_contrast=False)
    results, failures = predict_inputs(segmenter, [src], tmp_path / "o", mask_hint=hint_path, dicom_seg=True)
    assert failures == {}
    ref_mask, _, _ = reference(segmenter, view, [BOX_B])
    np.testing.assert_array_equal(seg_pixels(tmp_path / "o" / "hinted.seg.dcm", src)[1], ref_mask)
    assert results[str(src)]["masses"][0]["box"] == list(BOX_B)


# --------------------------------------------------------------------------- output names
def test_unique_stems_rule():
    assert unique_stems(["a/scan.png", "b/scan.png", "scan.npz", "c/scan-2.png", "x.dcm"]) == \
        ["scan", "scan-3", "scan-4", "scan-2", "x"]
    assert unique_stems(["a/Scan.png", "b/scan.dcm", "c/SCAN"]) == ["Scan", "scan-2", "SCAN-3"]
    assert unique_stems(["one.png", "two.png"]) == ["one", "two"]


def test_same_stem_inputs_keep_their_results(segmenter, view, tmp_path):
    """a/scan.png, b/scan.png, scan.npz and c/scan-2.png in one run: four result sets, each JSON naming
    its input, each mask that input's own prediction; a second run into the same folder replaces them
    under the same names."""
    from kerasseg.data.dataset import save_npz
    from kerasseg.data.phantom import make_phantom

    crops = {"a": view[:48, :56], "b": view[40:, 64:], "c": view[20:76, 60:110]}
    paths = {}
    for folder, img in crops.items():
        (tmp_path / folder).mkdir()
        paths[folder] = tmp_path / folder / ("scan-2.png" if folder == "c" else "scan.png")
        skimage.io.imsave(paths[folder], img, check_contrast=False)
    paths["npz"] = tmp_path / "scan.npz"
    save_npz(make_phantom(n_train=1, n_val=1, n_test=1, size=40, seed=4), paths["npz"])
    inputs = [paths["a"], paths["b"], paths["npz"], paths["c"]]
    out = tmp_path / "o"
    results, failures = predict_inputs(segmenter, inputs, out)
    assert failures == {} and len(results) == 4
    expected = {"a": "scan", "b": "scan-3", "c": "scan-2"}
    for folder, stem in expected.items():
        info = json.loads((out / f"{stem}.json").read_text())
        assert info["input"] == str(paths[folder]) and info["mask"] == str(out / f"{stem}_mask.png")
        own = segmenter.predict(crops[folder][np.newaxis].astype(np.float32))["mask"][0]
        np.testing.assert_array_equal(skimage.io.imread(out / f"{stem}_mask.png") // 255, own)
    npz_info = json.loads((out / "scan-4.json").read_text())
    assert npz_info["input"] == str(paths["npz"]) and (out / "scan-4_predictions.npz").is_file()
    before = sorted(p.name for p in out.iterdir())
    assert len(before) == 3 * 4 + 2
    results, failures = predict_inputs(segmenter, inputs, out)
    assert failures == {} and sorted(p.name for p in out.iterdir()) == before


def test_output_never_replaces_an_input(segmenter, view, tmp_path):
    """--out is the inputs' folder and scan_mask.png is itself an input: scan.png's mask would replace
    it, so scan.png fails with one line; scan_mask.png is still read and processed."""
    d = tmp_path / "d"
    d.mkdir()
    scan, other = d / "scan.png", d / "scan_mask.png"
    skimage.io.imsave(scan, view[:48, :48], check_contrast=False)
    skimage.io.imsave(other, view[48:, 64:112], check_contrast=False)
    original = other.read_bytes()
    results, failures = predict_inputs(segmenter, [scan, other], d)
    assert "would replace an input file of this run" in failures[str(scan)]
    assert list(results) == [str(other)] and other.read_bytes() == original
    assert (d / "scan_mask_mask.png").is_file() and not (d / "scan.json").exists()


@pytest.mark.slow  # exporting traces every signature: 8-15 s on 2 shared cores
def test_export_algorithm_is_the_model_card_hash(model_file, view, tmp_path):
    """An export identifies itself by the SHA-256 of its assets/model_card.json."""
    from kerasseg.export import export_model

    base = tmp_path / "serving" / "tiny"
    version = export_model(model_file, base)
    seg = Segmenter(base)
    card = Path(version) / "assets" / "model_card.json"
    alg = seg.algorithm()
    assert alg["model_card_sha256"] == hashlib.sha256(card.read_bytes()).hexdigest()
    assert "model_sha256" not in alg and not seg.has_uncertainty
    src = mammogram(tmp_path / "e.dcm", view)
    results, failures = predict_inputs(seg, [src], tmp_path / "o", roi=BOX_A, dicom_seg=True)
    assert failures == {}
    params = hd.seg.segread(results[str(src)]["seg"]).SegmentSequence[0] \
        .SegmentationAlgorithmIdentificationSequence[0].AlgorithmParameters
    assert f"model_card_sha256={alg['model_card_sha256']}" in params
