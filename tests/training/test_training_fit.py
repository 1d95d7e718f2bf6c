"""fit / load_run / kerasseg fit on tiny data; each of the 13 configs learns; determinism;
resume after SIGKILL; multi-worker training."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from kerasseg.data.dataset import load_npz, save_npz
from kerasseg.data.phantom import make_phantom
from kerasseg.errors import KerassegError
from kerasseg.training.callbacks import read_history
from fixtures import REPO

ROWS = ["crunet-l067", "crunet-l0", "crunet-l1", "crunet-nor-l067", "crunet-unet",
        "zhu-fcn", "zhu-adv-fcn", "zhu-fcn-crf", "zhu-adv-fcn-crf", "zhu-multifcn",
        "zhu-adv-multifcn", "zhu-multifcn-crf", "zhu-adv-multifcn-crf"]


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory):
    ds = make_phantom(n_train=4, n_val=2, n_test=2, size=40, seed=3)
    return str(save_npz(ds, tmp_path_factory.mktemp("data") / "tiny.npz"))


def small_cfg(tmp_path, base="crunet-unet", model=None, data=None, **train):
    """A fast variant of a shipped config (small filters, batch 8)."""
    t = {"batch_size": 8, **train}
    m = {**({"filters": [4, 8]} if base.startswith("crunet") else {}), **(model or {})}
    text = (f"extends: {base}\nname: tiny\nmodel: {json.dumps(m)}\n"
            f"train: {json.dumps(t)}\n")
    if data:
        text += f"data: {json.dumps(data)}\n"
    p = tmp_path / "tiny.yaml"
    p.write_text(text)
    return str(p)


@pytest.fixture(scope="module")
def learn_batch():
    ds = make_phantom(n_train=4, n_val=0, n_test=0, size=40, seed=1)
    y = np.stack([1 - ds.masks, ds.masks], -1).astype("float32")
    return ds, y


@pytest.mark.slow
@pytest.mark.parametrize("name", ROWS)
def test_each_config_learns(name, learn_batch):
    """Three optimizer steps of each shipped config lower its training objective on 4 ROIs.

    The config is used as shipped (architecture, CRF iterations, loss mix, L2, optimizer and
    learning rate, FGM) except for speed: U-Net filters (4, 8), and dropout 0 so the objective
    (evaluated in training mode: batch-norm on batch statistics, CRF with its training
    iterations) is a deterministic function of the weights.
    """
    import keras

    from kerasseg.config import resolve_config
    from kerasseg.layers import ImagePreprocessor
    from kerasseg.layers.prior import prior_from_masks
    from kerasseg.training import build_training_model
    from kerasseg.training.losses import l2_penalty, per_example_loss, regularized_layers

    keras.utils.set_random_seed(0)
    ds, y = learn_batch
    cfg = resolve_config(name, dataset="inbreast")
    if cfg["model"]["arch"] in ("unet", "resunet"):
        cfg["model"].update(filters=[4, 8], dropout=0.0)
    elif cfg["model"].get("dropout"):
        cfg["model"]["dropout"] = 0.0
    d = cfg["data"]
    pre = ImagePreprocessor(40, enhancement=d["enhancement"], normalization=d["normalization"])
    pre.adapt(ds.images)
    x = pre.transform(ds.images)  # what fit trains the network on: (N, 40, 40, 1)
    model = build_training_model(cfg, 40, prior_from_masks(ds.masks))
    lam, l2 = cfg["loss"]["lambda"], cfg["loss"]["l2"]

    def objective():
        out = model.net(x, training=True)
        return float(np.mean(per_example_loss(out, y, lam)) + sum(float(v) for v in model.net.losses))

    before = objective()
    model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    # Zhu eq. (8) on the kernels only, at the weights the last step starts from
    penalty = sum(float(v) for v in model.net.losses)
    kernels = [layer.kernel for layer in regularized_layers(model.net)]
    assert penalty == pytest.approx(float(l2_penalty(kernels, l2, 1600)) if l2 else 0.0, rel=1e-5)
    hist = model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    after = objective()
    assert np.isfinite(hist.history["loss"]).all()
    assert after < before, (before, after)
    if cfg["train"]["adversarial"]:
        # the adversarial term is a real loss on perturbed inputs, counted in the total
        assert (np.array(hist.history["adv_loss"]) > 0).all()
    else:
        assert "adv_loss" not in hist.history
    # one step: the logged total is clean + adversarial + L2 of the weights the step started from
    h = {k: v[-1] for k, v in hist.history.items()}
    assert h["loss"] == pytest.approx(h["clean_loss"] + h.get("adv_loss", 0.0) + penalty,
                                      rel=1e-4)


def _np_clahe(raw, clip_limit=0.01):
    """Independent reference of the 'clahe' enhancement: scikit-image on the ROI scaled to [0, 1]
    (scaled in float64, given to skimage as float32 like the model's own float32 pixels)."""
    from skimage import exposure

    x = np.asarray(raw, np.float64)
    lo, hi = x.min(axis=(1, 2), keepdims=True), x.max(axis=(1, 2), keepdims=True)
    x01 = ((x - lo) / (hi - lo)).astype(np.float32)
    return np.stack([exposure.equalize_adapthist(i, clip_limit=clip_limit) for i in x01]).astype(np.float64)


def test_fit_cli_and_load_run(tmp_path, tiny_npz):
    from kerasseg.cli.main import cli
    from kerasseg.training import load_run

    out = tmp_path / "run"
    # position normalisation after CLAHE: the fitted statistics must travel inside model.keras
    cfg = small_cfg(tmp_path, data={"normalization": "position", "enhancement": "clahe"})
    res = CliRunner().invoke(cli, ["fit", cfg, "--data", tiny_npz, "--out", str(out),
                                   "--epochs", "2", "--seed", "1"])
    assert res.exit_code == 0, res.output
    assert "val Dice" in res.output and str(out) in res.output
    assert "Otsu threshold" in res.output and "mean training mask" in res.output
    for f in ("config.yaml", "model.keras", "history.csv", "run.json"):
        assert (out / f).is_file(), f
    assert not (out / "normalizer.json").exists()   # the preprocessing lives in model.keras
    assert not (out / "backup").exists()
    assert list((out / "tb").rglob("events.out.tfevents*"))
    hist = read_history(out / "history.csv")
    assert [r["epoch"] for r in hist] == [1, 2]
    assert {"loss", "clean_loss", "dice", "val_loss", "val_dice"} <= set(hist[0])
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "finished" and run["seed"] == 1
    from kerasseg.training.baselines import otsu_dice

    test = load_npz(tiny_npz).subset("test")
    assert run["otsu_test_dice"] == pytest.approx(otsu_dice(test.images, test.masks))
    assert f"Otsu threshold {run['otsu_test_dice']:.4f}" in res.output
    best = max(hist, key=lambda r: r["val_dice"])
    assert run["best_epoch"] == best["epoch"]
    # the saved model is the best-validation epoch's: its val Dice matches the history
    assert run["val_dice"] == pytest.approx(best["val_dice"], abs=1e-4)
    from kerasseg.models import get_network, get_preprocessor

    model, cfg_loaded = load_run(out)
    assert cfg_loaded["train"]["seed"] == 1 and cfg_loaded["model"]["filters"] == [4, 8]
    assert cfg_loaded["data"]["normalization"] == "position" and cfg_loaded["data"]["enhancement"] == "clahe"
    data = load_npz(tiny_npz)
    # the reloaded model's preprocessor: CLAHE, then the position mean/std maps of the enhanced
    # TRAIN ROIs (float64 statistics, std floored at 1e-6), independent of the val/test ROIs
    pre = get_preprocessor(model)
    assert pre is not None and pre.size == 40 and pre.mode == "position" and pre.enhancement == "clahe"
    enh_train = _np_clahe(data.subset("train").images)
    mean_ref = enh_train.mean(axis=0)
    std_ref = np.maximum(enh_train.std(axis=0), 1e-6)
    np.testing.assert_allclose(np.asarray(pre.normalize.mean), mean_ref, atol=1e-5)
    np.testing.assert_allclose(np.asarray(pre.normalize.std), std_ref, atol=1e-5)
    enh_all = _np_clahe(data.images)
    assert np.abs(enh_all.mean(axis=0) - mean_ref).max() > 1e-3   # all splits would give other maps
    # the saved model on RAW ROIs = its network on the reference-preprocessed ROIs
    raw = data.images[:3]
    z = (_np_clahe(raw) - mean_ref) / std_ref
    pred = model(raw[..., None], training=False)
    assert set(pred) == {"net"} and pred["net"].shape == (3, 40, 40, 2)
    ref = get_network(model)(z.astype(np.float32)[..., None], training=False)["net"]
    np.testing.assert_allclose(np.asarray(pred["net"]), np.asarray(ref), atol=1e-4)
    # same command on a finished run: a clear error, not an overwrite
    res = CliRunner().invoke(cli, ["fit", cfg, "--data", tiny_npz, "--out", str(out)])
    assert res.exit_code != 0 and "Error:" in res.output and "finished run" in res.output


def test_cli_errors(tmp_path):
    from kerasseg.cli.main import cli
    from kerasseg.training import load_run

    res = CliRunner().invoke(cli, ["fit", "crunet-l67", "--out", str(tmp_path / "r")])
    assert res.exit_code != 0 and "Error:" in res.output and "crunet-l067" in res.output
    res = CliRunner().invoke(cli, ["fit", "--data", str(tmp_path / "missing.npz")])
    assert res.exit_code != 0 and "Error:" in res.output
    with pytest.raises(KerassegError, match="no model.keras"):
        load_run(tmp_path)
    with pytest.raises(KerassegError, match="not found"):
        load_run(tmp_path / "nope")


@pytest.mark.slow
def test_determinism_same_seed_same_weights(tmp_path, tiny_npz):
    import keras

    from kerasseg.training import fit

    cfg = small_cfg(tmp_path, base="zhu-adv-fcn-crf", epochs=1)
    weights = []
    for run in ("a", "b"):
        fit(cfg, tiny_npz, tmp_path / run, seed=5, verbose=0)
        import kerasseg.models  # noqa: F401
        weights.append(keras.saving.load_model(tmp_path / run / "model.keras", compile=False).get_weights())
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)
    fit(cfg, tiny_npz, tmp_path / "c", seed=6, verbose=0)
    other = keras.saving.load_model(tmp_path / "c" / "model.keras", compile=False).get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(weights[0], other))


FIT_SNIPPET = ("import sys; from kerasseg.training import fit; "
               "r = fit(sys.argv[1], sys.argv[2], sys.argv[3], epochs=int(sys.argv[4]), verbose=2); "
               "print(r.summary())")


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    return env


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path, tiny_npz):
    # tiny epochs take a fraction of a second: plan many, so the kill (as soon as two are in the
    # history) always lands mid-run, never after the last epoch
    n_epochs = 20
    cfg = small_cfg(tmp_path, patience=0)
    out = tmp_path / "run"
    args = [sys.executable, "-c", FIT_SNIPPET, cfg, tiny_npz, str(out), str(n_epochs)]
    proc = subprocess.Popen(args, env=_env(), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if len(read_history(out / "history.csv")) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "training ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(read_history(out / "history.csv"))
    assert 2 <= done < n_epochs and (out / "backup").is_dir()
    res = subprocess.run(args, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    epochs = [r["epoch"] for r in read_history(out / "history.csv")]
    assert epochs == list(range(1, n_epochs + 1))
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "finished" and run["resumed"] is True and run["epochs_run"] == n_epochs
    assert not (out / "backup").exists()
    # the resumed run started after the last completed epoch, not from scratch
    assert f"Epoch {done + 1}/{n_epochs}" in res.stdout and f"Epoch 1/{n_epochs}" not in res.stdout


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_multiworker_two_processes_match_single_process(tmp_path, tiny_npz):
    """Two worker processes (TF_CONFIG on 127.0.0.1) train the same model as one process.

    Without dropout the only difference is how the global batch is split, so the losses, Dice
    and final weights of a 2-epoch run agree with a single-device run of the same command.
    """
    import keras

    import kerasseg.models  # noqa: F401
    from kerasseg.training import fit

    cfg = small_cfg(tmp_path, model={"dropout": 0.0}, patience=0)
    ports = [_free_port(), _free_port()]
    workers = [f"127.0.0.1:{p}" for p in ports]
    out = tmp_path / "run"
    procs = []
    for i in range(2):
        env = _env()
        env["TF_CONFIG"] = json.dumps({"cluster": {"worker": workers},
                                       "task": {"type": "worker", "index": i}})
        procs.append(subprocess.Popen(
            [sys.executable, "-c", FIT_SNIPPET, cfg, tiny_npz, str(out), "2"], env=env, cwd=REPO,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    for p in procs:
        try:
            outputs.append(p.communicate(timeout=400)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("multi-worker training hung")
    assert all(p.returncode == 0 for p in procs), outputs[0][-2000:] + outputs[1][-2000:]
    run = json.loads((out / "run.json").read_text())
    assert run["strategy"] == "MultiWorkerMirroredStrategy" and run["replicas"] == 2
    assert run["status"] == "finished"
    multi = read_history(out / "history.csv")
    assert [r["epoch"] for r in multi] == [1, 2]
    assert (out / ".worker-1" / "history.csv").is_file()  # worker 1 wrote aside, not over

    fit(cfg, tiny_npz, tmp_path / "single", epochs=2, verbose=0)
    single = read_history(tmp_path / "single" / "history.csv")
    for a, b in zip(multi, single):
        for key in ("loss", "dice", "val_loss", "val_dice"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), (key, a, b)
    w_multi = keras.saving.load_model(out / "model.keras", compile=False).get_weights()
    w_single = keras.saving.load_model(tmp_path / "single" / "model.keras",
                                       compile=False).get_weights()
    for a, b in zip(w_multi, w_single):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_jit_compile_run(tmp_path, tiny_npz):
    """train.jit_compile: the steps run under XLA (op determinism off) and train normally."""
    cfg = small_cfg(tmp_path, jit_compile=True, patience=0)
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-c", FIT_SNIPPET, cfg, tiny_npz, str(out), "2"],
                         env=_env(), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    run = json.loads((out / "run.json").read_text())
    assert run["jit_compile"] is True and run["op_determinism"] is False
    hist = read_history(out / "history.csv")
    assert [r["epoch"] for r in hist] == [1, 2]
    assert all(np.isfinite(r["loss"]) and np.isfinite(r["val_dice"]) for r in hist)
    assert hist[1]["loss"] < hist[0]["loss"]


def test_two_devices_with_an_odd_number_of_val_rois(tmp_path):
    """17 validation ROIs on 2 replicas (batches 8, 8, 1: one replica gets nothing in the last):
    no crash, and the validation Dice of the epoch equals the single-device Dice of the saved
    model on the same ROIs (nothing padded is counted)."""
    from kerasseg.training import fit

    data = save_npz(make_phantom(n_train=4, n_val=17, n_test=0, size=40, seed=4), tmp_path / "d.npz")
    cfg = small_cfg(tmp_path, model={"dropout": 0.0}, patience=0)
    res = fit(cfg, str(data), tmp_path / "run", epochs=1, devices=2, verbose=0)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["replicas"] == 2 and res.status == "finished"
    hist = read_history(tmp_path / "run" / "history.csv")
    # one pixel flipping at the threshold (other kernel batch sizes per replica) moves the mean
    # by ~2e-4; a mean of per-replica means, or counting padding, would be off by > 2e-3 here
    assert hist[0]["val_dice"] == pytest.approx(res.val_dice, abs=1e-3)


def test_more_replicas_than_val_rois_is_refused_before_anything_is_written(tmp_path):
    from kerasseg.training import fit

    data = save_npz(make_phantom(n_train=4, n_val=1, n_test=0, size=40, seed=4), tmp_path / "d.npz")
    with pytest.raises(KerassegError, match="2 replicas but only 1 validation ROIs") as exc:
        fit(small_cfg(tmp_path), str(data), tmp_path / "run", epochs=1, devices=2, verbose=0)
    assert str(data) in str(exc.value)
    assert not (tmp_path / "run").exists()


def test_a_failed_fresh_fit_leaves_no_run_folder(tmp_path, monkeypatch):
    """The run folder is staged: a failure before training starts (here building the model)
    leaves nothing, not a folder holding only config.yaml."""
    from kerasseg.training import fit

    fit_module = sys.modules["kerasseg.training.fit"]

    data = save_npz(make_phantom(n_train=4, n_val=2, n_test=0, size=40, seed=4), tmp_path / "d.npz")

    def broken(*args, **kwargs):
        raise KerassegError("model cannot be built")

    monkeypatch.setattr(fit_module, "build_training_model", broken)
    with pytest.raises(KerassegError, match="cannot be built"):
        fit(small_cfg(tmp_path), str(data), tmp_path / "run", epochs=1, verbose=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz", "tiny.yaml"]
