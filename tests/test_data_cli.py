"""``kerasseg data prepare`` / ``kerasseg data info`` through click (and once through the console script)."""

import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from fixtures_data import make_inbreast, osirix_plist, rect, write_dicom
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
