"""The built-in phantom (kerasseg.data.phantom) and the dataset summaries (kerasseg.data.info)."""

import numpy as np
import pytest
from skimage.filters import threshold_otsu

from kerasseg.data import phantom
from kerasseg.data.dataset import ROIDataset
from kerasseg.data.info import summarize, thumbnail_grid
from kerasseg.errors import KerassegError


@pytest.fixture(scope="module")
def default_with_info():
    return phantom.make_phantom(return_info=True)


def _dice(a, b):
    a, b = a.astype(bool), b.astype(bool)
    return 2.0 * (a & b).sum() / (a.sum() + b.sum())


# --------------------------------------------------------------------------- generation
def test_shapes_dtypes_and_splits():
    ds = phantom.make_phantom(n_train=5, n_val=2, n_test=3, size=32, seed=7)
    assert isinstance(ds, ROIDataset)
    assert ds.images.shape == (10, 32, 32) and ds.images.dtype == np.float32
    assert ds.masks.shape == (10, 32, 32) and ds.masks.dtype == np.uint8
    assert set(np.unique(ds.masks)) <= {0, 1}
    assert ds.counts() == {"train": 5, "val": 2, "test": 3}
    assert len(set(ds.ids.tolist())) == 10 and all(i.endswith("-mass1") for i in ds.ids)
    assert ds.source == "phantom"
    assert np.all(np.isfinite(ds.images))
    # boxes: inside the virtual INbreast-sized image, positive extent
    x0, y0, x1, y1 = ds.boxes.T
    assert np.all(x0 >= 0) and np.all(y0 >= 0)
    assert np.all(x1 <= phantom.VIRTUAL_IMAGE[1]) and np.all(y1 <= phantom.VIRTUAL_IMAGE[0])
    assert np.all(x1 > x0) and np.all(y1 > y0)
    # spacing: 0.07 mm pixels scaled by the (area-preserving) resize of the box
    expect = phantom.PIXEL_MM * np.sqrt((x1 - x0) * (y1 - y0).astype(np.float64)) / 32
    np.testing.assert_allclose(ds.spacing_mm, expect, rtol=0.03)


def test_deterministic_by_seed_and_split_independent():
    a = phantom.make_phantom(4, 2, 3, seed=5)
    b = phantom.make_phantom(4, 2, 3, seed=5)
    c = phantom.make_phantom(4, 2, 3, seed=6)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    assert a.data_hash() == b.data_hash()
    assert a.data_hash() != c.data_hash()
    assert not np.allclose(a.images, c.images)
    # the training ROIs do not depend on how many val/test ROIs are asked for
    d = phantom.make_phantom(4, 0, 0, seed=5)
    np.testing.assert_array_equal(d.images, a.subset("train").images)
    # samples within one dataset differ from each other
    assert not np.array_equal(a.masks[0], a.masks[1])


def test_default_dataset_is_make_phantom_and_cached(default_with_info):
    d1 = phantom.default_dataset()
    d1.images[:] = 0.0                       # a caller scribbling on its copy...
    d2 = phantom.default_dataset()           # ...does not change the cached dataset
    ref = default_with_info[0]               # make_phantom() with the defaults
    assert d2.data_hash() == ref.data_hash()
    assert d2.counts() == {"train": 58, "val": 12, "test": 58} and d2.size == 40


@pytest.mark.parametrize("kwargs", [dict(n_train=-1), dict(n_train=1.5), dict(size=4),
                                    dict(seed=-3), dict(n_train=0, n_val=0, n_test=0),
                                    dict(beta=9.0), dict(difficulty=0.0)])
def test_bad_arguments(kwargs):
    with pytest.raises(KerassegError):
        phantom.make_phantom(**kwargs)


# --------------------------------------------------------------------------- statistics
def _radial_slope(field, fmin=0.02, fmax=0.25):
    """Log-log slope of the radially averaged power spectrum (Hann-windowed)."""
    h, w = field.shape
    win = np.outer(np.hanning(h), np.hanning(w))
    p = np.abs(np.fft.fft2((field - field.mean()) * win)) ** 2
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    f = np.hypot(fx, fy)
    edges = np.geomspace(fmin, fmax, 16)
    fc, pc = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (f >= lo) & (f < hi)
        fc.append(f[sel].mean())
        pc.append(p[sel].mean())
    slope, _ = np.polyfit(np.log(fc), np.log(pc), 1)
    return slope


@pytest.mark.parametrize("beta", [3.0, 2.0])
def test_background_power_spectrum_slope(beta):
    slopes = []
    for s in range(4):
        bg = phantom.power_law_background((192, 192), beta=beta, rng=s)
        assert abs(bg.mean()) < 1e-9 and abs(bg.std() - 1.0) < 1e-9
        slopes.append(_radial_slope(bg))
    assert np.mean(slopes) == pytest.approx(-beta, abs=0.3)


def test_background_is_not_periodic():
    # cropped from a larger canvas: opposite edges are not continuations of each other
    bg = phantom.power_law_background((128, 128), rng=1)
    wrap = np.abs(bg[0] - bg[-1]).mean()
    inner = np.abs(np.diff(bg, axis=0)).mean()
    assert wrap > 3 * inner


def test_mask_fraction_shapes_and_contrast(default_with_info):
    ds, info = default_with_info
    frac = ds.masks.reshape(len(ds), -1).mean(axis=1)
    assert frac.min() >= 0.4 and frac.max() <= 0.9          # tight boxes: mass fills the ROI
    assert 0.5 <= frac.mean() <= 0.8
    assert {i["shape"] for i in info} == set(phantom.SHAPES)
    assert {i["margin"] for i in info} == set(phantom.MARGINS)
    # masses are denser (brighter) than their surroundings in the large majority of ROIs
    inside = np.array([im[m == 1].mean() for im, m in zip(ds.images, ds.masks)])
    outside = np.array([im[m == 0].mean() for im, m in zip(ds.images, ds.masks)])
    assert np.mean(inside > outside) >= 0.9
    # mass areas in mm^2 are INbreast-like (15-3689 mm^2 in the paper)
    mm2 = ds.masks.reshape(len(ds), -1).sum(axis=1) * ds.spacing_mm.astype(np.float64) ** 2
    assert mm2.min() >= 10 and mm2.max() <= 1000


def test_otsu_is_clearly_below_a_learned_segmentation(default_with_info):
    ds, _ = default_with_info
    dice = np.array([_dice(im > threshold_otsu(im), m) for im, m in zip(ds.images, ds.masks)])
    # plain per-ROI Otsu must be clearly worse than a trained network (>= 0.85, see docs)
    assert dice.mean() <= 0.75
    # ...but the masses are visible: Otsu is far better than chance-level agreement
    assert dice.mean() >= 0.5


def test_difficulty_controls_otsu():
    easy = phantom.make_phantom(20, 0, 0, seed=3, difficulty=0.2)
    hard = phantom.make_phantom(20, 0, 0, seed=3, difficulty=1.5)

    def mean_dice(ds):
        return np.mean([_dice(im > threshold_otsu(im), m) for im, m in zip(ds.images, ds.masks)])

    assert mean_dice(easy) > mean_dice(hard) + 0.05


# --------------------------------------------------------------------------- info
def test_summarize_reports_counts_and_areas():
    ds = phantom.make_phantom(6, 2, 4, seed=1)
    text = summarize(ds)
    assert "train 6" in text and "val 2" in text and "test 4" in text
    area = ds.masks.reshape(len(ds), -1).sum(axis=1)
    assert f"median {np.median(area):.4g}" in text
    pct = 100.0 * area / 1600.0
    assert f"max {pct.max():.4g}" in text
    mm2 = area * ds.spacing_mm.astype(np.float64) ** 2
    assert f"mean {mm2.mean():.4g}" in text
    assert f"min {ds.images.min():.6g}" in text
    # without spacing there is no mm^2 line
    ds.spacing_mm = None
    assert "mm^2" not in summarize(ds)


def test_thumbnail_grid_png(tmp_path):
    import matplotlib.image as mpimg

    ds = phantom.make_phantom(6, 2, 4, seed=1)
    out = thumbnail_grid(ds, tmp_path / "grid.png", n=10, cols=4, dpi=50)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(out)
    rows = int(np.ceil(10 / 4))
    assert img.shape[:2] == (round(1.75 * rows * 50), round(1.6 * 4 * 50))
    assert img[..., :3].std() > 0.05          # not a blank canvas
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]   # no temp file left behind


def test_thumbnail_grid_bad_output(tmp_path):
    ds = phantom.make_phantom(2, 0, 0, seed=1)
    with pytest.raises(KerassegError, match="does not exist"):
        thumbnail_grid(ds, tmp_path / "missing" / "grid.png")
    with pytest.raises(KerassegError):
        thumbnail_grid(ds, tmp_path / "grid.png", n=0)
