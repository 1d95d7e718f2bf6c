"""``kerasseg data prepare`` / ``kerasseg data info`` through click (and once through the console script)."""

import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from fixtures.data import gradient_image, make_ddsm_case, make_inbreast, osirix_plist, rect, write_cbis, write_dicom
from kerasseg.cli.main import cli
from kerasseg.data.dataset import load_npz

DIAMOND = [(140, 30), (160, 50), (140, 70), (120, 50)]


def run(*args):
    return CliRunner().invoke(cli, ["data", *map(str, args)], catch_exceptions=False)


@pytest.fixture
def inbreast(tmp_path):
    cases = [dict(id=str(i), patient=f"h{i % 3}", lat="LR"[i % 2],
                  rois=[("Mass", DIAMOND)] + ([("Mass", rect(10, 10, 40, 30))] if i == 3 else []))
             for i in range(1, 7)]
    return make_inbreast(tmp_path / "INbreast", cases)


def test_prepare_inbreast_writes_contract_npz(inbreast, tmp_path):
    out = tmp_path / "ib.npz"
    res = run("prepare", "inbreast", inbreast, "--out", out, "--size", 32, "--val-fraction", 0.25, "--no-progress")
    assert res.exit_code == 0, res.output
    ds = load_npz(out)
    assert ds.images.shape == (7, 32, 32) and ds.source == "inbreast"
    assert ds.counts() == {"train": 3, "val": 1, "test": 3}
    assert "read 7 mass(es) from 6 image(s)" in res.output
    assert ds.boxes is not None and ds.spacing_mm is not None
    # same inputs, same file content
    out2 = tmp_path / "ib2.npz"
    run("prepare", "inbreast", inbreast, "--out", out2, "--size", 32, "--val-fraction", 0.25, "--no-progress")
    assert load_npz(out2).data_hash() == ds.data_hash()


def test_info_prints_counts_and_writes_grid(inbreast, tmp_path):
    out = tmp_path / "ib.npz"
    assert run("prepare", "inbreast", inbreast, "--out", out, "--no-progress").exit_code == 0
    grid = tmp_path / "grid.png"
    res = run("info", out, "--grid", grid, "--n", 4)
    assert res.exit_code == 0, res.output
    ds = load_npz(out)
    c = ds.counts()
    assert f"train {c['train']}" in res.output and f"test {c['test']}" in res.output
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_skipped_xml_is_counted_in_summary(inbreast, tmp_path):
    (inbreast / "AllXML" / "99.xml").write_bytes(osirix_plist([("Mass", DIAMOND)]))
    res = run("prepare", "inbreast", inbreast, "--out", tmp_path / "x.npz", "--no-progress")
    assert res.exit_code == 0, res.output
    assert "skipped 1 file(s)" in res.output and "99.xml" in res.output


def _no_npz_left(folder):
    return [p.name for p in folder.iterdir() if ".npz" in p.name]


@pytest.mark.parametrize("problem", ["corrupt_dicom", "no_pixels", "bad_xml", "two_points", "empty", "unwritable"])
def test_bad_input_one_line_error_no_partial_file(inbreast, tmp_path, problem):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "ds.npz"
    dcm = sorted((inbreast / "AllDICOMs").glob("1_*.dcm"))[0]
    xml = inbreast / "AllXML" / "1.xml"
    if problem == "corrupt_dicom":
        dcm.write_bytes(b"\x00" * 50)
        culprit = dcm
    elif problem == "no_pixels":
        write_dicom(dcm, None, pixel_data=False)
        culprit = dcm
    elif problem == "bad_xml":
        xml.write_text("this is <not xml")
        culprit = xml
    elif problem == "two_points":
        xml.write_bytes(osirix_plist([("Mass", [(1, 1), (5, 5)])]))
        culprit = xml
    elif problem == "empty":
        for p in (inbreast / "AllXML").glob("*.xml"):
            p.write_bytes(osirix_plist([("Calcification", DIAMOND)]))
        culprit = None
    else:
        out = tmp_path / "missing_folder" / "ds.npz"
        culprit = tmp_path / "missing_folder"
    res = CliRunner().invoke(cli, ["data", "prepare", "inbreast", str(inbreast), "--out", str(out), "--no-progress"])
    assert res.exit_code != 0
    assert res.exception is None or isinstance(res.exception, SystemExit)
    err_lines = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert len(err_lines) == 1, res.output
    assert "Traceback" not in res.output
    if culprit is not None:
        assert err_lines[0].startswith(f"Error: {culprit}: ")
    assert _no_npz_left(out_dir) == []


def test_output_path_that_is_a_folder(inbreast, tmp_path):
    target = tmp_path / "a.npz"
    target.mkdir()  # cannot be replaced by a file, even as root
    res = CliRunner().invoke(cli, ["data", "prepare", "inbreast", str(inbreast), "--out", str(target),
                                   "--no-progress"])
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert [ln for ln in res.output.splitlines() if ln.startswith(f"Error: {target}: ")], res.output
    assert list(tmp_path.glob(".a.npz*")) == [] and list(target.iterdir()) == []


def test_prepare_phantom_via_console_script(tmp_path):
    exe = shutil.which("kerasseg")
    cmd = [exe] if exe else [sys.executable, "-m", "kerasseg"]
    out = tmp_path / "ph.npz"
    proc = subprocess.run(cmd + ["data", "prepare", "phantom", "-", "--out", str(out), "--n-train", "3",
                                 "--n-val", "1", "--n-test", "2", "--size", "24", "--seed", "5"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    ds = load_npz(out)
    assert ds.counts() == {"train": 3, "val": 1, "test": 2}
    assert ds.images.shape == (6, 24, 24) and ds.source == "phantom"
    from kerasseg.data.phantom import make_phantom

    ref = make_phantom(n_train=3, n_val=1, n_test=2, size=24, seed=5)
    np.testing.assert_array_equal(ds.images, ref.images)
    np.testing.assert_array_equal(ds.masks, ref.masks)


def test_prepare_ddsm_cbis_folder(tmp_path):
    img = gradient_image(80, 100)
    codes = [2] * 20 + [4] * 10 + [6] * 20 + [0] * 10
    for vol, case in [("BCRP_MASS_0", "case0001"), ("BCRP_MASS_1", "case0002")]:
        make_ddsm_case(tmp_path / "ddsm" / vol, case, {"LEFT_CC": (img, [("MASS SHAPE OVAL", 30, 30, codes)])})
    res = run("prepare", "ddsm-bcrp", tmp_path / "ddsm", "--out", tmp_path / "d.npz", "--no-progress")
    assert res.exit_code == 0, res.output
    assert load_npz(tmp_path / "d.npz").counts() == {"train": 1, "val": 0, "test": 1}

    mask = np.zeros((80, 100), bool)
    mask[20:50, 60:90] = True
    write_cbis(tmp_path / "cbis", [dict(patient="P_00001", side="LEFT", view="CC", abn=1, image=img, mask=mask,
                                        crop=img[20:50, 60:90])])
    res = run("prepare", "cbis-ddsm", tmp_path / "cbis", "--out", tmp_path / "c.npz", "--size", 16)
    assert res.exit_code == 0, res.output
    ds = load_npz(tmp_path / "c.npz")
    assert ds.boxes.tolist() == [[60, 20, 90, 50]] and ds.images.shape == (1, 16, 16)

    from skimage.io import imsave

    for sub in ("images", "masks"):
        (tmp_path / "fold" / sub).mkdir(parents=True)
    for i in range(4):
        imsave(tmp_path / "fold" / "images" / f"im{i}.png", img, check_contrast=False)
        imsave(tmp_path / "fold" / "masks" / f"im{i}.png", mask.astype(np.uint8) * 255, check_contrast=False)
    res = run("prepare", "folder", tmp_path / "fold", "--out", tmp_path / "f", "--seed", 3, "--no-progress")
    assert res.exit_code == 0, res.output
    ds = load_npz(tmp_path / "f.npz")  # .npz appended
    assert ds.counts() == {"train": 2, "val": 0, "test": 2} and ds.source == "folder"


def test_ddsm_missing_image_error_through_cli(tmp_path):
    make_ddsm_case(tmp_path, "case0001", {"LEFT_CC": (None, [("MASS", 20, 20, [2, 4, 6, 0])])})
    res = CliRunner().invoke(cli, ["data", "prepare", "ddsm-bcrp", str(tmp_path), "--out", str(tmp_path / "o.npz")])
    assert res.exit_code == 1
    assert f"Error: {tmp_path / 'case0001' / 'A_0001_1.LEFT_CC.LJPEG'}: no decoded image" in res.output
    assert not (tmp_path / "o.npz").exists()


def test_cli_choices_are_the_library_registries():
    """The CLI lists its choices without importing the readers (fast start); they must be the registry's."""
    from kerasseg.cli import data_cmds
    from kerasseg.data import splits
    from kerasseg.data.readers import SOURCES

    assert data_cmds.SOURCES == SOURCES
    assert data_cmds.SPLITS == ("auto",) + tuple(splits.METHODS)


def test_phantom_reader_takes_split_counts():
    """``data prepare phantom`` is the registry's phantom reader: the counts reach make_phantom."""
    from kerasseg.data.phantom import make_phantom
    from kerasseg.data.readers import prepare

    ds, summary = prepare("phantom", "-", size=24, seed=3, n_train=4, n_val=2, n_test=1)
    assert ds.counts() == {"train": 4, "val": 2, "test": 1}
    ref = make_phantom(n_train=4, n_val=2, n_test=1, size=24, seed=3)
    np.testing.assert_array_equal(ds.images, ref.images)
    assert summary.lines() == ["generated 7 phantom ROI(s)"]
