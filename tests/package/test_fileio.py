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


# ------------------------------------------------------------ staged_update (a set of files replaced as one)
import os
import subprocess
import sys

from kerasseg.fileio import staged_update


def _old_set(folder):
    folder.mkdir()
    for name, text in {"metrics.json": "old-m", "a.csv": "old-a", "fig.png": "old-fig",
                       "compare-x.json": "mine"}.items():
        (folder / name).write_text(text)


def _state(folder):
    return {p.name: p.read_text() for p in folder.iterdir() if p.is_file()}


def test_staged_update_replaces_the_set_keeps_foreign_files_drops_stale(tmp_path):
    rep = tmp_path / "rep"
    _old_set(rep)
    with staged_update(rep, commit="metrics.json", owned=("metrics.json", "a.csv", "fig.png")) as tmp:
        assert tmp.parent == rep and tmp.name.startswith(".")
        assert _state(rep)["metrics.json"] == "old-m"  # nothing changed while the set is built
        (tmp / "a.csv").write_text("new-a")
        (tmp / "metrics.json").write_text("new-m")
    # fig.png was the old set's and the new one has none: removed; compare-x.json is not the set's: kept
    assert _state(rep) == {"metrics.json": "new-m", "a.csv": "new-a", "compare-x.json": "mine"}


def test_staged_update_failure_leaves_the_old_set_untouched(tmp_path):
    rep = tmp_path / "rep"
    _old_set(rep)
    before = _state(rep)
    with pytest.raises(RuntimeError):
        with staged_update(rep, commit="metrics.json", owned=("metrics.json", "a.csv", "fig.png")) as tmp:
            (tmp / "a.csv").write_text("new-a")
            raise RuntimeError("plot failed")
    assert _state(rep) == before
    assert sorted(p.name for p in rep.iterdir()) == sorted(before)  # no hidden staging folder left


def test_staged_update_without_its_record_is_refused(tmp_path):
    rep = tmp_path / "rep"
    _old_set(rep)
    with pytest.raises(KerassegError, match="metrics.json"):
        with staged_update(rep, commit="metrics.json", owned=("metrics.json", "a.csv")) as tmp:
            (tmp / "a.csv").write_text("new-a")
    assert _state(rep)["a.csv"] == "old-a"


def test_staged_update_killed_mid_swap_leaves_no_record(tmp_path):
    """SIGKILL after the old record is removed: the folder has no metrics.json (so no reader takes the
    mixed set for a report: load_predictions refuses it), no half-written file, the foreign file kept."""
    rep = tmp_path / "rep"
    _old_set(rep)
    code = ("import sys; from kerasseg.fileio import staged_update\n"
            "with staged_update(sys.argv[1], commit='metrics.json', owned=('metrics.json','a.csv','fig.png')) as t:\n"
            "    (t / 'a.csv').write_text('new-a'); (t / 'metrics.json').write_text('new-m')\n")
    env = dict(os.environ, KERASSEG_FAULT="staged_update.uncommitted")
    proc = subprocess.run([sys.executable, "-c", code, str(rep)], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -9
    state = _state(rep)
    assert "metrics.json" not in state and state["compare-x.json"] == "mine"
    assert state["a.csv"] == "old-a"
    from kerasseg.evaluation.compare import load_predictions

    (rep / "predictions.npz").write_bytes(b"")  # even with a predictions file present
    with pytest.raises(KerassegError, match="incomplete evaluation report"):
        load_predictions(rep)
    # the killed update's staging folder is removed by the next update once it is old enough
    staged = [p for p in rep.iterdir() if p.is_dir()]
    assert len(staged) == 1 and staged[0].name.startswith(".staged-")
    os.utime(staged[0], (1, 1))
    with staged_update(rep, commit="metrics.json", owned=("metrics.json", "a.csv", "fig.png")) as tmp:
        (tmp / "metrics.json").write_text("new-m")
    assert [p for p in rep.iterdir() if p.is_dir()] == []
