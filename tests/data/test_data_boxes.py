"""Boxes other than the tight one (kerasseg.data.boxes) and the box-jitter training pipeline:
the box geometry against a float64 NumPy reference, the crops against slicing + the one resize,
determinism per (seed, epoch) (what resume relies on), config validation, and fit with box jitter."""

import json

import numpy as np
import pytest

from kerasseg.data import transforms
from kerasseg.data.boxes import (BoxJitter, box_view, crop_views, epoch_views, grow_boxes,
                                 jitter_views, scoring_draws)
from kerasseg.data.dataset import ROIDataset, load_npz, save_npz
from kerasseg.data.pipeline import make_box_jitter_dataset
from kerasseg.errors import KerassegError

C = 64   # window side of the synthetic windows


def windowed(rng, n=6, size=16, with_valid=False):
    """Synthetic ROIs with context windows: a disc mass in smooth noise, tight box from the mask."""
    yy, xx = np.mgrid[:C, :C]
    ctx, cmask, cbox, valid, images, masks = [], [], [], [], [], []
    for i in range(n):
        cy, cx = rng.uniform(26, 38, 2)
        ry, rx = rng.uniform(9, 15, 2)
        m = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).astype(np.uint8)
        img = (1000 + 300.0 * m + 40 * rng.standard_normal((C, C))).astype(np.float32)
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        box = np.array([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1], np.float32)
        y0, x0, y1, x1 = box.astype(int)
        images.append(np.asarray(transforms.resize(img[None, y0:y1, x0:x1], size))[0])
        masks.append(np.asarray(transforms.resize_mask(m[None, y0:y1, x0:x1], size))[0])
        ctx.append(img), cmask.append(m), cbox.append(box)
        valid.append([3, 0, C, C - 5] if with_valid and i % 2 else [0, 0, C, C])
    n_tr = n - 2
    return ROIDataset(images=np.stack(images), masks=np.stack(masks),
                      split=np.array(["train"] * n_tr + ["val"] * 2), ids=np.array([f"r{i}" for i in range(n)]),
                      group=np.array([f"g{i}" for i in range(n)]), context=np.stack(ctx),
                      context_mask=np.stack(cmask), context_box=np.stack(cbox),
                      context_valid=np.asarray(valid, np.float32))


def np_boxes(box, valid, margins, shifts):
    """The documented rule in float64 NumPy."""
    box, valid = np.asarray(box, np.float64), np.asarray(valid, np.float64)
    m, s = np.asarray(margins, np.float64), np.asarray(shifts, np.float64)
    out = []
    for b, v, mm, ss in zip(box, valid, m, s):
        h, w = b[2] - b[0], b[3] - b[1]
        y0 = max(b[0] - mm[0] * h + ss[0] * h, v[0])
        x0 = max(b[1] - mm[1] * w + ss[1] * w, v[1])
        y1 = min(b[2] + mm[2] * h + ss[0] * h, v[2])
        x1 = min(b[3] + mm[3] * w + ss[1] * w, v[3])
        r = np.floor(np.array([y0, x0, y1, x1]) + 0.5).astype(int)
        lo, hi = np.ceil(v[:2]).astype(int), np.floor(v[2:]).astype(int)
        end = np.minimum(np.maximum(r[2:], r[:2] + 2), hi)
        start = np.maximum(np.minimum(r[:2], end - 2), lo)
        out.append(np.concatenate([start, end]))
    return np.asarray(out)


def test_grow_boxes_matches_numpy_reference_incl_clipping(rng):
    n = 200
    y0, x0 = rng.uniform(0, 40, n), rng.uniform(0, 40, n)
    box = np.stack([y0, x0, y0 + rng.uniform(3, 24, n), x0 + rng.uniform(3, 24, n)], 1).astype(np.float32)
    valid = np.tile(np.array([2.0, 1.5, 62.0, 60.25], np.float32), (n, 1))
    margins = rng.uniform(0, 0.5, (n, 4)).astype(np.float32)
    shifts = rng.uniform(-0.5, 0.5, (n, 2)).astype(np.float32)
    got = np.asarray(grow_boxes(box, valid, margins, shifts))
    want = np_boxes(box, valid, margins, shifts)
    # float32 vs float64 may round a value within 1e-4 of a .5 boundary differently
    assert (np.abs(got - want) <= 1).all() and (got == want).mean() > 0.99
    assert (got[:, 0] >= 2).all() and (got[:, 1] >= 2).all() and (got[:, 2] <= 62).all() and (got[:, 3] <= 60).all()
    assert (got[:, 2:] - got[:, :2] >= 2).all()


def test_margin_zero_is_the_tight_box_and_margin_grows_it(rng):
    box = np.array([[10.0, 12.0, 30.0, 40.0]], np.float32)
    valid = np.array([[0, 0, 64, 64]], np.float32)
    zero = np.asarray(grow_boxes(box, valid, np.zeros((1, 4)), np.zeros((1, 2))))
    assert zero.tolist() == [[10, 12, 30, 40]]
    grown = np.asarray(grow_boxes(box, valid, np.full((1, 4), 0.25), np.zeros((1, 2))))
    assert grown.tolist() == [[5, 5, 35, 47]]       # 0.25 * 20 rows, 0.25 * 28 cols per side


def test_crop_views_equal_slicing_and_the_one_resize(rng):
    ds = windowed(rng)
    boxes = np.array([[5, 6, 50, 41], [0, 0, 64, 64], [10, 3, 12, 60], [20, 20, 60, 30], [1, 1, 40, 40],
                      [30, 30, 64, 64]], np.int32)
    x, m = crop_views(ds.context, ds.context_mask, boxes, 16)
    for i, (y0, x0, y1, x1) in enumerate(boxes):
        ref = np.asarray(transforms.resize(ds.context[i:i + 1, y0:y1, x0:x1], 16))[0]
        np.testing.assert_allclose(np.asarray(x[i]), ref, rtol=1e-6, atol=1e-3)
        ref_m = np.asarray(transforms.resize_mask(ds.context_mask[i:i + 1, y0:y1, x0:x1], 16))[0]
        np.testing.assert_array_equal(np.asarray(m[i]), ref_m)


def test_box_view_margin_zero_is_the_dataset_and_loose_boxes_shrink_the_mass(rng):
    ds = windowed(rng)
    assert box_view(ds, 0.0, 0.0) is ds
    loose = box_view(ds, 0.3, 0.0)
    assert loose.images.shape == ds.images.shape and loose.masks.dtype == np.uint8
    # each side grown by 0.3: the mass covers about 1 / 1.6**2 of its tight-box fraction
    ratio = loose.masks.mean() / ds.masks.mean()
    assert 0.3 < ratio < 0.5
    shifted = box_view(ds, 0.2, 0.2, seed=1)
    assert np.array_equal(shifted.images, box_view(ds, 0.2, 0.2, seed=1).images)
    assert not np.array_equal(shifted.images, box_view(ds, 0.2, 0.2, seed=2).images)


def test_scoring_shift_has_the_requested_length():
    ids = [f"roi{i}" for i in range(50)]
    margins, shifts = scoring_draws(ids, 0.1, 0.2, seed=3)
    np.testing.assert_allclose(np.hypot(shifts[:, 0], shifts[:, 1]), 0.2, rtol=1e-5)
    assert (margins == np.float32(0.1)).all()
    # an ROI's direction depends on (seed, id) only, not on its place in the file
    _, again = scoring_draws(ids[::-1][:10], 0.1, 0.2, seed=3)
    np.testing.assert_array_equal(again, shifts[::-1][:10])
    with pytest.raises(KerassegError, match="box margin"):
        scoring_draws(ids[:5], 0.9, 0.0)


def test_box_view_without_windows_names_the_file_and_data_prepare(rng, tmp_path):
    ds = windowed(rng)
    plain = ROIDataset(images=ds.images, masks=ds.masks, split=ds.split, ids=ds.ids)
    path = save_npz(plain, tmp_path / "plain.npz")
    with pytest.raises(KerassegError, match=r"plain\.npz.*data prepare"):
        box_view(load_npz(path), 0.2)


def test_jitter_draws_are_a_function_of_seed_and_epoch(rng):
    ds = windowed(rng, with_valid=True)
    jit = BoxJitter(margin=(0.0, 0.4), shift=0.1, tight=0.3)
    a, am = jitter_views(ds, jit, seed=5, epoch=2)
    b, bm = jitter_views(ds, jit, seed=5, epoch=2)
    c, _ = jitter_views(ds, jit, seed=5, epoch=3)
    d, _ = jitter_views(ds, jit, seed=6, epoch=2)
    assert np.array_equal(a, b) and np.array_equal(am, bm)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)
    # tight = 1 gives the dataset's own crops; tight = 0 none of them
    x, m = jitter_views(ds, BoxJitter(tight=1.0), 0, 0)
    assert np.array_equal(x, ds.images) and np.array_equal(m, ds.masks)
    x, _ = jitter_views(ds, BoxJitter(margin=(0.2, 0.3), tight=0.0), 0, 0)
    assert not any(np.array_equal(x[i], ds.images[i]) for i in range(len(ds)))


def test_jitter_pipeline_epochs_are_the_same_after_a_resume(rng):
    ds = windowed(rng).subset("train")

    def pre(x):                     # stands in for the model's preprocessing layer
        return x / 1000.0

    jit = BoxJitter()
    full = make_box_jitter_dataset(ds, pre, jit, 4, seed=1, epoch=0, repeat=True)
    steps = 4  # 4 ROIs x 4 flips / batch 4
    batches = [b for b, _ in zip(full, range(3 * steps))]
    resumed = make_box_jitter_dataset(ds, pre, jit, 4, seed=1, epoch=2, repeat=True)
    again = [b for b, _ in zip(resumed, range(steps))]
    for (x1, y1), (x2, y2) in zip(batches[2 * steps:], again):
        np.testing.assert_array_equal(x1.numpy(), x2.numpy())
        np.testing.assert_array_equal(y1.numpy(), y2.numpy())
    # an epoch holds every ROI of that epoch's draw in four orientations
    x_e, m_e = epoch_views(ds, jit, 1, 1)
    got = np.concatenate([b[0].numpy()[..., 0] for b in batches[steps:2 * steps]])
    want = np.asarray(x_e) / 1000.0
    four = np.concatenate([want, want[:, :, ::-1], want[:, ::-1], want[:, ::-1, ::-1]])
    np.testing.assert_allclose(np.sort(got.ravel()), np.sort(four.ravel()), rtol=1e-6)
    labels = np.concatenate([b[1].numpy()[..., 1] for b in batches[steps:2 * steps]])
    assert labels.sum() == 4 * np.asarray(m_e).sum()


@pytest.mark.parametrize("value, message", [
    ({"margin": [0.3, 0.1]}, "lo <= hi"), ({"margin": 0.2}, "pair"), ({"shift": -1}, "shift"),
    ({"tight": 2}, "tight"), ({"margins": [0, 1]}, "unknown key"), ("yes", "mapping")])
def test_box_jitter_config_errors(tmp_path, value, message):
    from kerasseg.config import resolve_config

    p = tmp_path / "bad.yaml"
    p.write_text(f"extends: crunet-unet\nname: bad\ndata: {{box_jitter: {json.dumps(value)}}}\n")
    with pytest.raises(KerassegError, match=message):
        resolve_config(str(p))


def test_anybox_configs_resolve_to_the_paper_rows_plus_jitter():
    from kerasseg.config import resolve_config

    for row in ("crunet-l067", "crunet-unet"):
        base, anybox = resolve_config(row), resolve_config(f"{row}-anybox")
        assert base["data"]["box_jitter"] is None
        jit = BoxJitter.from_config(anybox["data"]["box_jitter"])
        assert jit.margin[1] >= 0.3 and 0 < jit.tight < 1
        for section in ("model", "crf", "loss", "train"):
            assert anybox[section] == base[section]


@pytest.mark.slow
def test_fit_with_box_jitter_trains_and_refuses_data_without_windows(rng, tmp_path):
    from kerasseg.training.fit import fit

    ds = windowed(rng, n=8, size=40)
    data = save_npz(ds, tmp_path / "win.npz")
    cfg = tmp_path / "jit.yaml"
    cfg.write_text("extends: crunet-unet-anybox\nname: jit\nmodel: {filters: [4, 8]}\n"
                   "train: {batch_size: 8}\n")
    res = fit(str(cfg), data=str(data), out_dir=str(tmp_path / "run"), epochs=2, verbose=0)
    assert res.status == "finished" and res.epochs_run == 2 and 0.0 <= res.val_dice <= 1.0
    plain = save_npz(ROIDataset(images=ds.images, masks=ds.masks, split=ds.split, ids=ds.ids),
                     tmp_path / "plain.npz")
    with pytest.raises(KerassegError, match=r"plain\.npz.*data prepare"):
        fit(str(cfg), data=str(plain), out_dir=str(tmp_path / "run2"), epochs=1, verbose=0)
    assert not (tmp_path / "run2").exists()
