"""Post-processing ops (kerasseg.layers.postprocessing) against scipy.ndimage, exactly."""

import numpy as np
import pytest
import scipy.ndimage as ndi
import tensorflow as tf

from kerasseg.layers.postprocessing import component_labels, fill_holes, largest_component, postprocess


def scipy_largest(mask):
    """scipy reference: 8-connected labels, keep the most pixels, ties -> the lowest scipy label."""
    lab, n = ndi.label(mask, structure=np.ones((3, 3), int))
    if n == 0:
        return np.zeros(mask.shape, np.uint8)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    return (lab == int(np.argmax(sizes)) + 1).astype(np.uint8)


def scipy_fill(mask):
    return ndi.binary_fill_holes(mask).astype(np.uint8)


def random_masks(rng, shape, count):
    """Masks with several components, holes, border contact: thresholded smoothed noise + shapes."""
    out = []
    for k in range(count):
        kind = k % 4
        if kind == 0:  # sparse speckle: many small components, diagonal contacts
            m = rng.random(shape) < rng.uniform(0.1, 0.45)
        elif kind == 1:  # blobs from smoothed noise (touch the border)
            m = ndi.gaussian_filter(rng.normal(size=shape), rng.uniform(0.8, 2.5)) > rng.uniform(-0.1, 0.3)
        elif kind == 2:  # rings with holes, one touching the border
            yy, xx = np.mgrid[:shape[0], :shape[1]]
            m = np.zeros(shape, bool)
            for _ in range(rng.integers(1, 4)):
                cy, cx = rng.integers(0, shape[0]), rng.integers(0, shape[1])
                r = rng.uniform(1.5, max(2.0, max(shape) / 3))
                d = np.hypot(yy - cy, xx - cx)
                m |= (d < r) & (d > r * rng.uniform(0.3, 0.7))
            m |= rng.random(shape) < 0.05
        else:  # dense mask with background holes
            m = rng.random(shape) < rng.uniform(0.55, 0.9)
        out.append(m)
    return np.stack(out).astype(np.uint8)


SHAPES = [(40, 40), (23, 57), (57, 23), (1, 9), (9, 1), (2, 2), (64, 31)]


@pytest.mark.parametrize("shape", SHAPES)
def test_largest_component_and_fill_holes_equal_scipy(shape):
    rng = np.random.default_rng(sum(shape))
    masks = random_masks(rng, shape, 12)
    masks = np.concatenate([masks, np.zeros((1,) + shape, np.uint8), np.ones((1,) + shape, np.uint8)])
    lc = largest_component(masks).numpy()
    fh = fill_holes(masks).numpy()
    assert lc.dtype == np.uint8 and fh.dtype == np.uint8
    for i, m in enumerate(masks):
        np.testing.assert_array_equal(lc[i], scipy_largest(m), err_msg=f"largest_component, mask {i}")
        np.testing.assert_array_equal(fh[i], scipy_fill(m), err_msg=f"fill_holes, mask {i}")
    # the cases matter: several components and real holes occur
    if max(shape) > 2:  # (in a 2x2 image every two pixels touch)
        assert any(ndi.label(m, np.ones((3, 3)))[1] > 1 for m in masks)
    if min(shape) > 4:
        assert any((scipy_fill(m) != m).any() for m in masks)


def test_component_labels_partition_equals_scipy():
    rng = np.random.default_rng(0)
    masks = random_masks(rng, (33, 47), 8)
    labels = component_labels(masks).numpy()
    for m, lab in zip(masks, labels):
        ref, n = ndi.label(m, structure=np.ones((3, 3), int))
        assert len(np.unique(lab[lab > 0])) == n
        # the same partition: a one-to-one map between our labels and scipy's
        pairs = set(zip(lab[m > 0].tolist(), ref[m > 0].tolist()))
        assert len(pairs) == n
        assert np.all((lab == 0) == (m == 0))


def test_ties_keep_the_first_component_in_raster_order():
    m = np.zeros((1, 7, 9), np.uint8)
    m[0, 4:6, 0:2] = 1  # 4 px, first pixel at raster index 36
    m[0, 0:2, 6:8] = 1  # 4 px, first pixel at raster index 6 -> kept
    m[0, 6, 8] = 1      # 1 px
    out = largest_component(m).numpy()[0]
    expected = np.zeros((7, 9), np.uint8)
    expected[0:2, 6:8] = 1
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(out, scipy_largest(m[0]))


def test_diagonal_is_connected_for_components_not_for_holes():
    # a diagonal line is one 8-connected component; the background it encloses with the border
    # corner is 4-connected to the border through nothing -> scipy fills it only with 4-connectivity
    m = np.zeros((1, 6, 6), np.uint8)
    m[0, [0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0]] = 1
    m[0, 5, 5] = 1
    assert largest_component(m).numpy()[0].sum() == 6  # the diagonal, not the lone corner
    np.testing.assert_array_equal(fill_holes(m).numpy()[0], scipy_fill(m[0]))


def test_postprocess_applies_only_what_is_asked():
    m = np.zeros((1, 12, 12), np.uint8)
    m[0, 1:8, 1:8] = 1
    m[0, 3:5, 3:5] = 0      # a hole
    m[0, 10:12, 10:12] = 1  # a second, small component
    np.testing.assert_array_equal(postprocess(m).numpy(), m)
    np.testing.assert_array_equal(postprocess(m, largest_component=True).numpy()[0], scipy_largest(m[0]))
    np.testing.assert_array_equal(postprocess(m, fill_holes=True).numpy()[0], scipy_fill(m[0]))
    both = postprocess(m, largest_component=True, fill_holes=True).numpy()[0]
    np.testing.assert_array_equal(both, scipy_fill(scipy_largest(m[0])))
    assert postprocess(m.astype(bool)).dtype == tf.uint8


def test_tf_function_with_unknown_size_and_savedmodel(tmp_path):
    spec = tf.TensorSpec([None, None, None], tf.uint8)

    class Module(tf.Module):
        @tf.function(input_signature=[spec])
        def run(self, mask):
            return {"lc": largest_component(mask), "fh": fill_holes(mask),
                    "both": postprocess(mask, largest_component=True, fill_holes=True)}

    module = Module()
    rng = np.random.default_rng(5)
    masks_a = random_masks(rng, (21, 34), 4)
    masks_b = random_masks(rng, (40, 40), 4)
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": module.run.get_concrete_function()})
    from kerasseg.export.savedmodel import graph_ops
    from tensorflow.python.framework import op_def_registry

    ops = graph_ops(tmp_path / "sm")
    assert [op for op in ops if op_def_registry.get(op) is None or "PyFunc" in op] == []
    loaded = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"]
    for masks in (masks_a, masks_b):
        for fn in (module.run, lambda mask: loaded(mask=mask)):
            out = {k: v.numpy() for k, v in fn(tf.constant(masks)).items()}
            for i, m in enumerate(masks):
                np.testing.assert_array_equal(out["lc"][i], scipy_largest(m))
                np.testing.assert_array_equal(out["fh"][i], scipy_fill(m))
                np.testing.assert_array_equal(out["both"][i], scipy_fill(scipy_largest(m)))


def test_long_snake_converges():
    # a 1-px wide serpentine: geodesic length ~ half the pixels, far more than the side
    m = np.zeros((1, 21, 21), np.uint8)
    m[0, ::2, :] = 1
    for r in range(1, 21, 2):
        m[0, r, 20 if (r // 2) % 2 == 0 else 0] = 1
    np.testing.assert_array_equal(largest_component(m).numpy()[0], scipy_largest(m[0]))
    assert ndi.label(m[0], np.ones((3, 3)))[1] == 1


def _spiral(n, width=1):
    """A square spiral wall of ``width`` px: both the wall (a component) and the corridor between
    its turns (a background region reaching the border only at the spiral's mouth) are long paths."""
    m = np.zeros((n, n), np.uint8)
    top, left, bottom, right = 0, 0, n - 1, n - 1
    step = 2 * width
    while bottom - top > step and right - left > step:
        m[top:top + width, left:right + 1] = 1
        m[top:bottom + 1, right - width + 1:right + 1] = 1
        m[bottom - width + 1:bottom + 1, left + step:right + 1] = 1
        m[top + step:bottom + 1, left + step:left + step + width] = 1
        top, left, bottom, right = top + step, left + step, bottom - step, right - step
    return m


def test_large_masks_and_spirals_equal_scipy():
    """Union-find labelling on big crops and on shapes whose geodesic length is ~ their area."""
    rng = np.random.default_rng(11)
    big = random_masks(rng, (150, 170), 4)
    spirals = []
    for n, w in ((61, 1), (90, 2), (150, 1)):
        s = np.zeros((150, 170), np.uint8)
        s[:n, :n] = _spiral(n, w)
        spirals += [s, 1 - s]
    closed = np.zeros((150, 170), np.uint8)  # a spiral inside a closed ring: its corridor is a hole
    closed[2:69, 2:69] = 1
    closed[3:68, 3:68] = 0
    closed[5:66, 5:66] = _spiral(61)
    masks = np.concatenate([big, np.stack(spirals), closed[None]])
    lc = largest_component(masks).numpy()
    fh = fill_holes(masks).numpy()
    for i, m in enumerate(masks):
        np.testing.assert_array_equal(lc[i], scipy_largest(m), err_msg=f"mask {i}")
        np.testing.assert_array_equal(fh[i], scipy_fill(m), err_msg=f"mask {i}")
    assert scipy_fill(closed)[3:68, 3:68].all()  # the whole corridor really is a hole
