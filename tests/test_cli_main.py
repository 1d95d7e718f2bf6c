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
