"""Train / val / test assignment of ROIs, deterministic by seed.

Methods (``--split``):

``protocol``
    The INbreast protocol of both papers ("the first 58 masses for training and the rest for
    test"): ROIs are ordered by image id (numerically when the ids are numbers, as INbreast's
    are) and by the order of the masses in the annotation; the first half (``ceil(N/2)``: 58 of
    the 116 INbreast masses) is train, the rest test. It does not depend on the seed.
``official``
    A split given by the dataset itself: the BCRP train/test case lists of DDSM-BCRP, the
    ``*_train_set`` / ``*_test_set`` CSV of CBIS-DDSM. The readers pass the labels in.
``patient``
    Whole groups (INbreast: the patient hash in the file name; DDSM: the case; CBIS: the patient
    id; folder: the source image) go to one side, shuffled by the seed, until about
    ``test_fraction`` of the ROIs are in test.
``random``
    ROIs shuffled by the seed, ``round(test_fraction * N)`` of them in test.

Cross-validation (``kerasseg fit --folds K``) uses :func:`group_kfold`: whole groups to each
fold, the folds balanced in ROI count.

In every method a validation subset is then carved **from train only** (never from test):
``round(val_fraction * n_train)`` ROIs, chosen by the seed, whole groups at a time for ``patient``.
"""

from __future__ import annotations

import math
import re

import numpy as np

from kerasseg.errors import KerassegError, argument_error

METHODS = ("protocol", "official", "patient", "random")


def natural_key(text: str):
    """Sort key that orders embedded numbers numerically ("img2" < "img10")."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t.lower())
            for t in re.split(r"(\d+)", str(text)) if t != ""]


def protocol_split(order_keys) -> np.ndarray:
    """First ``ceil(N/2)`` ROIs in ``order_keys`` order are train, the rest test."""
    n = len(order_keys)
    order = sorted(range(n), key=lambda i: order_keys[i])
    split = np.full(n, "test", dtype=object)
    for i in order[: (n + 1) // 2]:
        split[i] = "train"
    return split.astype(str)


def random_split(n: int, test_fraction: float, seed: int) -> np.ndarray:
    """``round(test_fraction * n)`` ROIs chosen by the seed go to test."""
    _check_fraction("test_fraction", test_fraction)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_test = int(round(test_fraction * n))
    split = np.full(n, "train", dtype=object)
    split[perm[:n_test]] = "test"
    return split.astype(str)


def group_split(groups, test_fraction: float, seed: int) -> np.ndarray:
    """Whole groups to test (in a seeded order) until about ``test_fraction`` of the ROIs are there."""
    _check_fraction("test_fraction", test_fraction)
    groups = np.asarray([str(g) for g in groups])
    split = np.full(len(groups), "train", dtype=object)
    chosen = _pick_groups(groups, np.ones(len(groups), bool), test_fraction * len(groups), seed)
    split[np.isin(groups, chosen)] = "test"
    return split.astype(str)


def carve_val(split, val_fraction: float, seed: int, groups=None) -> np.ndarray:
    """Move ``round(val_fraction * n_train)`` train ROIs to val (whole groups when ``groups`` is given)."""
    _check_fraction("val_fraction", val_fraction)
    split = np.asarray(split).astype(object)
    train = split == "train"
    n_train = int(train.sum())
    target = int(round(val_fraction * n_train))
    if target == 0:
        return split.astype(str)
    rng_seed = seed + 7919  # independent of the train/test draw
    if groups is None:
        idx = np.flatnonzero(train)
        rng = np.random.default_rng(rng_seed)
        split[rng.permutation(idx)[:target]] = "val"
    else:
        groups = np.asarray([str(g) for g in groups])
        chosen = _pick_groups(groups, train, target, rng_seed)
        split[train & np.isin(groups, chosen)] = "val"
    return split.astype(str)


def assign(method: str, *, n: int, order_keys=None, groups=None, official=None,
           test_fraction: float = 0.5, val_fraction: float = 0.1, seed: int = 0) -> np.ndarray:
    """Split labels for ``n`` ROIs by ``method`` (see the module docstring)."""
    if method not in METHODS:
        raise KerassegError(f"unknown split method {method!r}; choose one of {list(METHODS)}")
    if method == "protocol":
        split = protocol_split(order_keys if order_keys is not None else list(range(n)))
    elif method == "official":
        if official is None or any(s not in ("train", "test") for s in official):
            raise argument_error("split", "official: this source has no official train/test split; use patient or random")
        split = np.asarray(official).astype(str)
    elif method == "patient":
        if groups is None:
            raise argument_error("split", "patient: this source has no patient/case grouping; use random")
        split = group_split(groups, test_fraction, seed)
    else:
        split = random_split(n, test_fraction, seed)
    return carve_val(split, val_fraction, seed, groups if method == "patient" else None)


def resplit(split, groups, *, test_fraction: float = 0.2, val_fraction: float = 0.1,
            seed: int = 0) -> np.ndarray:
    """New split labels for an existing dataset, by whole ``groups`` (patients, contours).

    Test ROIs already in ``split`` stay test and no other ROI joins them (a test set is never
    redrawn, so it cannot have been looked at through a choice); without any, whole groups are
    drawn for test until about ``test_fraction`` of the ROIs are there (:func:`group_split`). The
    rest is train, and ``round(val_fraction * n_train)`` of it in whole groups becomes val
    (:func:`carve_val`). Deterministic in ``seed``.

    Example:

    >>> resplit(["train"] * 6, ["a", "a", "b", "b", "c", "c"], test_fraction=0.3, val_fraction=0.3).tolist()
    ['train', 'train', 'val', 'val', 'test', 'test']
    """
    split = np.asarray(split).astype(str)
    groups = np.asarray([str(g) for g in groups])
    if len(groups) != len(split):
        raise KerassegError(f"{len(groups)} groups for {len(split)} ROIs")
    test = split == "test"
    new = np.where(test, "test", "train") if test.any() else group_split(groups, test_fraction, seed)
    new = carve_val(new, val_fraction, seed, groups)
    if not (new == "train").any():
        raise KerassegError(f"the split leaves no train ROIs ({int((new == 'val').sum())} val, "
                            f"{int((new == 'test').sum())} test from {len(set(groups.tolist()))} group(s)); "
                            "lower the test / val fractions")
    return new


def groups_across_splits(split, groups) -> list[str]:
    """The groups that have ROIs in more than one split (a leak between train/val and test)."""
    split = np.asarray(split).astype(str)
    groups = np.asarray([str(g) for g in groups])
    seen: dict[str, set] = {}
    for g, s in zip(groups, split):
        seen.setdefault(g, set()).add(s)
    return sorted(g for g, s in seen.items() if len(s) > 1)


def group_kfold(groups, k: int, seed: int = 0) -> np.ndarray:
    """Fold index (0 .. k-1) of every ROI: whole groups to one fold, folds balanced in ROI count.

    Groups are visited largest first (ties in a seeded random order) and each goes to the fold
    with the fewest ROIs so far (the lowest fold index on ties), so the result depends only on
    ``groups``, ``k`` and ``seed``. A :class:`KerassegError` if there are fewer groups than folds.
    """
    if isinstance(k, bool) or int(k) != k or k < 2:
        raise argument_error("folds", f"must be an integer >= 2, got {k!r}")
    k = int(k)
    groups = np.asarray([str(g) for g in groups])
    names = sorted(set(groups.tolist()), key=natural_key)
    if len(names) < k:
        have = (f"{len(names)} group(s) among its {len(groups)} ROIs" if len(groups) else "no ROIs "
                "(no train/val ROIs to fold)")
        raise KerassegError(f"{k} folds need at least {k} groups (patients/contours); the data has {have}")
    sizes = {g: int((groups == g).sum()) for g in names}
    rng = np.random.default_rng(seed)
    shuffled = [names[i] for i in rng.permutation(len(names))]
    order = sorted(shuffled, key=lambda g: -sizes[g])  # stable: ties keep the seeded order
    load = np.zeros(k, dtype=np.int64)
    fold_of_group = {}
    for g in order:
        f = int(np.argmin(load))
        fold_of_group[g] = f
        load[f] += sizes[g]
    return np.asarray([fold_of_group[g] for g in groups], dtype=np.int64)


def read_case_list(path) -> set[str]:
    """Case names in a text file, one per line (``#`` comments and blank lines ignored), lower-cased."""
    from pathlib import Path

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise KerassegError(f"cannot read case list ({exc.strerror})", path) from None
    names = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(line.replace("\\", "/").rstrip("/").split("/")[-1].lower())
    if not names:
        raise KerassegError("case list is empty", path)
    return names


# ---------------------------------------------------------------- helpers
def _check_fraction(name, value):
    if not (0.0 <= float(value) < 1.0) or math.isnan(float(value)):
        raise KerassegError(f"{name} must be in [0, 1), got {value}")


def _pick_groups(groups, eligible, target, seed):
    """Groups (seeded order) whose eligible ROIs add up to about ``target``."""
    names = sorted(set(groups[eligible].tolist()), key=natural_key)
    sizes = {g: int(((groups == g) & eligible).sum()) for g in names}
    rng = np.random.default_rng(seed)
    chosen, total = [], 0
    for i in rng.permutation(len(names)):
        g = names[i]
        if total >= target:
            break
        # take the group if that brings the total closer to the target
        if abs(total + sizes[g] - target) <= abs(total - target) or not chosen:
            chosen.append(g)
            total += sizes[g]
    return chosen
