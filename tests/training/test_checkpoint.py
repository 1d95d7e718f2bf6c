"""The checkpoint protocol (kerasseg.training.checkpoint), staged output folders, fault points
(kerasseg.fileio) and the cluster role / device checks (kerasseg.training.strategy)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from kerasseg.errors import KerassegError
from kerasseg.fileio import staged_dir
from kerasseg.training.checkpoint import (model_arrays, read_latest, restore_model_arrays,
                                          write_unit)
from fixtures import REPO



def _arrays(rng, n=3):
    return {f"model/{i:05d}": rng.random((4, i + 1)).astype(np.float32) for i in range(n)}


def test_units_round_trip_and_only_the_newest_is_kept(tmp_path, rng):
    folder = tmp_path / "backup"
    a, b = _arrays(rng), _arrays(rng)
    first = write_unit(folder, 1, a, {"seed": 3, "callbacks": {"h": {"rows": [{"epoch": 1}]}}})
    second = write_unit(folder, 2, b, {"seed": 3}, final=True)
    assert first.name == "unit-000001" and second.name == "unit-000002"
    assert not first.exists() and [p.name for p in folder.iterdir()] == ["unit-000002"]
    unit = read_latest(folder)
    assert unit.generation == 2 and unit.epoch == 2 and unit.final and unit.meta == {"seed": 3}
    assert set(unit.arrays) == set(b)
    for k in b:
        np.testing.assert_array_equal(unit.arrays[k], b[k])
    assert read_latest(tmp_path / "none") is None


def test_a_torn_write_is_never_read_and_is_cleaned_by_the_next(tmp_path, rng):
    folder = tmp_path / "backup"
    good = _arrays(rng)
    write_unit(folder, 1, good)
    torn = folder / ".unit-000002.tmp-abc"      # a write killed before its rename
    torn.mkdir()
    (torn / "state.npz").write_bytes(b"PK\x03\x04 half")
    unit = read_latest(folder)
    assert unit.epoch == 1
    np.testing.assert_array_equal(unit.arrays["model/00000"], good["model/00000"])
    write_unit(folder, 2, good)
    assert sorted(p.name for p in folder.iterdir()) == ["unit-000002"]


def test_a_damaged_unit_is_skipped_for_the_previous_one(tmp_path, rng):
    folder = tmp_path / "backup"
    good = _arrays(rng)
    write_unit(folder, 1, good)
    # a newer unit whose state no longer matches its checksum (e.g. bit rot, a foreign copy)
    bad = folder / "unit-000002"
    bad.mkdir()
    (bad / "state.npz").write_bytes((folder / "unit-000001" / "state.npz").read_bytes()[:-10])
    info = json.loads((folder / "unit-000001" / "meta.json").read_text())
    (bad / "meta.json").write_text(json.dumps({**info, "generation": 2, "epoch": 2}))
    with pytest.warns(Warning, match="torn or damaged"):
        unit = read_latest(folder)
    assert unit.generation == 1 and unit.epoch == 1


def test_foreign_files_warn_as_torn(tmp_path):
    folder = tmp_path / "backup"
    folder.mkdir()
    (folder / "latest.weights.h5").write_bytes(b"")
    with pytest.warns(Warning, match="torn"):
        assert read_latest(folder) is None


DISK_FULL = """
import resource, signal, sys
import numpy as np
from kerasseg.errors import KerassegError
from kerasseg.training.checkpoint import write_unit
folder = sys.argv[1]
write_unit(folder, 1, {"a": np.ones(100, np.float32)})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)          # writes past the limit raise EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
try:
    write_unit(folder, 2, {"a": np.ones(100000, np.float32)})
except KerassegError as exc:
    print("ERROR", exc)
"""


def test_disk_full_keeps_the_previous_unit(tmp_path):
    folder = tmp_path / "backup"
    res = subprocess.run([sys.executable, "-c", DISK_FULL, str(folder)], capture_output=True,
                         text=True, cwd=REPO, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = [x for x in res.stdout.splitlines() if x.startswith("ERROR")]
    assert len(lines) == 1 and "cannot write the checkpoint of epoch 2" in lines[0]
    assert "unit-000001 is kept" in lines[0] and str(folder) in lines[0]
    assert sorted(p.name for p in folder.iterdir()) == ["unit-000001"]   # temp folder removed
    unit = read_latest(folder)
    assert unit.epoch == 1 and unit.arrays["a"].shape == (100,)


def _tiny_model(seed):
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((5,))
    h = keras.layers.Dropout(0.5)(keras.layers.Dense(4)(inp))
    out = keras.layers.Dense(1)(keras.layers.BatchNormalization()(h))
    model = keras.Model(inp, out)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    return model


def test_model_state_round_trip_continues_identically(rng):
    """Weights, batch-norm statistics, Adam moments and step, and the dropout RNG state:
    a model restored from a snapshot trains on exactly like the original."""
    x = rng.random((8, 5)).astype(np.float32)
    y = rng.random((8, 1)).astype(np.float32)
    a = _tiny_model(0)
    a.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    snap = model_arrays(a)
    assert any(k.startswith("opt/") for k in snap)
    b = _tiny_model(1)                      # other initial weights and RNG state
    restore_model_arrays(b, snap)
    a.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    b.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    for va, vb in zip(a.variables + a.optimizer.variables, b.variables + b.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(va), np.asarray(vb))


def test_a_checkpoint_of_another_model_is_refused(rng):
    import keras

    a = _tiny_model(0)
    other = keras.Sequential([keras.Input((5,)), keras.layers.Dense(2)])
    other.compile(optimizer="adam", loss="mse")
    with pytest.raises(KerassegError, match="another model") as exc:
        restore_model_arrays(other, model_arrays(a), "/x/backup/unit-000001")
    assert "unit-000001" in str(exc.value)


# --------------------------------------------------------------------------- staged_dir
def test_staged_dir_appears_complete_or_not_at_all(tmp_path):
    target = tmp_path / "report"
    with staged_dir(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".report.staged-")
        (tmp / "a.json").write_text("{}")
        assert not target.exists()
    assert sorted(p.name for p in target.iterdir()) == ["a.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]
    with pytest.raises(KerassegError, match="already exists"):
        with staged_dir(target):
            pass
    with pytest.raises(RuntimeError):          # a failure leaves nothing, target untouched
        with staged_dir(target, replace=True) as tmp:
            (tmp / "b.json").write_text("{}")
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]
    assert sorted(p.name for p in target.iterdir()) == ["a.json"]
    with staged_dir(target, replace=True) as tmp:
        (tmp / "b.json").write_text("{}")
    assert sorted(p.name for p in target.iterdir()) == ["b.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_staged_dir_under_a_file_is_one_line(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(KerassegError, match="file"):
        with staged_dir(tmp_path / "f" / "out"):
            pass


# --------------------------------------------------------------------------- fault points
FAULT = "from kerasseg.fileio import fault_point\nfor i in range(3):\n    fault_point('p.x')\n    print(i, flush=True)\n"


@pytest.mark.parametrize("spec, rc, printed", [("p.x", -9, ""), ("p.x:2", -9, "0\n"),
                                               ("p.y", 0, "0\n1\n2\n"), ("", 0, "0\n1\n2\n")])
def test_fault_point_kills_at_the_named_hit(spec, rc, printed):
    env = dict(os.environ, KERASSEG_FAULT=spec)
    res = subprocess.run([sys.executable, "-c", FAULT], env=env, capture_output=True, text=True,
                         cwd=REPO, timeout=60)
    assert (res.returncode, res.stdout) == (rc, printed)


# --------------------------------------------------------------------------- strategy
@pytest.mark.parametrize("tf_config, chief, name", [
    (None, True, "chief-0"),
    ({"cluster": {"worker": ["a", "b"]}, "task": {"type": "worker", "index": 0}}, True, "worker-0"),
    ({"cluster": {"worker": ["a", "b"]}, "task": {"type": "worker", "index": 1}}, False, "worker-1"),
    # with a chief task, worker 0 is an ordinary worker (TensorFlow's rule)
    ({"cluster": {"chief": ["c"], "worker": ["a"]}, "task": {"type": "worker", "index": 0}},
     False, "worker-0"),
    ({"cluster": {"chief": ["c"], "worker": ["a"]}, "task": {"type": "chief", "index": 0}},
     True, "chief-0"),
    ({"cluster": {"worker": ["a"], "evaluator": ["e"]}, "task": {"type": "evaluator", "index": 0}},
     False, "evaluator-0"),
])
def test_cluster_role(tf_config, chief, name):
    from kerasseg.training.strategy import cluster_role

    assert cluster_role(json.dumps(tf_config) if tf_config else "") == (chief, name)


def test_more_devices_than_cores_is_refused():
    from kerasseg.training.strategy import available_cpus, get_strategy

    n = available_cpus() + 1
    with pytest.raises(KerassegError, match=f"devices {n}: no GPU and only"):
        get_strategy(n)


@pytest.mark.parametrize("replicas", [1, 2, 3, 4])
@pytest.mark.parametrize("batch_size", [1, 4, 8])
def test_eval_batch_size_splits_evenly_with_no_empty_share(replicas, batch_size):
    from kerasseg.training.strategy import eval_batch_size

    for n in range(replicas, 60):
        sizes_ok = []
        for b in range(1, max(n, batch_size) + replicas + 1):   # brute force over batch sizes
            sizes = [min(b, n - i) for i in range(0, n, b)]
            sizes_ok.append(b if (b % replicas == 0 or replicas == 1)
                            and all(s >= replicas for s in sizes) else None)
        possible = [b for b in sizes_ok if b]
        if not possible:
            with pytest.raises(KerassegError, match="validation ROIs"):
                eval_batch_size(n, batch_size, replicas)
            continue
        b = eval_batch_size(n, batch_size, replicas)
        assert b in possible, (n, b)
        if batch_size in possible:
            assert b == batch_size
