import os
import subprocess
import sys

import numpy as np


def _run_cli(argv, cwd):
    """Run ``kerasseg <argv>`` in a fresh interpreter; the last stdout line says whether
    TensorFlow was imported."""
    code = (
        "import sys\n"
        "from kerasseg.cli.main import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "print('TF' if 'tensorflow' in sys.modules else 'NO-TF')\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_data_commands_do_not_start_tensorflow(tmp_path):
    """`kerasseg data info` reads numpy files only: TensorFlow is never imported. `data prepare`
    resizes ROIs with the TensorFlow op the model shares, so it imports TensorFlow, quietly (no
    C++ start-up chatter on stderr), and writes the ROIs the library's own generator makes."""
    from kerasseg.data.dataset import ROIDataset, load_npz, save_npz
    from kerasseg.data.phantom import make_phantom

    rng = np.random.default_rng(0)
    masks = (rng.random((6, 16, 16)) > 0.5).astype(np.uint8)
    ds = ROIDataset(images=rng.normal(1000, 50, (6, 16, 16)).astype(np.float32), masks=masks,
                    split=np.array(["train"] * 3 + ["val"] + ["test"] * 2),
                    ids=np.array([f"i{k}-mass1" for k in range(6)]), source="unit")
    npz = save_npz(ds, tmp_path / "d.npz")
    res = _run_cli(["data", "info", str(npz), "--grid", str(tmp_path / "g.png")], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "NO-TF"
    assert "train 3  val 1  test 2" in res.stdout and ds.data_hash() in res.stdout
    assert (tmp_path / "g.png").is_file()
    res = _run_cli(["data", "info", "--help"], tmp_path)
    assert res.returncode == 0 and res.stdout.strip().splitlines()[-1] == "NO-TF"

    out = tmp_path / "p.npz"
    res = _run_cli(["data", "prepare", "phantom", "-", "--out", str(out),
                    "--n-train", "4", "--n-val", "2", "--n-test", "2"], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "TF"
    assert "cuInit" not in res.stderr and "cudart_stub" not in res.stderr and "absl" not in res.stderr
    got = load_npz(out)
    assert got.counts() == {"train": 4, "val": 2, "test": 2} and got.size == 40
    assert got.data_hash() == make_phantom(n_train=4, n_val=2, n_test=2, size=40, seed=0).data_hash()


def test_model_commands_start_tensorflow_quietly():
    """Other commands import TensorFlow up front, with its C++ CUDA-probe lines kept off stderr."""
    code = (
        "import sys\n"
        "from kerasseg.cli.main import main\n"
        "try:\n"
        "    main(['evaluate', '/nonexistent/run'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('TF' if 'tensorflow' in sys.modules else 'NO-TF')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.strip().splitlines()[-1] == "TF"
    assert "Error:" in res.stderr and "/nonexistent/run" in res.stderr
    assert "cuInit" not in res.stderr and "cudart_stub" not in res.stderr


def test_cli_keeps_tensorflow_kernel_chatter_off_stderr():
    """With the CLI's log level, a kernel fallback notice (oneDNN int32 on CPUs without AVX-512,
    printed at ERROR level by TensorFlow) does not reach the user's terminal; a set level is kept."""
    code = (
        "import os\n"
        "import kerasseg.cli.main\n"
        "import tensorflow as tf\n"
        "tf.function(lambda a: tf.transpose(tf.cast(a, tf.int32)))(tf.zeros((4, 40))).numpy()\n"
        "print(os.environ['TF_CPP_MIN_LOG_LEVEL'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "3"
    assert "oneDNN supports" not in res.stderr and "E0000" not in res.stderr
    env["TF_CPP_MIN_LOG_LEVEL"] = "1"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert res.stdout.strip().splitlines()[-1] == "1"
