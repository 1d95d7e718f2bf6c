"""The one output-path check (issue "Faults and bad input", item 2): every command refuses an --out
that is a file or lies under a file with one line naming it, no traceback, nothing left behind."""

import numpy as np
import pytest
from click.testing import CliRunner


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from kerasseg.data.dataset import save_npz
    from kerasseg.data.phantom import make_phantom
    from fixtures.export import tiny_segmenter

    d = tmp_path_factory.mktemp("inputs")
    tiny_segmenter(40, crf=False).save(d / "m.keras")
    save_npz(make_phantom(n_train=2, n_val=2, n_test=2, seed=1), d / "rois.npz")
    (d / "afile").write_text("x")
    return d


def _commands(d, out):
    return {
        "fit": ["fit", "crunet-unet", "--data", str(d / "rois.npz"), "--epochs", "1", "--out", out],
        "evaluate": ["evaluate", str(d / "m.keras"), "--data", str(d / "rois.npz"), "--out", out],
        "export": ["export", str(d / "m.keras"), "--out", out],
        "predict": ["predict", str(d / "m.keras"), str(d / "rois.npz"), "--out", out],
        "data prepare": ["data", "prepare", "phantom", "-", "--out", out],
    }


@pytest.mark.parametrize("command", ["fit", "evaluate", "export", "predict", "data prepare"])
@pytest.mark.parametrize("where", ["is a file", "under a file"])
def test_bad_out_is_one_line_naming_it(command, where, inputs):
    from kerasseg.cli.main import cli

    afile = inputs / "afile"
    out = str(afile if where == "is a file" else afile / "sub" / "x")
    if command == "data prepare" and where == "is a file":
        out = str(inputs)  # a dataset file path that is a folder
    before = sorted(p.name for p in inputs.iterdir())
    res = CliRunner().invoke(cli, _commands(inputs, out)[command])
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output and res.exception is None or isinstance(res.exception, SystemExit)
    lines = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and out in lines[0], res.output
    assert sorted(p.name for p in inputs.iterdir()) == before  # nothing left behind (no x.npz beside it)
    assert afile.read_text() == "x"


def test_output_dir_creates_and_refuses(tmp_path):
    from kerasseg.errors import KerassegError
    from kerasseg.fileio import output_dir, output_file

    assert output_dir(tmp_path / "a" / "b").is_dir()
    (tmp_path / "f").write_text("")
    with pytest.raises(KerassegError, match="is a file"):
        output_dir(tmp_path / "f")
    with pytest.raises(KerassegError, match="lies under the file"):
        output_dir(tmp_path / "f" / "x", create=False)
    assert not (tmp_path / "c").exists() and output_dir(tmp_path / "c", create=False) == tmp_path / "c"
    assert not (tmp_path / "c").exists()
    with pytest.raises(KerassegError, match="is a folder"):
        output_file(tmp_path / "a", ".npz")
    assert output_file(tmp_path / "new", ".npz") == tmp_path / "new.npz"
    np.testing.assert_equal((tmp_path / "new.npz").exists(), False)
