"""Fault injection in export: a SIGKILL before or after the version swap never leaves the served
version missing or half-written, and the next export succeeds."""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest


def _export(model, out, fault=None, force=True):
    env = dict(os.environ)
    env.pop("KERASSEG_FAULT", None)
    if fault:
        env["KERASSEG_FAULT"] = fault
    cmd = [sys.executable, "-m", "kerasseg", "export", str(model), "--out", str(out), "--version", "1"]
    return subprocess.run(cmd + (["--force"] if force else []), env=env, capture_output=True, text=True,
                          timeout=600)


def _load_probability(version_dir, x):
    import tensorflow as tf

    fn = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    return fn(image=tf.constant(x))["probability"].numpy()


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    from kerasseg.models import build_model, build_segmenter

    tmp = tmp_path_factory.mktemp("exp")
    paths = []
    for seed in (1, 2):
        import keras

        keras.utils.set_random_seed(seed)
        seg = build_segmenter(build_model("unet", filters=(4, 8)))
        p = tmp / f"m{seed}.keras"
        seg.save(p)
        paths.append(p)
    return paths


@pytest.mark.slow
@pytest.mark.parametrize("point", ["export.before_swap", "export.after_swap"])
def test_kill_around_the_swap_keeps_a_complete_version(two_models, tmp_path, point):
    old, new = two_models
    out = tmp_path / "serving" / "seg"
    r = _export(old, out, force=False)
    assert r.returncode == 0, r.stderr
    x = np.random.default_rng(0).random((2, 40, 40)).astype("float32")
    p_old = _load_probability(out / "1", x)

    r = _export(new, out, fault=point)
    assert r.returncode == -signal.SIGKILL
    # a complete version 1 is there either way: the old one (killed before the swap) or the new one
    p = _load_probability(out / "1", x)
    if point == "export.before_swap":
        np.testing.assert_array_equal(p, p_old)
    else:
        assert not np.array_equal(p, p_old)
    hidden = [q.name for q in out.iterdir() if q.name.startswith(".")]
    assert hidden and all(n.startswith(".1.tmp-") for n in hidden)   # ignored by TF Serving
    assert [q.name for q in out.iterdir() if not q.name.startswith(".")] == ["1"]

    r = _export(new, out)                                              # the rerun completes
    assert r.returncode == 0, r.stderr
    assert not np.array_equal(_load_probability(out / "1", x), p_old)
