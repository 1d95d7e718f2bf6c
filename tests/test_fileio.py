import pytest

from kerasseg.errors import KerassegError
from kerasseg.fileio import atomic_write, atomic_write_text


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "first")

    def broken(fh):
        fh.write("half")
        raise RuntimeError("crash while writing")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken, mode="w")
    assert target.read_text() == "first"            # old content intact
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]   # no temp file left


def test_atomic_write_missing_folder_is_one_line_error(tmp_path):
    with pytest.raises(KerassegError, match="output folder does not exist"):
        atomic_write_text(tmp_path / "nope" / "x.txt", "x")


def test_atomic_write_target_is_a_folder(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(KerassegError, match="cannot write"):
        atomic_write_text(tmp_path / "d", "x")
    assert [p.name for p in tmp_path.iterdir()] == ["d"]
