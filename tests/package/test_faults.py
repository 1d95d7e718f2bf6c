"""Fault injection: `kerasseg fit` SIGKILLed at each named fault point (KERASSEG_FAULT), or
hitting a full disk, then rerun: the run completes and equals an uninterrupted run exactly."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from kerasseg.data.dataset import save_npz
from kerasseg.data.phantom import make_phantom
from kerasseg.training.checkpoint import read_latest
from fixtures import REPO

EPOCHS = 3
pytestmark = pytest.mark.slow


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", **extra)
    env.pop("TF_CONFIG", None)
    env.pop("KERASSEG_FAULT", None)
    env.update(extra)
    return env


def _fit(setup, out, fault=None, fsize=None):
    """`kerasseg fit` in a fresh process; ``fsize`` caps the size of any file it writes (a full
    disk: SIGXFSZ ignored so the write fails with EFBIG)."""
    data, cfg = setup
    argv = ["kerasseg", "fit", cfg, "--data", data, "--out", str(out), "--epochs", str(EPOCHS)]
    code = "import sys\n"
    if fsize:
        code += ("import resource, signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
                 f"resource.setrlimit(resource.RLIMIT_FSIZE, ({fsize}, {fsize}))\n")
    code += f"sys.argv = {argv!r}\nfrom kerasseg.cli.main import main\nmain()\n"
    extra = {"KERASSEG_FAULT": fault} if fault else {}
    return subprocess.run([sys.executable, "-c", code], env=_env(**extra), cwd=REPO,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("faults")
    data = save_npz(make_phantom(n_train=4, n_val=2, n_test=2, size=40, seed=3), d / "tiny.npz")
    cfg = d / "tiny.yaml"   # dropout on: the resumed run must continue the dropout RNG too
    cfg.write_text("extends: crunet-unet\nname: tiny\nmodel: {filters: [4, 8], dropout: 0.5}\n"
                   "train: {batch_size: 8, patience: 0}\n")
    return str(data), str(cfg)


@pytest.fixture(scope="module")
def reference(setup, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    res = _fit(setup, out)
    assert res.returncode == 0, res.stderr[-2000:]
    return out


def _weights(run):
    import keras

    import kerasseg.models  # noqa: F401

    return keras.saving.load_model(run / "model.keras", compile=False).get_weights()


def _assert_same_run(run, ref):
    assert (run / "history.csv").read_text() == (ref / "history.csv").read_text()
    for a, b in zip(_weights(run), _weights(ref), strict=True):
        assert np.array_equal(a, b)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["epochs_run"] == EPOCHS
    assert not (run / "backup").exists()
    assert not [p for p in run.iterdir() if p.name.startswith(".")]   # no temp files left


@pytest.mark.parametrize("fault", ["checkpoint.after_write:2", "checkpoint.before_rename:2",
                                   "checkpoint.after_rename:2", "fit.after_last_epoch"])
def test_killed_at_a_fault_point_then_rerun_equals_an_uninterrupted_run(fault, setup, reference,
                                                                        tmp_path):
    out = tmp_path / "run"
    killed = _fit(setup, out, fault=fault)
    assert killed.returncode == -9, killed.stderr[-2000:]
    unit = read_latest(out / "backup")
    if fault == "fit.after_last_epoch":
        assert unit.final and unit.epoch == EPOCHS
        assert json.loads((out / "run.json").read_text())["status"] == "running"
    else:
        expected = 2 if fault == "checkpoint.after_rename:2" else 1   # the new unit only once renamed
        assert unit.epoch == expected and not unit.final
    rerun = _fit(setup, out)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    if fault == "fit.after_last_epoch":   # finished from its artifacts: no epoch retrained
        assert "Epoch" not in rerun.stdout + rerun.stderr
    else:
        assert f"Epoch {unit.epoch + 1}/{EPOCHS}" in rerun.stdout and "Epoch 1/" not in rerun.stdout
    assert json.loads((out / "run.json").read_text())["resumed"] is True
    _assert_same_run(out, reference)


def test_disk_full_is_one_line_keeps_the_checkpoint_and_resumes(setup, reference, tmp_path):
    out = tmp_path / "run"
    assert _fit(setup, out, fault="checkpoint.before_rename:2").returncode == -9   # unit 1 on disk
    before = read_latest(out / "backup")
    assert before.epoch == 1
    full = _fit(setup, out, fsize=8000)       # every file over 8 kB fails: model.keras, state.npz
    assert full.returncode == 1, full.stderr[-2000:]
    err = (full.stdout + full.stderr).strip().splitlines()
    assert "Traceback" not in full.stdout + full.stderr
    assert err[-1].startswith("Error: ") and "cannot write" in err[-1] and str(out) in err[-1]
    assert "(File too large)" in err[-1] and "resume" in err[-1]
    after = read_latest(out / "backup")        # the previous unit is intact
    assert after.generation == before.generation and after.epoch == 1
    for k in before.arrays:
        assert np.array_equal(after.arrays[k], before.arrays[k])
    assert not [p for p in (out / "backup").iterdir() if p.name.startswith(".")]
    rerun = _fit(setup, out)                   # space freed: the same command resumes
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    _assert_same_run(out, reference)
