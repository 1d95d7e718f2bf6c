"""The optional ``group`` array of the dataset contract and the grouped K-fold assignment."""

import numpy as np
import pytest

from kerasseg.data.dataset import ROIDataset, load_npz, save_npz
from kerasseg.data.phantom import make_phantom
from kerasseg.data.readers import ImageRecord, build_dataset
from kerasseg.data.splits import group_kfold
from kerasseg.errors import KerassegError
from kerasseg.training.folds import fold_labels


def _ds(n=6, group=None):
    rng = np.random.default_rng(0)
    return ROIDataset(images=rng.random((n, 8, 8)), masks=(rng.random((n, 8, 8)) > 0.5).astype(np.uint8),
                      split=["train"] * n, ids=[f"r{i}" for i in range(n)], group=group)


def test_group_roundtrip_select_and_default(tmp_path):
    ds = _ds(group=["a", "a", "b", "b", "c", "c"])
    back = load_npz(save_npz(ds, tmp_path / "g.npz"))
    assert back.group.tolist() == ["a", "a", "b", "b", "c", "c"]
    assert back.select(np.array([1, 4])).group.tolist() == ["a", "c"]
    assert back.with_split(["val"] * 6).group.tolist() == back.group.tolist()
    plain = _ds()
    assert plain.group is None
    assert plain.groups().tolist() == plain.ids.tolist()          # each ROI its own group
    assert "group" not in np.load(save_npz(plain, tmp_path / "p.npz")).files


@pytest.mark.parametrize("bad, msg", [(["a"] * 5, "group must have shape"), (["a", "", "b", "b", "c", "c"], "non-empty")])
def test_group_validation(bad, msg):
    with pytest.raises(KerassegError, match=msg):
        _ds(group=bad)


def test_readers_and_phantom_fill_groups():
    img = np.zeros((60, 60), np.float32)
    m1 = np.zeros((60, 60), bool)
    m1[5:20, 5:20] = True
    m2 = np.zeros((60, 60), bool)
    m2[30:50, 30:50] = True
    recs = [ImageRecord("img1", img, [m1, m2], group="patientA"),
            ImageRecord("img2", img, [m1], group="patientB"),
            ImageRecord("img3", img, [m2])]                        # no group: its image id
    ds = build_dataset(recs, size=16, split="random", test_fraction=0.0, val_fraction=0.0)
    assert ds.group.tolist() == ["patientA", "patientA", "patientB", "img3"]
    ph = make_phantom(n_train=3, n_val=1, n_test=2, size=16)
    assert ph.group is not None and len(set(ph.group.tolist())) == len(ph)


@pytest.mark.parametrize("k, seed", [(2, 0), (3, 1), (5, 7)])
def test_group_kfold_disjoint_balanced_deterministic(k, seed):
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"g{i}" for i in range(23)], rng.integers(1, 6, 23))
    fold = group_kfold(groups, k, seed)
    assert set(fold.tolist()) == set(range(k))
    for g in set(groups.tolist()):                                # a group never spans two folds
        assert len(set(fold[groups == g].tolist())) == 1
    counts = np.bincount(fold, minlength=k)
    assert counts.max() - counts.min() <= 5                       # at most the largest group apart
    assert np.array_equal(fold, group_kfold(groups, k, seed))     # deterministic
    assert np.array_equal(fold, group_kfold(groups[::-1], k, seed)[::-1])  # independent of ROI order


def test_group_kfold_errors():
    with pytest.raises(KerassegError, match="at least 3 groups"):
        group_kfold(["a", "a", "b"], 3)
    with pytest.raises(KerassegError, match="integer >= 2"):
        group_kfold(["a", "b"], 1)


def test_fold_labels_leave_test_alone():
    split = np.array(["train", "val", "test", "train", "test", "train", "val", "train"])
    groups = np.array(["a", "a", "t", "b", "t", "c", "d", "d"])
    fold = fold_labels(split, groups, 2, seed=0)
    assert (fold[split == "test"] == 0).all()
    assert set(fold[split != "test"].tolist()) == {1, 2}
    assert fold[0] == fold[1] and fold[6] == fold[7]              # group a / d together across train/val


# ----------------------------------------------------------------- re-splitting by groups
from kerasseg.data.splits import groups_across_splits, resplit  # noqa: E402


def _leaky_pairs(split, groups):
    """Independent reference: groups seen under two different split labels."""
    return sorted({g for g, s in zip(groups, split) for g2, s2 in zip(groups, split) if g == g2 and s != s2})


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_resplit_draws_test_and_val_in_whole_groups(seed):
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"c{i}" for i in range(40)], rng.integers(1, 8, 40))
    split = resplit(["train"] * len(groups), groups, test_fraction=0.25, val_fraction=0.2, seed=seed)
    assert groups_across_splits(split, groups) == [] == _leaky_pairs(split, groups)
    n = len(groups)
    assert abs((split == "test").sum() - 0.25 * n) <= 8          # whole groups of at most 7 ROIs
    n_train = (split != "test").sum()
    assert abs((split == "val").sum() - 0.2 * n_train) <= 8
    assert np.array_equal(split, resplit(["train"] * n, groups, test_fraction=0.25, val_fraction=0.2,
                                         seed=seed))


def test_resplit_keeps_an_existing_test_set():
    groups = np.repeat([f"p{i}" for i in range(20)], 3)
    old = np.where(np.isin(groups, ["p0", "p5", "p9"]), "test", "train")
    old[groups == "p3"] = "val"
    new = resplit(old, groups, test_fraction=0.5, val_fraction=0.25, seed=4)
    assert np.array_equal(new == "test", old == "test")        # the same test ROIs, no others
    assert groups_across_splits(new, groups) == []
    assert (new == "val").sum() == 12                           # round(0.25 * 51) -> whole groups of 3


def test_groups_across_splits_matches_reference():
    rng = np.random.default_rng(3)
    groups = rng.integers(0, 12, 80).astype(str)
    split = rng.choice(["train", "val", "test"], 80, p=[0.8, 0.1, 0.1])
    assert groups_across_splits(split, groups) == _leaky_pairs(split, groups)


def test_data_split_cli_and_info_leak_warning(tmp_path):
    from click.testing import CliRunner

    from kerasseg.cli.main import cli

    groups = np.repeat([f"g{i}" for i in range(12)], 4)
    leaky = ROIDataset(images=np.random.default_rng(0).random((48, 8, 8)).astype(np.float32),
                       masks=np.zeros((48, 8, 8), np.uint8) + np.eye(8, dtype=np.uint8),
                       split=np.tile(["train", "train", "val", "test"], 12),
                       ids=[f"r{i}" for i in range(48)], group=groups)
    src = save_npz(leaky, tmp_path / "leaky.npz")
    info = CliRunner().invoke(cli, ["data", "info", str(src)], catch_exceptions=False)
    assert "groups: 12" in info.output and "12 group(s) have ROIs in more than one split" in info.output
    pool = save_npz(leaky.with_split(np.full(48, "train")), tmp_path / "pool.npz")
    res = CliRunner().invoke(cli, ["data", "split", str(pool), "--out", str(tmp_path / "s.npz"),
                                   "--test-fraction", "0.25", "--val-fraction", "0.2"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    out = load_npz(tmp_path / "s.npz")
    assert np.array_equal(out.images, leaky.images) and np.array_equal(out.masks, leaky.masks)
    assert groups_across_splits(out.split, out.group) == [] and out.counts()["test"] == 12
    bad = CliRunner().invoke(cli, ["data", "split", str(tmp_path / "nope.npz"), "--out", str(tmp_path / "t.npz")])
    assert bad.exit_code == 1 and "nope.npz" in bad.output and "Traceback" not in bad.output
    assert not (tmp_path / "t.npz").exists()
