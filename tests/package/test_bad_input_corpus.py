"""Bad-input corpus through the CLI (issue "Faults and bad input", item 8).

Every case runs one ``kerasseg`` command on broken input and asserts: exit status 1 (2 for click
usage errors), an ``Error:`` line naming the offending file or value, no traceback, and nothing left
behind (the output location and the shared fixtures are snapshot before and after). One tiny trained
run is shared by the evaluate/export/predict/compare cases; almost every case fails before training.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fixtures.data import gradient_image, make_inbreast, rect, write_cbis
from kerasseg.cli.main import cli

DIAMOND = [(140, 30), (160, 50), (140, 70), (120, 50)]


# --------------------------------------------------------------------------- shared fixtures

def _arrays(n=4, size=40, **over):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    disc = (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 4) ** 2).astype(np.uint8)
    arrays = {"images": rng.normal(100, 10, (n, size, size)).astype(np.float32),
              "masks": np.repeat(disc[None], n, 0),
              "split": np.array(["train", "train", "val", "test"][:n]),
              "ids": np.array([f"r{i}" for i in range(n)])}
    arrays.update(over)
    return arrays


def _tiny_cfg(path, base="crunet-unet", extra=""):
    model = '{"filters": [4, 8]}' if base.startswith("crunet") else "{}"
    path.write_text(f"extends: {base}\nname: tiny\nmodel: {model}\ntrain: {{\"batch_size\": 8, \"epochs\": 1}}\n"
                    + extra)
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from kerasseg.data.dataset import save_npz
    from kerasseg.data.phantom import make_phantom
    from kerasseg.evaluation.report import evaluate_run
    from kerasseg.training import fit

    base = tmp_path_factory.mktemp("corpus")
    data = base / "data"
    data.mkdir()
    tiny = save_npz(make_phantom(n_train=4, n_val=2, n_test=2, size=40, seed=3), data / "tiny.npz")
    other = save_npz(make_phantom(n_train=4, n_val=2, n_test=2, size=40, seed=7), data / "other.npz")
    small = save_npz(make_phantom(n_train=4, n_val=2, n_test=2, size=32, seed=3), data / "size32.npz")
    no_val = save_npz(make_phantom(n_train=4, n_val=0, n_test=2, size=40, seed=3), data / "noval.npz")
    one_val = save_npz(make_phantom(n_train=4, n_val=1, n_test=2, size=40, seed=3), data / "oneval.npz")
    cfg = _tiny_cfg(base / "tiny.yaml")
    run = base / "run"
    fit(str(cfg), data=str(tiny), out_dir=str(run), epochs=1, seed=0)
    rep_a, rep_b = base / "rep_a", base / "rep_b"
    evaluate_run(str(run), data=str(tiny), split="test", out_dir=str(rep_a), figures=False, verbose=False)
    evaluate_run(str(run), data=str(other), split="test", out_dir=str(rep_b), figures=False, verbose=False)
    png = base / "img.png"
    from skimage.io import imsave
    imsave(png, gradient_image(60, 60), check_contrast=False)
    return dict(base=base, tiny=Path(tiny), other=Path(other), small=Path(small), no_val=Path(no_val),
                one_val=Path(one_val), cfg=cfg, run=run, model=run / "model.keras", rep_a=rep_a, rep_b=rep_b,
                png=png)


# --------------------------------------------------------------------------- input builders

def _npz(tmp, name="bad.npz", **over):
    path = tmp / name
    with open(path, "wb") as fh:
        np.savez(fh, **_arrays(**over))
    return path


def _without(tmp, key):
    arrays = _arrays()
    del arrays[key]
    path = tmp / "nokey.npz"
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def _truncated(tmp):
    path = _npz(tmp, "whole.npz")
    data = path.read_bytes()
    path.unlink()
    bad = tmp / "trunc.npz"
    bad.write_bytes(data[: len(data) // 2])
    return bad


def _npy_as_npz(tmp):
    path = tmp / "arr.npz"
    with open(path, "wb") as fh:
        np.save(fh, np.zeros((4, 40, 40), np.float32))
    return path


def _file(tmp, name, content=b""):
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _dir(tmp, name):
    path = tmp / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def _yaml(tmp, text, name="bad.yaml"):
    path = tmp / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


TINY = 'extends: crunet-unet\nname: tiny\nmodel: {filters: [4, 8]}\ntrain: {batch_size: 8, epochs: 1}\n'


def _inbreast(tmp, rois=(("Mass", DIAMOND),)):
    return make_inbreast(tmp / "INbreast", [dict(id="1", patient="h1", lat="L", rois=list(rois))])


def _plist_point_px_not_list(tmp):
    import plistlib

    root = _inbreast(tmp)
    xml = root / "AllXML" / "1.xml"
    xml.write_bytes(plistlib.dumps({"Images": [{"ImageIndex": 0, "NumberOfROIs": 1, "ROIs": [
        {"Name": "Mass", "NumberOfPoints": 4, "Point_px": "(140.0, 30.0)"}]}]}, fmt=plistlib.FMT_XML))
    return root, xml


def _run_copy(env, tmp, model_bytes=None, drop_model=False):
    run = tmp / "runcopy"
    shutil.copytree(env["run"], run)
    if drop_model:
        (run / "model.keras").unlink()
    if model_bytes is not None:
        (run / "model.keras").write_bytes(model_bytes)
    return run


def _folds(tmp, cv):
    d = tmp / "folds"
    d.mkdir()
    (d / "cv.json").write_text(cv if isinstance(cv, str) else json.dumps(cv))
    return d


CV_RUNNING = {"kind": "kerasseg-cv", "status": "running", "folds": 2}
CV_NO_FOLDS = {"kind": "kerasseg-cv", "status": "finished", "folds": 2}
CV_BAD_K = {"kind": "kerasseg-cv", "status": "finished", "folds": "two"}


def _report_copy(env, tmp, drop=None, replace=None):
    rep = tmp / "rep"
    shutil.copytree(env["rep_a"], rep)
    if drop:
        (rep / drop).unlink()
    if replace:
        (rep / replace[0]).write_bytes(replace[1])
    return rep


# --------------------------------------------------------------------------- the corpus
# each case: id -> f(env, tmp) returning (argv, [strings the Error: line must contain])

def _c(argv, *named):
    return [str(a) for a in argv], [str(n) for n in named]


CASES = {
    # ---- data info: the .npz contract
    "info-missing-file": lambda e, t: _c(["data", "info", t / "nope.npz"], t / "nope.npz"),
    "info-directory": lambda e, t: _c(["data", "info", _dir(t, "d.npz")], t / "d.npz"),
    "info-empty-file": lambda e, t: _c(["data", "info", _file(t, "e.npz")], t / "e.npz"),
    "info-garbage": lambda e, t: _c(["data", "info", _file(t, "g.npz", b"garbage" * 50)], t / "g.npz"),
    "info-truncated": lambda e, t: _c(["data", "info", _truncated(t)], t / "trunc.npz"),
    "info-npy-renamed": lambda e, t: _c(["data", "info", _npy_as_npz(t)], t / "arr.npz"),
    "info-missing-masks": lambda e, t: _c(["data", "info", _without(t, "masks")], t / "nokey.npz", "masks"),
    "info-missing-ids": lambda e, t: _c(["data", "info", _without(t, "ids")], t / "nokey.npz", "ids"),
    "info-nan-images": lambda e, t: _c(["data", "info", _npz(t, images=np.full((4, 40, 40), np.nan, np.float32))],
                                       t / "bad.npz"),
    "info-inf-images": lambda e, t: _c(["data", "info", _npz(t, images=np.full((4, 40, 40), np.inf, np.float32))],
                                       t / "bad.npz"),
    "info-fractional-masks": lambda e, t: _c(["data", "info", _npz(t, masks=np.full((4, 40, 40), 0.5))],
                                             t / "bad.npz"),
    "info-non-square": lambda e, t: _c(["data", "info", _npz(t, images=np.zeros((4, 40, 32), np.float32),
                                                             masks=np.zeros((4, 40, 32), np.uint8))], t / "bad.npz"),
    "info-bad-split-label": lambda e, t: _c(["data", "info", _npz(t, split=np.array(["train", "training", "val",
                                                                                     "test"]))],
                                            t / "bad.npz", "training"),
    "info-duplicate-ids": lambda e, t: _c(["data", "info", _npz(t, ids=np.array(["a", "b", "a", "c"]))],
                                          t / "bad.npz"),
    "info-length-mismatch": lambda e, t: _c(["data", "info", _npz(t, ids=np.array(["a", "b", "c"]))],
                                            t / "bad.npz"),
    "info-grid-under-file": lambda e, t: _c(["data", "info", e["tiny"], "--grid", _file(t, "f") / "g.png"],
                                            t / "f"),
    # ---- data prepare: sources
    "prepare-inbreast-missing": lambda e, t: _c(["data", "prepare", "inbreast", t / "none", "--out", t / "o.npz",
                                                 "--no-progress"], t / "none"),
    "prepare-inbreast-is-file": lambda e, t: _c(["data", "prepare", "inbreast", _file(t, "ib", b"x"), "--out",
                                                 t / "o.npz", "--no-progress"], t / "ib"),
    "prepare-inbreast-no-allxml": lambda e, t: (
        shutil.rmtree(_inbreast(t) / "AllXML"),
        _c(["data", "prepare", "inbreast", t / "INbreast", "--out", t / "o.npz", "--no-progress"], t / "INbreast"))[1],
    "prepare-inbreast-point-px-not-list": lambda e, t: (lambda r: _c(
        ["data", "prepare", "inbreast", r[0], "--out", t / "o.npz", "--no-progress"], r[1], "Point_px"))(
        _plist_point_px_not_list(t)),
    "prepare-inbreast-no-mass": lambda e, t: _c(
        ["data", "prepare", "inbreast", _inbreast(t, [("Calcification", DIAMOND)]), "--out", t / "o.npz",
         "--no-progress"], t / "INbreast"),
    "prepare-inbreast-dicom-not-dicom": lambda e, t: (lambda root: (
        [p.write_text("this is not a DICOM file\n") for p in (root / "AllDICOMs").glob("*.dcm")],
        _c(["data", "prepare", "inbreast", root, "--out", t / "o.npz", "--no-progress"],
           next((root / "AllDICOMs").glob("*.dcm"))))[1])(_inbreast(t)),
    "prepare-inbreast-empty-xml": lambda e, t: (lambda root: (
        (root / "AllXML" / "1.xml").write_bytes(b""),
        _c(["data", "prepare", "inbreast", root, "--out", t / "o.npz", "--no-progress"],
           root / "AllXML" / "1.xml"))[1])(_inbreast(t)),
    "prepare-inbreast-xml-not-utf8": lambda e, t: (lambda root: (
        (root / "AllXML" / "1.xml").write_bytes(b"\xff\xfe\x00<plist>\xc3\x28"),
        _c(["data", "prepare", "inbreast", root, "--out", t / "o.npz", "--no-progress"],
           root / "AllXML" / "1.xml"))[1])(_inbreast(t)),
    "prepare-folder-missing": lambda e, t: _c(["data", "prepare", "folder", t / "nofolder", "--out", t / "o.npz",
                                               "--no-progress"], t / "nofolder"),
    "prepare-folder-empty": lambda e, t: _c(["data", "prepare", "folder", _dir(t, "empty"), "--out", t / "o.npz",
                                             "--no-progress"], t / "empty"),
    "prepare-cbis-missing-csv-dir": lambda e, t: _c(["data", "prepare", "cbis-ddsm", t / "cbis", "--out",
                                                     t / "o.npz", "--no-progress"], t / "cbis"),
    "prepare-cbis-missing-dicom": lambda e, t: (lambda csv: (
        shutil.rmtree(t / "cbis" / "CBIS-DDSM" / "Mass-Training_P_00001_LEFT_CC_1"),
        _c(["data", "prepare", "cbis-ddsm", t / "cbis", "--out", t / "o.npz", "--no-progress"],
           "Mass-Training_P_00001_LEFT_CC_1"))[1])(write_cbis(t / "cbis", [dict(
               patient="P_00001", side="LEFT", view="CC", abn=1, image=gradient_image(120, 100),
               mask=np.pad(np.ones((20, 20), bool), ((40, 60), (30, 50))),
               crop=gradient_image(20, 20))])),
    "prepare-out-is-folder": lambda e, t: _c(["data", "prepare", "phantom", "-", "--out", _dir(t, "o.npz")],
                                             t / "o.npz"),
    "prepare-out-under-file": lambda e, t: _c(["data", "prepare", "phantom", "-", "--out",
                                               _file(t, "f", b"x") / "o.npz"], t / "f"),
    # ---- data split: the .npz contract and the output path
    "split-missing-file": lambda e, t: _c(["data", "split", t / "nope.npz", "--out", t / "s.npz"], t / "nope.npz"),
    "split-npy-renamed": lambda e, t: _c(["data", "split", _npy_as_npz(t), "--out", t / "s.npz"], t / "arr.npz"),
    "split-fractional-masks": lambda e, t: _c(["data", "split", _npz(t, masks=np.full((4, 40, 40), 0.5)),
                                               "--out", t / "s.npz"], t / "bad.npz"),
    "split-out-is-folder": lambda e, t: _c(["data", "split", e["tiny"], "--out", _dir(t, "o.npz")], t / "o.npz"),
    "split-out-under-file": lambda e, t: _c(["data", "split", e["tiny"], "--out", _file(t, "f", b"x") / "o.npz"],
                                            t / "f"),
    # ---- fit: configs
    "fit-config-missing-path": lambda e, t: _c(["fit", t / "nope.yaml", "--data", e["tiny"], "--out", t / "r"],
                                               t / "nope.yaml"),
    "fit-config-unknown-name": lambda e, t: _c(["fit", "no-such-config", "--data", e["tiny"], "--out", t / "r"],
                                               "no-such-config"),
    "fit-config-is-directory": lambda e, t: _c(["fit", _dir(t, "c.yaml"), "--data", e["tiny"], "--out", t / "r"],
                                               t / "c.yaml"),
    "fit-config-empty-file": lambda e, t: _c(["fit", _yaml(t, ""), "--data", e["tiny"], "--out", t / "r", "--epochs", "1"],
                                             t / "bad.yaml"),
    "fit-config-yaml-syntax": lambda e, t: _c(["fit", _yaml(t, TINY + "train: {epochs: [1,\n"), "--data", e["tiny"],
                                               "--out", t / "r"], t / "bad.yaml"),
    "fit-config-not-a-mapping": lambda e, t: _c(["fit", _yaml(t, "- a\n- b\n"), "--data", e["tiny"],
                                                 "--out", t / "r"], t / "bad.yaml"),
    "fit-config-unknown-key": lambda e, t: _c(["fit", _yaml(t, TINY + "trian: {epochs: 1}\n"), "--data", e["tiny"],
                                               "--out", t / "r"], t / "bad.yaml", "trian"),
    "fit-config-unknown-train-key": lambda e, t: _c(["fit", _yaml(t, TINY.replace("epochs: 1", "epoch: 1")),
                                                     "--data", e["tiny"], "--out", t / "r"], t / "bad.yaml", "epoch"),
    "fit-config-bad-type": lambda e, t: _c(["fit", _yaml(t, TINY.replace("batch_size: 8", "batch_size: eight")),
                                            "--data", e["tiny"], "--out", t / "r"], t / "bad.yaml", "batch_size"),
    "fit-config-bool-for-int": lambda e, t: _c(["fit", _yaml(t, TINY.replace("batch_size: 8", "batch_size: true")),
                                                "--data", e["tiny"], "--out", t / "r"], t / "bad.yaml", "batch_size"),
    "fit-config-inf-lr": lambda e, t: _c(["fit", _yaml(t, TINY.replace("epochs: 1", "epochs: 1, learning_rate: .inf")),
                                          "--data", e["tiny"], "--out", t / "r"], t / "bad.yaml", "learning_rate"),
    "fit-config-nan-lr": lambda e, t: _c(["fit", _yaml(t, TINY.replace("epochs: 1", "epochs: 1, learning_rate: .nan")),
                                          "--data", e["tiny"], "--out", t / "r"], t / "bad.yaml", "learning_rate"),
    "fit-config-not-utf8": lambda e, t: _c(["fit", _yaml(t, TINY.encode() + b"name: caf\xe9\xff\n"),
                                            "--data", e["tiny"], "--out", t / "r"], t / "bad.yaml"),
    "fit-config-extends-missing": lambda e, t: _c(["fit", _yaml(t, "extends: no-such-base\nname: x\n"),
                                                   "--data", e["tiny"], "--out", t / "r"], "no-such-base"),
    "fit-config-dropout-on-fcn": lambda e, t: _c(["fit", _yaml(t, "extends: zhu-fcn\nname: x\nmodel: {dropout: 0.5}\n"),
                                                  "--data", e["tiny"], "--out", t / "r"], t / "bad.yaml", "dropout"),
    "fit-config-zero-epochs": lambda e, t: _c(["fit", _yaml(t, TINY.replace("epochs: 1", "epochs: 0")),
                                               "--data", e["tiny"], "--out", t / "r"], t / "bad.yaml", "epochs"),
    "fit-config-fractional-epochs": lambda e, t: _c(["fit", _yaml(t, TINY.replace("epochs: 1", "epochs: 1.5")),
                                                     "--data", e["tiny"], "--out", t / "r"], t / "bad.yaml", "epochs"),
    "fit-config-negative-seed": lambda e, t: _c(["fit", _yaml(t, TINY.replace("epochs: 1", "epochs: 1, seed: -3")),
                                                 "--data", e["tiny"], "--out", t / "r"], t / "bad.yaml", "seed"),
    "fit-seed-too-large": lambda e, t: _c(["fit", e["cfg"], "--data", e["tiny"], "--out", t / "r",
                                           "--seed", str(2 ** 64)], str(2 ** 64)),
    "fit-folds-seed-too-large": lambda e, t: _c(["fit", e["cfg"], "--data", e["tiny"], "--out", t / "r",
                                                 "--folds", "2", "--seed", str(2 ** 64)], str(2 ** 64)),
    # ---- fit: data and output
    "fit-data-missing": lambda e, t: _c(["fit", e["cfg"], "--data", t / "nope.npz", "--out", t / "r"],
                                        t / "nope.npz"),
    "fit-data-directory": lambda e, t: _c(["fit", e["cfg"], "--data", _dir(t, "d.npz"), "--out", t / "r"],
                                          t / "d.npz"),
    "fit-data-empty": lambda e, t: _c(["fit", e["cfg"], "--data", _file(t, "e.npz"), "--out", t / "r"], t / "e.npz"),
    "fit-data-garbage": lambda e, t: _c(["fit", e["cfg"], "--data", _file(t, "g.npz", b"PK\x03\x04junk"),
                                         "--out", t / "r"], t / "g.npz"),
    "fit-data-nan-images": lambda e, t: _c(["fit", e["cfg"], "--data",
                                            _npz(t, images=np.full((4, 40, 40), np.nan, np.float32)),
                                            "--out", t / "r"], t / "bad.npz"),
    "fit-data-fractional-masks": lambda e, t: _c(["fit", e["cfg"], "--data", _npz(t, masks=np.full((4, 40, 40), 0.5)),
                                                  "--out", t / "r"], t / "bad.npz"),
    "fit-data-no-train-split": lambda e, t: _c(["fit", e["cfg"], "--data",
                                                _npz(t, split=np.array(["test", "test", "val", "test"])),
                                                "--out", t / "r"], t / "bad.npz", "train"),
    "fit-out-is-file": lambda e, t: _c(["fit", e["cfg"], "--data", e["tiny"], "--out", _file(t, "f", b"x")], t / "f"),
    "fit-out-under-file": lambda e, t: _c(["fit", e["cfg"], "--data", e["tiny"], "--out", _file(t, "f", b"x") / "r"],
                                          t / "f"),
    "fit-devices-more-than-val-rois": lambda e, t: _c(["fit", e["cfg"], "--data", e["one_val"], "--out", t / "r",
                                                       "--devices", "2"], "devices"),
    "fit-folds-too-few-groups": lambda e, t: _c(["fit", e["cfg"], "--data", _npz(t, group=np.array(["a", "a", "b", "b"])),
                                                 "--folds", "3", "--out", t / "cv"], t / "bad.npz", "groups"),
    "fit-folds-broken-cv-json": lambda e, t: _c(["fit", e["cfg"], "--data", e["tiny"], "--folds", "2",
                                                 "--out", _folds(t, "{not json")], t / "folds" / "cv.json"),
    # ---- evaluate
    "evaluate-missing-source": lambda e, t: _c(["evaluate", t / "norun", "--out", t / "rep"], t / "norun"),
    "evaluate-run-without-model": lambda e, t: _c(["evaluate", _run_copy(e, t, drop_model=True), "--out", t / "rep"],
                                                  t / "runcopy"),
    "evaluate-corrupt-model-keras": lambda e, t: _c(["evaluate", _run_copy(e, t, model_bytes=b"PK\x03\x04junk" * 9),
                                                     "--out", t / "rep"], t / "runcopy" / "model.keras"),
    "evaluate-empty-keras-file": lambda e, t: _c(["evaluate", _file(t, "m.keras"), "--data", e["tiny"],
                                                  "--out", t / "rep"], t / "m.keras"),
    "evaluate-source-not-keras": lambda e, t: _c(["evaluate", e["tiny"], "--out", t / "rep"], e["tiny"]),
    "evaluate-unknown-split": lambda e, t: _c(["evaluate", e["run"], "--split", "bogus", "--out", t / "rep"],
                                              "bogus"),
    "evaluate-split-data-lacks": lambda e, t: _c(["evaluate", e["run"], "--data", e["no_val"], "--split", "val",
                                                  "--out", t / "rep"], "val", e["no_val"]),
    "evaluate-data-without-test": lambda e, t: _c(["evaluate", e["run"], "--data",
                                                   _npz(t, split=np.array(["train", "train", "val", "val"])),
                                                   "--out", t / "rep"], t / "bad.npz", "test"),
    "evaluate-roi-size-differs": lambda e, t: _c(["evaluate", e["run"], "--data", e["small"], "--out", t / "rep"],
                                                 e["small"]),
    "evaluate-data-garbage": lambda e, t: _c(["evaluate", e["run"], "--data", _file(t, "g.npz", b"junk"),
                                              "--out", t / "rep"], t / "g.npz"),
    "evaluate-data-nan": lambda e, t: _c(["evaluate", e["run"], "--data",
                                          _npz(t, images=np.full((4, 40, 40), np.inf, np.float32)),
                                          "--out", t / "rep"], t / "bad.npz"),
    "evaluate-out-is-file": lambda e, t: _c(["evaluate", e["run"], "--out", _file(t, "f", b"x")], t / "f"),
    "evaluate-out-under-file": lambda e, t: _c(["evaluate", e["run"], "--out", _file(t, "f", b"x") / "rep"], t / "f"),
    "evaluate-folds-broken-cv": lambda e, t: _c(["evaluate", _folds(t, "{not json"), "--data", e["tiny"],
                                                 "--out", t / "rep"], t / "folds" / "cv.json"),
    "evaluate-folds-unfinished": lambda e, t: _c(["evaluate", _folds(t, CV_RUNNING), "--data", e["tiny"],
                                                  "--out", t / "rep"], t / "folds"),
    "evaluate-folds-missing-fold": lambda e, t: _c(["evaluate", _folds(t, CV_NO_FOLDS), "--data", e["tiny"],
                                                    "--out", t / "rep"], t / "folds" / "fold-1"),
    "evaluate-folds-bad-k": lambda e, t: _c(["evaluate", _folds(t, CV_BAD_K), "--data", e["tiny"],
                                             "--out", t / "rep"], t / "folds"),
    # ---- export
    "export-missing-source": lambda e, t: _c(["export", t / "norun", "--out", t / "exp"], t / "norun"),
    "export-run-without-model": lambda e, t: _c(["export", _run_copy(e, t, drop_model=True), "--out", t / "exp"],
                                                t / "runcopy"),
    "export-corrupt-model-keras": lambda e, t: _c(["export", _run_copy(e, t, model_bytes=b"\x00" * 64),
                                                   "--out", t / "exp"], t / "runcopy" / "model.keras"),
    "export-out-is-file": lambda e, t: _c(["export", e["run"], "--out", _file(t, "f", b"x")], t / "f"),
    "export-out-under-file": lambda e, t: _c(["export", e["run"], "--out", _file(t, "f", b"x") / "exp"], t / "f"),
    "export-negative-version": lambda e, t: _c(["export", e["run"], "--out", t / "exp", "--version", "-1"], "-1"),
    "export-folds-broken-cv": lambda e, t: _c(["export", _folds(t, "[1, 2"), "--out", t / "exp"],
                                              t / "folds" / "cv.json"),
    "export-folds-unfinished": lambda e, t: _c(["export", _folds(t, CV_RUNNING), "--out", t / "exp"], t / "folds"),
    # ---- predict
    "predict-missing-model": lambda e, t: _c(["predict", t / "norun", e["png"], "--out", t / "pred"], t / "norun"),
    "predict-corrupt-model-keras": lambda e, t: _c(["predict", _run_copy(e, t, model_bytes=b"garbage"), e["png"],
                                                    "--out", t / "pred"], t / "runcopy" / "model.keras"),
    "predict-run-without-model": lambda e, t: _c(["predict", _run_copy(e, t, drop_model=True), e["png"],
                                                  "--out", t / "pred"], t / "runcopy"),
    "predict-missing-input": lambda e, t: _c(["predict", e["run"], t / "none.png", "--out", t / "pred"],
                                             t / "none.png"),
    "predict-unreadable-image": lambda e, t: _c(["predict", e["run"], _file(t, "x.png", b"\x89PNG\r\n\x1a\nbroken"),
                                                 "--out", t / "pred"], t / "x.png"),
    "predict-empty-image": lambda e, t: _c(["predict", e["run"], _file(t, "e.png"), "--out", t / "pred"], t / "e.png"),
    "predict-dicom-not-dicom": lambda e, t: _c(["predict", e["run"], _file(t, "x.dcm", b"not a dicom"),
                                                "--out", t / "pred"], t / "x.dcm"),
    "predict-npz-nan-images": lambda e, t: _c(["predict", e["run"],
                                               _npz(t, images=np.full((4, 40, 40), np.nan, np.float32)),
                                               "--out", t / "pred"], t / "bad.npz"),
    "predict-roi-three-numbers": lambda e, t: _c(["predict", e["run"], e["png"], "--roi", "1,2,3",
                                                  "--out", t / "pred"], "1,2,3"),
    "predict-roi-not-numbers": lambda e, t: _c(["predict", e["run"], e["png"], "--roi", "a,b,c,d",
                                                "--out", t / "pred"], "a,b,c,d"),
    "predict-roi-empty-box": lambda e, t: _c(["predict", e["run"], e["png"], "--roi", "30,30,10,10",
                                              "--out", t / "pred"], "30,30,10,10"),
    "predict-roi-outside-image": lambda e, t: _c(["predict", e["run"], e["png"], "--roi", "0,0,500,500",
                                                  "--out", t / "pred"], "0,0,500,500"),
    "predict-roi-and-mask-hint": lambda e, t: _c(["predict", e["run"], e["png"], "--roi", "0,0,10,10",
                                                  "--mask-hint", e["png"], "--out", t / "pred"], "--mask-hint"),
    "predict-mask-hint-missing": lambda e, t: _c(["predict", e["run"], e["png"], "--mask-hint", t / "hint.png",
                                                  "--out", t / "pred"], t / "hint.png"),
    "predict-out-is-file": lambda e, t: _c(["predict", e["run"], e["png"], "--out", _file(t, "f", b"x")], t / "f"),
    "predict-folds-broken-cv": lambda e, t: _c(["predict", _folds(t, ""), e["png"], "--out", t / "pred"],
                                               t / "folds" / "cv.json"),
    "predict-folds-unfinished": lambda e, t: _c(["predict", _folds(t, CV_RUNNING), e["png"], "--out", t / "pred"],
                                                t / "folds"),
    # ---- compare
    "compare-missing-report": lambda e, t: _c(["compare", t / "norep", e["rep_b"], "--out", t / "c.json"],
                                              t / "norep"),
    "compare-report-is-file": lambda e, t: _c(["compare", _file(t, "rep.json", b"{}"), e["rep_a"],
                                               "--out", t / "c.json"], t / "rep.json"),
    "compare-different-data": lambda e, t: _c(["compare", e["rep_a"], e["rep_b"], "--out", t / "c.json"],
                                              e["rep_b"]),
    "compare-no-predictions": lambda e, t: _c(["compare", _report_copy(e, t, drop="predictions.npz"), e["rep_a"],
                                               "--out", t / "c.json"], t / "rep" / "predictions.npz"),
    "compare-corrupt-predictions": lambda e, t: _c(["compare", _report_copy(e, t, replace=("predictions.npz",
                                                                                            b"junk")),
                                                    e["rep_a"], "--out", t / "c.json"],
                                                   t / "rep" / "predictions.npz"),
    "compare-out-under-file": lambda e, t: _c(["compare", e["rep_a"], e["rep_a"], "--out",
                                               _file(t, "f", b"x") / "c.json"], t / "f"),
    # ---- reproduce
    "reproduce-data-missing": lambda e, t: _c(["reproduce", "crunet-table1", "--data", t / "nope.npz", "--quick",
                                               "--out", t / "rep"], t / "nope.npz"),
    "reproduce-data-garbage": lambda e, t: _c(["reproduce", "crunet-table1", "--data", _file(t, "g.npz", b"x"),
                                               "--quick", "--out", t / "rep"], t / "g.npz"),
    "reproduce-data-fractional-masks": lambda e, t: _c(["reproduce", "zhu-table2", "--data",
                                                        _npz(t, masks=np.full((4, 40, 40), 0.5)), "--quick",
                                                        "--out", t / "rep"], t / "bad.npz"),
    "reproduce-out-is-file": lambda e, t: _c(["reproduce", "crunet-table1", "--data", e["tiny"], "--quick",
                                              "--out", _file(t, "f", b"x")], t / "f"),
}

# click usage errors: exit 2, still one "Error:" and no traceback
USAGE_CASES = {
    "evaluate-tta-bogus": lambda e, t: _c(["evaluate", e["run"], "--tta", "bogus", "--out", t / "rep"], "bogus"),
    "export-tta-bogus": lambda e, t: _c(["export", e["run"], "--tta", "rot90", "--out", t / "exp"], "rot90"),
    "predict-tta-bogus": lambda e, t: _c(["predict", e["run"], e["png"], "--tta", "FLIPS", "--out", t / "p"],
                                         "FLIPS"),
    "fit-epochs-zero": lambda e, t: _c(["fit", e["cfg"], "--epochs", "0", "--out", t / "r"], "0"),
    "fit-seed-negative": lambda e, t: _c(["fit", e["cfg"], "--seed", "-1", "--out", t / "r"], "-1"),
    "fit-epochs-not-int": lambda e, t: _c(["fit", e["cfg"], "--epochs", "1.5", "--out", t / "r"], "1.5"),
    "prepare-unknown-source": lambda e, t: _c(["data", "prepare", "mias", "x", "--out", t / "o.npz"], "mias"),
    "reproduce-unknown-table": lambda e, t: _c(["reproduce", "table9", "--out", t / "rep"], "table9"),
}


# ---- round 3 (issue "Faults, round 3"): outputs, recorded state, box scoring
def _fifo(tmp, name):
    path = tmp / name
    os.mkfifo(path)
    return path


def _cv_with_post(tmp, value):
    folder = tmp / "cv"
    folder.mkdir()
    (folder / "cv.json").write_text(json.dumps({"kind": "kerasseg-cv", "status": "finished", "folds": 1,
                                                "postprocessing": {"fill_holes": value}}))
    return folder


def _orphan_model(tmp, e):
    folder = tmp / "orphan"
    folder.mkdir()
    shutil.copy(e["model"], folder / "model.keras")   # a finished run whose run.json is lost
    return folder


def _plain_npz(e, tmp):
    """tiny.npz without its context windows (box scoring needs them)."""
    from kerasseg.data.dataset import ROIDataset, load_npz, save_npz

    ds = load_npz(e["tiny"])
    return save_npz(ROIDataset(images=ds.images, masks=ds.masks, split=ds.split, ids=ds.ids), tmp / "plain.npz")


CASES.update({
    "split-out-is-a-fifo": lambda e, t: _c(["data", "split", e["tiny"], "--out", _fifo(t, "o.npz")],
                                           t / "o.npz", "not a regular file"),
    "info-grid-is-a-fifo": lambda e, t: _c(["data", "info", e["tiny"], "--grid", _fifo(t, "g.png")],
                                           t / "g.png", "not a regular file"),
    "evaluate-cv-post-not-bool": lambda e, t: _c(["evaluate", _cv_with_post(t, "no"), "--out", t / "rep"],
                                                 "fill_holes must be true or false"),
    "fit-over-model-without-run-json": lambda e, t: _c(["fit", e["cfg"], "--data", e["tiny"], "--out",
                                                        _orphan_model(t, e), "--epochs", "1"], "no run.json"),
    "evaluate-box-margin-without-windows": lambda e, t: _c(["evaluate", e["run"], "--data", _plain_npz(e, t),
                                                            "--box-margin", "0.2", "--out", t / "rep"],
                                                           t / "plain.npz", "data prepare"),
    "fit-box-jitter-without-windows": lambda e, t: _c(["fit", _tiny_cfg(t / "j.yaml", "crunet-unet-anybox"),
                                                       "--data", _plain_npz(e, t), "--out", t / "r"],
                                                      t / "plain.npz", "data prepare"),
    "evaluate-box-margin-too-large": lambda e, t: _c(["evaluate", e["run"], "--data", e["tiny"],
                                                      "--box-margin", "0.9", "--out", t / "rep"], "0.9"),
    "fit-box-jitter-bad-range": lambda e, t: _c(["fit", _tiny_cfg(t / "b.yaml", extra="data: {box_jitter: "
                                                                  "{margin: [0.4, 0.1]}}\n"), "--out", t / "r"],
                                                "box_jitter.margin"),
})


# --------------------------------------------------------------------------- the checks

def _snapshot(*roots):
    seen = set()
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                seen.add(os.path.join(dirpath, name))
    return seen


def _check(case, cases, env, tmp_path, monkeypatch, code):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # default output folders (predictions/, reproduce-*/) land here
    argv, named = cases[case](env, work)
    before = _snapshot(work, env["base"])
    res = CliRunner().invoke(cli, argv)
    after = _snapshot(work, env["base"])
    out = res.output
    assert res.exit_code == code, f"exit {res.exit_code}:\n{out}\n{res.exception!r}"
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in out, out
    errors = [ln for ln in out.splitlines() if ln.startswith("Error:")]
    assert errors, out
    for name in named:
        assert any(name in ln for ln in errors), f"{name!r} not named in:\n{out}"
    assert "File not found" not in out, out
    assert sorted(after - before) == [], f"left behind: {sorted(after - before)}\n{out}"
    assert sorted(before - after) == [], f"removed: {sorted(before - after)}\n{out}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_error_line_and_leaves_nothing(case, env, tmp_path, monkeypatch):
    _check(case, CASES, env, tmp_path, monkeypatch, code=1)


@pytest.mark.parametrize("case", sorted(USAGE_CASES))
def test_usage_errors_exit_2_without_traceback(case, env, tmp_path, monkeypatch):
    _check(case, USAGE_CASES, env, tmp_path, monkeypatch, code=2)


def test_corpus_is_large_enough():
    assert len(CASES) + len(USAGE_CASES) >= 60
