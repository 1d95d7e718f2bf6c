"""Faults found by the 246-case audit (issue "Faults, round 3"): each test failed before its fix.

Signals end training with 130/143 and a resumable state; one command per run / CV folder (an
advisory lock); temp files with random O_EXCL names; outputs only to regular files or new paths;
cv.json values validated before use; a run whose run.json is lost is not retrained over; a CV rerun
with another epoch budget is refused; recorded data paths are absolute; normalisation of any
finite input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kerasseg.data.dataset import save_npz
from kerasseg.data.phantom import make_phantom
from kerasseg.errors import KerassegError
from kerasseg.fileio import atomic_write_text, folder_lock, output_file, save_model
from fixtures import REPO



def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    return env


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory):
    ds = make_phantom(n_train=4, n_val=2, n_test=2, size=40, seed=3)
    return str(save_npz(ds, tmp_path_factory.mktemp("data") / "tiny.npz"))


def tiny_cfg(folder):
    p = Path(folder) / "tiny.yaml"
    p.write_text("extends: crunet-unet\nname: tiny\nmodel: {filters: [4, 8]}\n"
                 "train: {batch_size: 8, patience: 0}\n")
    return str(p)


# --------------------------------------------------------------------------- output paths
@pytest.mark.skipif(not Path("/dev/null").exists(), reason="needs /dev/null")
def test_outputs_never_replace_a_device_file(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for target in (Path("/dev/null"), fifo):
        with pytest.raises(KerassegError, match="not a regular file"):
            atomic_write_text(target, "x")
        with pytest.raises(KerassegError, match="not a regular file"):
            output_file(target)
    assert Path("/dev/null").is_char_device() and fifo.is_fifo()


def test_data_split_out_to_a_device_is_refused_and_the_device_kept(tmp_path, tiny_npz):
    from kerasseg.cli.main import cli
    from click.testing import CliRunner

    fifo = tmp_path / "out.npz"
    os.mkfifo(fifo)
    res = CliRunner().invoke(cli, ["data", "split", tiny_npz, "--out", str(fifo)])
    assert res.exit_code == 1 and "not a regular file" in res.output and fifo.is_fifo()


def test_model_temp_name_is_random_and_a_planted_symlink_is_not_followed(tmp_path):
    import keras

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    for name in (".model.tmp.keras", ".model.keras.tmp.keras"):   # the old fixed names
        (run / name).symlink_to(victim)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    save_model(model, run / "model.keras")
    assert victim.read_text() == "precious"
    assert keras.saving.load_model(run / "model.keras").count_params() == model.count_params()
    leftovers = [p.name for p in run.iterdir() if p.name not in (".model.tmp.keras", ".model.keras.tmp.keras")]
    assert leftovers == ["model.keras"]


# --------------------------------------------------------------------------- locks
LOCK_HOLDER = r"""
import sys, time
from kerasseg.fileio import folder_lock
with folder_lock(sys.argv[1], "run folder"):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_folder_lock_names_the_owner_and_is_released_when_the_owner_dies(tmp_path):
    target = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(target)], stdout=subprocess.PIPE,
                            text=True, env=_env(), cwd=REPO)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(KerassegError, match=rf"in use by pid {proc.pid}\b"):
            with folder_lock(target, "run folder"):
                pass
    finally:
        proc.kill()
        proc.wait()
    # the kernel released the dead owner's lock: no stale lock to clean by hand
    with folder_lock(target, "run folder"):
        assert (tmp_path / ".run.lock").read_text() == str(os.getpid())
    assert not (tmp_path / ".run.lock").exists()


def test_two_concurrent_fits_of_one_run_folder_one_refused(tmp_path, tiny_npz):
    from kerasseg.training.fit import fit

    out = tmp_path / "run"
    with folder_lock(out, "run folder"):     # as a first `kerasseg fit` holding the folder
        with pytest.raises(KerassegError, match="in use by pid"):
            fit(tiny_cfg(tmp_path), data=tiny_npz, out_dir=str(out), epochs=1, verbose=0)


# --------------------------------------------------------------------------- signals
FIT = r"""
import sys
from kerasseg.cli.main import main
main(["fit", sys.argv[1], "--data", sys.argv[2], "--out", sys.argv[3], "--epochs", sys.argv[4]])
"""


def _start_and_signal(args, history, sig):
    from kerasseg.training.callbacks import read_history

    proc = subprocess.Popen(args, env=_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if len(read_history(history)) >= 1:
            break
        time.sleep(0.1)
    assert proc.poll() is None, "training ended before the signal"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_fit_exits_128_plus_signum_and_resumes(tmp_path, tiny_npz, sig, code):
    out = tmp_path / "run"
    args = [sys.executable, "-c", FIT, tiny_cfg(tmp_path), tiny_npz, str(out), "400"]
    rc, err = _start_and_signal(args, out / "history.csv", sig)
    assert rc == code, err[-1500:]
    assert "Interrupted:" in err and "resume" in err and "Traceback" not in err
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "interrupted" and run["signal"] == signal.Signals(sig).name
    assert (out / "backup").is_dir()
    # the rerun resumes instead of refusing or starting over
    from kerasseg.training.fit import _open_run, _resolve

    ds, cfg, _, _ = _resolve(tiny_cfg(tmp_path), tiny_npz, 400, None, None)
    unit, resuming = _open_run(out, cfg, ds)
    assert resuming and unit is not None and unit.epoch >= 1


@pytest.mark.slow
def test_sigint_during_cv_leaves_it_resumable_not_finished(tmp_path, tiny_npz):
    out = tmp_path / "cv"
    code = r"""
import sys
from kerasseg.cli.main import main
main(["fit", sys.argv[1], "--data", sys.argv[2], "--out", sys.argv[3], "--folds", "2", "--epochs", "400"])
"""
    args = [sys.executable, "-c", code, tiny_cfg(tmp_path), tiny_npz, str(out)]
    rc, err = _start_and_signal(args, out / "fold-1" / "history.csv", signal.SIGINT)
    assert rc == 130, err[-1500:]
    cv = json.loads((out / "cv.json").read_text())
    assert cv["status"] == "interrupted"
    from kerasseg.training.run import load_ensemble_source

    with pytest.raises(KerassegError, match="not finished"):
        load_ensemble_source(out)


# --------------------------------------------------------------------------- recorded state
def test_cv_rerun_with_another_epoch_budget_is_refused(tmp_path):
    from kerasseg.training.folds import _check_resume

    out = tmp_path / "cv"
    out.mkdir()
    (out / "cv.json").write_text(json.dumps({"status": "running", "epochs": 3, "folds": 2}))
    with pytest.raises(KerassegError, match="another epochs"):
        _check_resume(out, {"folds": 2, "epochs": 5})
    _check_resume(out, {"folds": 2, "epochs": 3})


@pytest.mark.parametrize("value", ["no", "false", 0, 1, None, [True]])
def test_cv_postprocessing_values_are_validated_not_truthy(tmp_path, value):
    from kerasseg.training.run import load_ensemble_source

    out = tmp_path / "cv"
    out.mkdir()
    (out / "cv.json").write_text(json.dumps({"kind": "kerasseg-cv", "status": "finished", "folds": 1,
                                             "postprocessing": {"fill_holes": value}}))
    with pytest.raises(KerassegError, match="fill_holes must be true or false"):
        load_ensemble_source(out)


def test_a_run_without_run_json_is_not_retrained_over(tmp_path, tiny_npz):
    from kerasseg.training.fit import fit

    out = tmp_path / "run"
    out.mkdir()
    (out / "model.keras").write_bytes(b"a trained model")
    with pytest.raises(KerassegError, match="no run.json"):
        fit(tiny_cfg(tmp_path), data=tiny_npz, out_dir=str(out), epochs=1, verbose=0)
    assert (out / "model.keras").read_bytes() == b"a trained model"


@pytest.mark.slow
def test_run_json_records_the_absolute_data_path(tmp_path, tiny_npz, monkeypatch):
    from kerasseg.training.fit import fit

    monkeypatch.chdir(Path(tiny_npz).parent)
    fit(tiny_cfg(tmp_path), data=Path(tiny_npz).name, out_dir=str(tmp_path / "run"), epochs=1, verbose=0)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["data"] == str(Path(tiny_npz).resolve())
    # evaluate without --data, from another folder holding another file of that name: the
    # recorded file is scored, and a changed file is refused by its recorded hash
    from kerasseg.evaluation.report import evaluate_run

    other = tmp_path / "elsewhere"
    other.mkdir()
    save_npz(make_phantom(n_train=4, n_val=2, n_test=3, size=40, seed=9), other / Path(tiny_npz).name)
    monkeypatch.chdir(other)
    m = evaluate_run(tmp_path / "run", out_dir=tmp_path / "rep", verbose=False, figures=False)
    assert m["data_hash"] == run["data_hash"] and m["n"] == 2
    changed = tmp_path / "changed"
    changed.mkdir()
    copy = changed / "d.npz"
    save_npz(make_phantom(n_train=4, n_val=2, n_test=2, size=40, seed=3), copy)
    info = {**run, "data": str(copy)}
    (tmp_path / "run" / "run.json").write_text(json.dumps(info))
    save_npz(make_phantom(n_train=4, n_val=2, n_test=2, size=40, seed=4), copy)   # replaced since
    with pytest.raises(KerassegError, match="has changed since"):
        evaluate_run(tmp_path / "run", out_dir=tmp_path / "rep2", verbose=False, figures=False)


# --------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize("scale", [1e-30, 1e-20, 1.0, 1e17, 1e30])
def test_image_normalisation_is_finite_and_scale_free_for_any_finite_input(rng, scale):
    from kerasseg.layers.preprocessing import Normalize

    x = rng.gamma(2.0, 300.0, (3, 16, 16)).astype(np.float64) + 1000.0
    ref = (x - x.mean(axis=(1, 2), keepdims=True)) / x.std(axis=(1, 2), keepdims=True)   # float64
    got = np.asarray(Normalize("image")((x * scale).astype(np.float32)[..., None]))[..., 0]
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, ref, atol=2e-4)


# --------------------------------------------------------------------------- messages
def test_cli_prints_kerasseg_warnings_as_one_line(tmp_path):
    code = ("import warnings, kerasseg.cli.main\n"
            "from kerasseg.errors import warn\n"
            "warn('something odd', 'data.npz')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), cwd=REPO)
    assert res.stderr.strip().splitlines()[-1] == "Warning: data.npz: something odd"
    assert "warnings.warn" not in res.stderr and "KerassegWarning" not in res.stderr


def test_folds_and_resplit_messages_name_the_real_problem():
    from kerasseg.data.splits import group_kfold, resplit

    with pytest.raises(KerassegError, match="no ROIs") as exc:
        group_kfold([], 2)
    assert "0 among 0" not in str(exc.value)
    with pytest.raises(KerassegError, match="no train ROIs"):
        resplit(["train"] * 2, ["a", "b"], test_fraction=0.9, val_fraction=0.0)


# --------------------------------------------------------------------------- exports
@pytest.fixture(scope="module")
def small_segmenter():
    from kerasseg.layers import ImagePreprocessor
    from kerasseg.models import build_model, build_segmenter

    return build_segmenter(build_model("unet", filters=(4, 8)), ImagePreprocessor(40, name="preprocessor"))


def test_concurrent_export_to_one_base_is_refused_not_replaced(tmp_path, small_segmenter):
    from kerasseg.export.savedmodel import export_model

    base = tmp_path / "serving" / "massseg"
    base.parent.mkdir()
    with folder_lock(base, "export folder"):      # as another `kerasseg export` to the same base
        with pytest.raises(KerassegError, match=rf"in use by pid {os.getpid()}"):
            export_model(small_segmenter, base)
    assert not base.exists() or not any(base.iterdir())


@pytest.mark.parametrize("make_error", [
    lambda: OSError(28, "No space left on device"),
    lambda: __import__("tensorflow").errors.ResourceExhaustedError(
        None, None, "/x/.1.tmp-abc/model/variables/variables.data-00000-of-00001; No space left on device"),
])
def test_export_on_a_full_disk_is_one_line_naming_the_target(tmp_path, small_segmenter, monkeypatch, make_error):
    from kerasseg.export import savedmodel

    def full(*_a, **_k):
        raise make_error()

    monkeypatch.setattr(savedmodel, "_write_saved_model", full)
    base = tmp_path / "serving"
    with pytest.raises(KerassegError) as exc:
        savedmodel.export_model(small_segmenter, base)
    msg = str(exc.value)
    assert "No space left on device" in msg and str(base / "1") in msg
    assert ".tmp-" not in msg and "\n" not in msg
    assert sorted(p.name for p in base.iterdir()) == []      # no version, no temporary folder


def test_a_report_folder_in_use_is_refused(tmp_path, rng):
    from kerasseg.evaluation.report import evaluate_arrays

    masks = (rng.random((3, 8, 8)) > 0.5).astype(np.uint8)
    out = tmp_path / "rep"
    with folder_lock(out, "report folder"):
        with pytest.raises(KerassegError, match="in use by pid"):
            evaluate_arrays(masks.astype(np.float32), masks, ["a", "b", "c"], out, figures=False, verbose=False)
    evaluate_arrays(masks.astype(np.float32), masks, ["a", "b", "c"], out, figures=False, verbose=False)
    assert (out / "metrics.json").is_file() and not (tmp_path / ".rep.lock").exists()


def test_cv_devices_are_checked_before_cv_json_is_written(tmp_path, tiny_npz):
    from kerasseg.training.folds import fit_folds

    out = tmp_path / "cv"
    with pytest.raises(KerassegError, match="smallest held-out fold") as exc:
        fit_folds(tiny_cfg(tmp_path), data=tiny_npz, out_dir=str(out), folds=5, devices=2, verbose=0)
    assert str(exc.value).startswith(tiny_npz) and not out.exists()
