import os
import subprocess
import sys


def test_data_commands_do_not_start_tensorflow(tmp_path):
    """`kerasseg data ...` reads and writes numpy files only: TensorFlow is never imported."""
    code = (
        "import sys\n"
        "from kerasseg.cli.main import main\n"
        "try:\n"
        f"    main(['data', 'prepare', 'phantom', '-', '--out', {str(tmp_path / 'p.npz')!r}, "
        "'--n-train', '4', '--n-val', '2', '--n-test', '2'])\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "print('TF' if 'tensorflow' in sys.modules else 'NO-TF')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "NO-TF"
    assert (tmp_path / "p.npz").is_file()


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
