"""``import kerasseg`` before TensorFlow turns TensorFlow's oneDNN CPU kernels on (opt-out kept)."""

import os
import subprocess
import sys

import pytest

PROBE = (
    "import kerasseg, tensorflow\n"
    "from tensorflow.python.util import _pywrap_util_port as port\n"
    "print(port.IsMklEnabled(), kerasseg.onednn_enabled())\n"
)


@pytest.mark.parametrize("value,want", [(None, "True True"), ("0", "False False"), ("1", "True True")])
def test_onednn_default_and_opt_out(value, want):
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if value is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = value
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == want


def test_tensorflow_first_is_left_alone():
    """Imported after TensorFlow, kerasseg cannot change its kernels and does not pretend to."""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    probe = "import tensorflow\n" + PROBE
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    mkl, ours = out.stdout.strip().splitlines()[-1].split()
    assert mkl == ours  # whatever TensorFlow chose on this CPU, onednn_enabled() reports it
