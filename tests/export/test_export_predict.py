"""kerasseg predict: DICOM/PNG/.npz inputs, ROI handling, outputs, per-input errors, CLI."""

import json

import numpy as np
import pytest
import skimage.io
from click.testing import CliRunner
from skimage.measure import perimeter

from kerasseg.errors import KerassegError
from kerasseg.export import Segmenter, export_model, predict_inputs
from kerasseg.data.imageio import read_image
from kerasseg.export.roi_input import box_from_hint, check_box, parse_roi
from fixtures.data import write_dicom
from fixtures.export import keras_reference, tiny_model, tiny_segmenter


@pytest.fixture(scope="module")
def model():
    """The segmenter: per-image normalisation inside, then the tiny network (with a 'crf' output)."""
    return tiny_segmenter(40, crf=True, seed=1)


@pytest.fixture(scope="module")
def network(model):
    from kerasseg.models import get_network

    return get_network(model)


@pytest.fixture(scope="module")
def export_dir(model, tmp_path_factory):
    base = tmp_path_factory.mktemp("exp") / "massseg"
    export_model(model, base)
    return base


@pytest.fixture(scope="module")
def mammogram():
    """A 90x120 'whole image' with a bright blob inside the ROI 30,20,70,60."""
    rng = np.random.default_rng(7)
    img = rng.normal(1000, 40, size=(90, 120))
    yy, xx = np.mgrid[:90, :120]
    img += 600 * (((yy - 41) / 11.0) ** 2 + ((xx - 48) / 9.0) ** 2 < 1)
    return np.clip(img, 0, 65535).astype(np.uint16)


def test_roi_parsing_and_checks():
    assert parse_roi("1, 2,30,40") == (1, 2, 30, 40)
    for bad in ("1,2,3", "a,b,c,d", "1,2,3,4,5"):
        with pytest.raises(KerassegError, match="four integers"):
            parse_roi(bad)
    assert check_box((0, 0, 120, 90), (90, 120)) == (0, 0, 120, 90)
    with pytest.raises(KerassegError, match="outside the image"):
        check_box((100, 0, 121, 10), (90, 120))
    with pytest.raises(KerassegError, match="empty"):
        check_box((10, 10, 10, 20), (90, 120))
    hint = np.zeros((90, 120), np.uint8)
    hint[20:31, 5:9] = 255
    assert box_from_hint(hint, (90, 120)) == (5, 20, 9, 31)
    with pytest.raises(KerassegError, match="hint mask is empty"):
        box_from_hint(np.zeros((90, 120)), (90, 120))


def test_segmenter_export_and_keras_agree(model, network, export_dir, tmp_path, rng):
    x = rng.normal(100, 20, size=(3, 40, 40)).astype(np.float32)
    model_path = tmp_path / "seg.keras"
    model.save(model_path)
    seg_export = Segmenter(export_dir)
    seg_keras = Segmenter(model)
    seg_file = Segmenter(model_path)
    assert seg_export.kind == "export" and seg_keras.kind == "keras" and seg_file.kind == "keras"
    p1, m1 = seg_export(x)
    p2, m2 = seg_keras(x[..., None])
    p3, m3 = seg_file(x)
    # independent reference: float64 per-image normalisation, the network in inference mode
    ref = keras_reference(network, x, "crf")
    assert 0 < (ref >= 0.5).sum() < ref.size  # non-trivial masks
    for p, m in ((p1, m1), (p2, m2), (p3, m3)):
        assert p.dtype == np.float32 and m.dtype == np.uint8 and p.shape == m.shape == x.shape
        np.testing.assert_allclose(p, ref, atol=1e-5)
        np.testing.assert_array_equal(m, (p >= 0.5).astype(np.uint8))
    decided = np.abs(ref - 0.5) > 1e-4  # pixels on the threshold may flip with float rounding
    np.testing.assert_array_equal(m1[decided], (ref >= 0.5)[decided])
    # any crop size (resized inside to 40 and back): the .keras file and its export run the same graph
    odd = rng.normal(100, 20, size=(2, 57, 33)).astype(np.float32)
    po_export, mo_export = seg_export(odd)
    po_file, mo_file = seg_file(odd)
    assert po_export.shape == odd.shape
    np.testing.assert_allclose(po_export, po_file, atol=1e-6)
    np.testing.assert_array_equal(mo_export, (po_export >= 0.5).astype(np.uint8))
    # batching does not change the result
    np.testing.assert_allclose(Segmenter(export_dir, batch_size=2)(x)[0], p1, atol=1e-6)
    for seg in (seg_export, seg_keras):
        for bad in (x[0], np.repeat(x[..., None], 3, axis=-1)):
            with pytest.raises(KerassegError, match=r"\[batch, height, width\]"):
                seg(bad)
        with pytest.raises(KerassegError, match="at least 8 x 8"):
            seg(x[:, :7, :])
        nan = x.copy()
        nan[0, 1, 2] = np.nan
        with pytest.raises(KerassegError, match="NaN"):
            seg(nan)


def test_read_dicom_monochrome1_and_rescale(tmp_path, mammogram):
    p = tmp_path / "m1.dcm"
    write_dicom(p, mammogram, spacing=(0.1, 0.05), photometric="MONOCHROME1", slope=2.0, intercept=-5.0)
    img = read_image(p)
    # MONOCHROME1 is inverted within the stored range (16 bits stored: 0..65535), then rescaled
    expected = (65535.0 - mammogram.astype(np.float64)) * 2.0 - 5.0
    np.testing.assert_allclose(img.pixels, expected)
    assert img.spacing_mm == (0.1, 0.05)
    assert img.meta["inverted"] is True
    # a pixel's value does not depend on the image's brightest pixel (not max - value)
    p2 = tmp_path / "m1_dim.dcm"
    dim = mammogram.copy()
    dim[0, 0] = 0
    dim[mammogram == mammogram.max()] = 0
    write_dicom(p2, dim, photometric="MONOCHROME1", slope=2.0, intercept=-5.0)
    keep = (dim == mammogram)
    np.testing.assert_array_equal(read_image(p2).pixels[keep], img.pixels[keep])
    # MONOCHROME2: only the rescale
    p3 = tmp_path / "m2.dcm"
    write_dicom(p3, mammogram, photometric="MONOCHROME2", slope=2.0, intercept=-5.0)
    np.testing.assert_allclose(read_image(p3).pixels, mammogram.astype(np.float64) * 2.0 - 5.0)
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"not a dicom at all")
    with pytest.raises(KerassegError, match="broken.dcm: cannot read DICOM"):
        read_image(bad)


def test_predict_dicom_with_roi_cli(export_dir, mammogram, tmp_path):
    from kerasseg.cli.main import cli

    dcm = tmp_path / "scan.dcm"
    write_dicom(dcm, mammogram, spacing=(0.07, 0.07))
    out = tmp_path / "pred"
    res = CliRunner().invoke(cli, ["predict", str(export_dir), str(dcm), "--roi", "30,20,70,60", "--out", str(out)])
    assert res.exit_code == 0, res.output
    mask = skimage.io.imread(out / "scan_mask.png")
    assert mask.shape == mammogram.shape and set(np.unique(mask)) <= {0, 255}
    assert not mask[:20].any() and not mask[60:].any() and not mask[:, :30].any() and not mask[:, 70:].any()
    # inside the box: the same as segmenting the crop directly
    _, crop_mask = Segmenter(export_dir)(mammogram[None, 20:60, 30:70].astype(np.float32))
    np.testing.assert_array_equal(mask[20:60, 30:70] // 255, crop_mask[0])
    binary = mask > 0
    assert 0 < binary.sum() < 1600
    info = json.loads((out / "scan.json").read_text())
    assert info["box"] == [30, 20, 70, 60]
    assert info["area_px"] == int(binary.sum())
    assert info["area_mm2"] == pytest.approx(binary.sum() * 0.07 * 0.07)
    assert info["perimeter_px"] == pytest.approx(perimeter(binary))
    assert info["perimeter_mm"] == pytest.approx(perimeter(binary) * 0.07)
    ov = skimage.io.imread(out / "scan_overlay.png")
    assert ov.shape == mammogram.shape + (3,) and ov.dtype == np.uint8
    np.testing.assert_array_equal(ov[20, 30:70], np.tile([255, 220, 0], (40, 1)))  # box edge
    assert np.all(ov[binary & (ov[..., 1] < 200)][:, 0] >= ov[binary & (ov[..., 1] < 200)][:, 1])
    assert sorted(p.name for p in out.iterdir()) == ["scan.json", "scan_mask.png", "scan_overlay.png",
                                                     "scan_uncertainty.png"]
    unc = skimage.io.imread(out / "scan_uncertainty.png")
    assert unc.shape == mammogram.shape and unc.dtype == np.uint8 and not unc.any()  # one model, no TTA
    assert info["uncertainty"] == str(out / "scan_uncertainty.png") and info["mean_uncertainty"] == 0.0


def test_predict_png_with_mask_hint(export_dir, mammogram, tmp_path):
    png = tmp_path / "scan.png"
    skimage.io.imsave(png, mammogram, check_contrast=False)
    hint = np.zeros(mammogram.shape, np.uint8)
    hint[25:55, 35:64] = 255
    hint_path = tmp_path / "hint.png"
    skimage.io.imsave(hint_path, hint, check_contrast=False)
    results, failures = predict_inputs(export_dir, [png], tmp_path / "o", mask_hint=hint_path)
    assert failures == {}
    info = results[str(png)]
    assert info["box"] == [35, 25, 64, 55] and info["area_mm2"] is None
    mask = skimage.io.imread(tmp_path / "o" / "scan_mask.png") > 0
    _, crop_mask = Segmenter(export_dir)(mammogram[None, 25:55, 35:64].astype(np.float32))
    np.testing.assert_array_equal(mask[25:55, 35:64], crop_mask[0].astype(bool))
    assert mask.sum() == crop_mask.sum() == info["area_px"]


def test_bad_inputs_reported_others_processed(export_dir, mammogram, tmp_path):
    from kerasseg.cli.main import cli

    good = tmp_path / "good.dcm"
    write_dicom(good, mammogram)
    small = tmp_path / "small.dcm"
    write_dicom(small, mammogram[:40, :50])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG garbage")
    missing = tmp_path / "missing.tif"
    out = tmp_path / "pred"
    res = CliRunner().invoke(cli, ["predict", str(export_dir), str(broken), str(small), str(missing), str(good),
                                   "--roi", "30,20,70,60", "--out", str(out)])
    assert res.exit_code != 0
    assert "broken.png: cannot read image" in res.output
    assert "small.dcm: ROI 30,20,70,60 is outside the image (50 x 40 pixels" in res.output
    assert "missing.tif: no such file" in res.output
    assert "3 of 4 input(s) failed" in res.output
    assert "Traceback" not in res.output
    assert (out / "good_mask.png").exists() and (out / "good.json").exists()
    assert not (out / "small_mask.png").exists()
    res = CliRunner().invoke(cli, ["predict", str(export_dir), str(good), "--roi", "30,20,30,60"])
    assert res.exit_code != 0 and "is empty" in res.output


def test_predict_npz_dataset(network, export_dir, tmp_path):
    from kerasseg.data.dataset import load_npz
    from kerasseg.data.phantom import make_phantom

    ds = make_phantom(n_train=1, n_val=1, n_test=2, size=40, seed=5)
    path = tmp_path / "rois.npz"
    from kerasseg.data.dataset import save_npz

    save_npz(ds, path)
    results, failures = predict_inputs(export_dir, [path], tmp_path / "o")
    assert failures == {}
    pred = np.load(tmp_path / "o" / "rois_predictions.npz")
    ds = load_npz(path)
    np.testing.assert_array_equal(pred["ids"], ds.ids)
    ref = keras_reference(network, ds.images, "crf")
    np.testing.assert_allclose(pred["prob"], ref, atol=1e-5)
    np.testing.assert_array_equal(pred["pred"], (pred["prob"] >= 0.5).astype(np.uint8))
    assert pred["uncertainty"].shape == pred["prob"].shape and not pred["uncertainty"].any()
    info = json.loads((tmp_path / "o" / "rois.json").read_text())
    assert [r["area_px"] for r in info["rois"]] == [int(m.sum()) for m in pred["pred"]]
    if ds.spacing_mm is not None:
        assert info["rois"][0]["area_mm2"] == pytest.approx(pred["pred"][0].sum() * float(ds.spacing_mm[0]) ** 2)
    _, failures = predict_inputs(export_dir, [path], tmp_path / "o", roi=(0, 0, 5, 5))
    assert "do not apply to .npz" in failures[str(path)]


def test_export_cli(model, network, tmp_path):
    import tensorflow as tf

    from kerasseg.cli.main import cli

    model_path = tmp_path / "model.keras"
    model.save(model_path)
    res = CliRunner().invoke(cli, ["export", str(model_path), "--out", str(tmp_path / "s" / "m")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "s" / "m" / "1" / "saved_model.pb").exists()
    res = CliRunner().invoke(cli, ["export", str(model_path), "--out", str(tmp_path / "s" / "m"), "--version", "1"])
    assert res.exit_code != 0 and "already exists; use --force" in res.output
    res = CliRunner().invoke(cli, ["export", str(tmp_path / "nope"), "--out", str(tmp_path / "s" / "m")])
    assert res.exit_code != 0 and "no such run directory or model file" in res.output
    # the segmenter .keras carries its normalisation into the export
    x = np.random.default_rng(0).normal(300, 50, (2, 40, 40)).astype(np.float32)
    loaded = tf.saved_model.load(str(tmp_path / "s" / "m" / "1"))
    got = loaded.signatures["serving_default"](image=tf.constant(x))["probability"].numpy()
    np.testing.assert_allclose(got, keras_reference(network, x, "crf"), atol=1e-5)

    # a .keras of a bare network (no preprocessing inside): wrapped resize-only, no normalisation,
    # so the export runs the network on the raw crop
    bare = tiny_model(40, crf=True, seed=2)
    bare_path = tmp_path / "bare.keras"
    bare.save(bare_path)
    res = CliRunner().invoke(cli, ["export", str(bare_path), "--out", str(tmp_path / "s" / "bare")])
    assert res.exit_code == 0, res.output
    xs = np.random.default_rng(1).normal(0, 1, (1, 40, 40)).astype(np.float32)
    loaded = tf.saved_model.load(str(tmp_path / "s" / "bare" / "1"))
    got = loaded.signatures["serving_default"](image=tf.constant(xs))["probability"].numpy()
    np.testing.assert_allclose(got, np.asarray(bare(xs[..., None], training=False)["crf"])[..., 1], atol=1e-5)
    card = json.loads((tmp_path / "s" / "bare" / "1" / "assets" / "model_card.json").read_text())
    assert card["input_contract"]["preprocessing"]["normalization"] == "none"


@pytest.fixture(scope="module")
def folds(tmp_path_factory):
    from test_export_ensemble import write_folds_dir

    return write_folds_dir(tmp_path_factory.mktemp("cvp") / "cv-tiny")


def test_tta_choices_are_the_library_modes():
    from kerasseg.cli.export_cmds import TTA_CHOICES
    from kerasseg.models.ensemble import TTA_MODES

    assert TTA_CHOICES == TTA_MODES


def test_predict_folds_dir_with_tta_cli(folds, mammogram, tmp_path):
    """`predict FOLDS_DIR --tta flips`: the ensemble graph with the cv's post-processing, and its
    uncertainty map beside the mask."""
    import keras

    from kerasseg.cli.main import cli
    from kerasseg.export.outputs import uncertainty_to_uint8
    from kerasseg.models.ensemble import ensemble_function
    from test_export_ensemble import POST

    dcm = tmp_path / "scan.dcm"
    write_dicom(dcm, mammogram, spacing=(0.07, 0.07))
    out = tmp_path / "pred"
    res = CliRunner().invoke(cli, ["predict", str(folds), str(dcm), "--roi", "30,20,70,60", "--out", str(out),
                                   "--tta", "flips"])
    assert res.exit_code == 0, res.output
    members = [keras.saving.load_model(folds / f"fold-{k}" / "model.keras") for k in (1, 2)]
    crop = mammogram[None, 20:60, 30:70].astype(np.float32)
    ref = {k: v.numpy() for k, v in ensemble_function(members, tta="flips", postprocessing=POST)(crop).items()}
    mask = skimage.io.imread(out / "scan_mask.png") // 255
    unc = skimage.io.imread(out / "scan_uncertainty.png")
    np.testing.assert_array_equal(mask[20:60, 30:70], ref["mask"][0])
    assert not mask[:20].any() and not unc[:20].any() and not unc[:, 70:].any()
    assert np.abs(unc[20:60, 30:70].astype(int) - uncertainty_to_uint8(ref["uncertainty"][0])).max() <= 1
    np.testing.assert_array_equal(uncertainty_to_uint8(np.array([0.0, 0.25, 0.5, 0.7])), [0, 128, 255, 255])
    assert unc.max() > 0  # two members and four flips disagree somewhere
    info = json.loads((out / "scan.json").read_text())
    assert info["mean_uncertainty"] == pytest.approx(float(ref["uncertainty"].mean()), abs=1e-6)


def test_export_folds_dir_cli_and_tta_errors(folds, tmp_path):
    from kerasseg.cli.main import cli

    base = tmp_path / "s" / "m"
    res = CliRunner().invoke(cli, ["export", str(folds), "--out", str(base), "--tta", "dihedral"])
    assert res.exit_code == 0, res.output
    card = json.loads((base / "1" / "assets" / "model_card.json").read_text())
    assert card["ensemble"]["tta"] == "dihedral" and len(card["ensemble"]["members"]) == 2
    res = CliRunner().invoke(cli, ["export", str(folds), "--out", str(base), "--tta", "rot90"])
    assert res.exit_code != 0 and "Invalid value for '--tta'" in res.output
    # an export's TTA is in its graph: --tta is refused for it, with one line
    png = tmp_path / "x.png"
    skimage.io.imsave(png, np.full((20, 20), 1000, np.uint16), check_contrast=False)
    res = CliRunner().invoke(cli, ["predict", str(base), str(png), "--tta", "flips", "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "has its TTA built in" in res.output and "Traceback" not in res.output
    # predicting through the export equals predicting from the folds dir with the same TTA
    x = np.random.default_rng(3).normal(100, 30, (2, 36, 45)).astype(np.float32)
    a = Segmenter(base).predict(x)
    b = Segmenter(folds, tta="dihedral").predict(x)
    for k in ("probability", "uncertainty"):
        np.testing.assert_allclose(a[k], b[k], atol=1e-5)
    np.testing.assert_array_equal(a["mask"], b["mask"])
