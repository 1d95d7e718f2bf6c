"""Whole image + boxes: kerasseg.models.whole_image.boxes_function and the serving_boxes /
serving_boxes_bytes signatures of every export (issue 19 part 4)."""

import re

import numpy as np
import pytest
import tensorflow as tf

from kerasseg.errors import KerassegError
from kerasseg.export import Segmenter, export_model, savedmodel
from kerasseg.models.whole_image import OUTPUTS, boxes_function
from fixtures.export import run_without_kerasseg, tiny_segmenter
from fixtures.export import BLOCKED_LOADER
from fixtures.docs import run_example

# boxes (y0, x0, y1, x1): different sizes, two overlapping, one at the model size, one on the border
BOXES = np.array([[10, 12, 70, 95], [40, 60, 120, 130], [0, 150, 40, 190], [100, 5, 150, 30],
                  [112, 100, 150, 190]], np.int32)


def whole_image(seed=0, shape=(150, 190)):
    """A 'mammogram': noise around 1000 with bright blobs (some with a dark core) under the boxes."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    img = rng.normal(1000, 40, size=shape)
    for cy, cx, r in ((40, 50, 14), (80, 95, 18), (20, 170, 9), (125, 17, 8), (130, 150, 12)):
        img += 500 * (np.hypot(yy - cy, xx - cx) < r)
        img -= 350 * (np.hypot(yy - cy, xx - cx) < r / 3)
    return np.clip(img, 0, 65535).astype(np.float32)


def crop_reference(signature, image, boxes):
    """Crop by hand, ``serving_default`` on each crop, and paste with NumPy (max / union)."""
    per_box = []
    image_prob = np.zeros(image.shape, np.float32)
    image_mask = np.zeros(image.shape, np.uint8)
    for y0, x0, y1, x1 in boxes:
        out = {k: v.numpy()[0] for k, v in signature(image=tf.constant(image[None, y0:y1, x0:x1])).items()}
        per_box.append(out)
        image_prob[y0:y1, x0:x1] = np.maximum(image_prob[y0:y1, x0:x1], out["probability"])
        image_mask[y0:y1, x0:x1] |= out["mask"]
    return per_box, image_prob, image_mask


def assert_matches_crops(out, ref, boxes):
    per_box, image_prob, image_mask = ref
    n = len(boxes)
    hs, ws = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert set(out) == set(OUTPUTS)
    assert out["probability"].shape == out["mask"].shape == out["uncertainty"].shape == (n, hs.max(), ws.max())
    assert out["probability"].dtype == np.float32 and out["mask"].dtype == np.uint8
    assert out["uncertainty"].dtype == np.float32 and out["box_size"].dtype == np.int32
    np.testing.assert_array_equal(out["box_size"], np.stack([hs, ws], 1))
    assert out["image_mask"].shape == image_mask.shape and out["image_mask"].dtype == np.uint8
    assert out["image_probability"].dtype == np.float32
    undecided = np.zeros(image_mask.shape, bool)
    for i, ref_i in enumerate(per_box):
        h, w = hs[i], ws[i]
        np.testing.assert_allclose(out["probability"][i, :h, :w], ref_i["probability"], atol=1e-5)
        np.testing.assert_allclose(out["uncertainty"][i, :h, :w], ref_i["uncertainty"], atol=1e-5)
        decided = np.abs(ref_i["probability"] - 0.5) > 1e-4  # a pixel on the threshold may flip
        if decided.all():
            np.testing.assert_array_equal(out["mask"][i, :h, :w], ref_i["mask"])
        else:
            np.testing.assert_array_equal(out["mask"][i, :h, :w][decided], ref_i["mask"][decided])
        y0, x0, y1, x1 = boxes[i]
        undecided[y0:y1, x0:x1] |= ~decided
        for k in ("probability", "mask", "uncertainty"):  # zero padding
            assert not out[k][i, h:].any() and not out[k][i, :, w:].any()
    np.testing.assert_allclose(out["image_probability"], image_prob, atol=1e-5)
    np.testing.assert_array_equal(out["image_mask"][~undecided], image_mask[~undecided])
    return per_box


@pytest.fixture(scope="module")
def model():
    return tiny_segmenter(40, crf=True, seed=4)


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    return export_model(model, tmp_path_factory.mktemp("boxes") / "massseg")


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(str(exported))


def _np(out):
    return {k: v.numpy() for k, v in out.items()}


def test_serving_boxes_equals_crops_through_serving_default(loaded):
    image = whole_image(0)
    out = _np(loaded.signatures["serving_boxes"](image=tf.constant(image), boxes=tf.constant(BOXES)))
    per_box = assert_matches_crops(out, crop_reference(loaded.signatures["serving_default"], image, BOXES), BOXES)
    assert all(0 < b["mask"].sum() < b["mask"].size for b in per_box[:3])  # non-trivial masks
    # one model without TTA: no uncertainty; nothing outside the boxes
    assert not out["uncertainty"].any()
    outside = np.ones(image.shape, bool)
    for y0, x0, y1, x1 in BOXES:
        outside[y0:y1, x0:x1] = False
    assert not out["image_probability"][outside].any() and not out["image_mask"][outside].any()
    # one box at the model size, and the whole image as the only box
    for boxes in (np.array([[5, 7, 45, 47]], np.int32), np.array([[0, 0, 150, 190]], np.int32)):
        got = _np(loaded.signatures["serving_boxes"](image=tf.constant(image), boxes=tf.constant(boxes)))
        assert_matches_crops(got, crop_reference(loaded.signatures["serving_default"], image, boxes), boxes)


def test_serving_boxes_bytes_decodes_the_image_first(loaded):
    image = whole_image(1, (120, 140))
    png = tf.io.encode_png(tf.constant(image.astype(np.uint16)[..., None])).numpy()
    boxes = np.array([[3, 4, 60, 70], [50, 60, 118, 139]], np.int32)
    out = _np(loaded.signatures["serving_boxes_bytes"](image_bytes=tf.constant(png), boxes=tf.constant(boxes)))
    ref = _np(loaded.signatures["serving_boxes"](image=tf.constant(image.astype(np.uint16).astype(np.float32)),
                                                 boxes=tf.constant(boxes)))
    for k in OUTPUTS:
        np.testing.assert_allclose(out[k], ref[k], atol=1e-6)


def test_in_python_function_and_segmenter_agree_with_the_export(model, loaded, exported):
    image = whole_image(2)
    fn = boxes_function(model, min_side=savedmodel.MIN_SIDE)
    got = _np(fn(tf.constant(image), tf.constant(BOXES)))
    want = _np(loaded.signatures["serving_boxes"](image=tf.constant(image), boxes=tf.constant(BOXES)))
    for k in OUTPUTS:
        np.testing.assert_allclose(got[k], want[k], atol=1e-5)
    # predict's Segmenter: run dir / model and export through the graph; an export without
    # serving_boxes (written before it existed) crops in NumPy and gives the same numbers
    for seg in (Segmenter(model), Segmenter(exported)):
        res = seg.predict_boxes(image, BOXES)
        for k in OUTPUTS:
            np.testing.assert_allclose(res[k], want[k], atol=1e-5)
    old = Segmenter(exported)
    old._boxes_fn = None
    res = old.predict_boxes(image, BOXES)
    for k in OUTPUTS:
        np.testing.assert_allclose(res[k], want[k], atol=1e-5)
    with pytest.raises(KerassegError, match=r"ROI 60,40,191,120 is outside the image"):
        Segmenter(model).predict_boxes(image, np.array([[40, 60, 120, 191]]))
    with pytest.raises(KerassegError, match="at least 8 x 8"):
        Segmenter(model).predict_boxes(image, np.array([[40, 60, 45, 131]]))


def test_predict_sends_only_the_spanned_region_of_a_huge_image(model, monkeypatch):
    image = whole_image(3)
    seg = Segmenter(model)
    want = seg.predict_boxes(image, BOXES[:2])
    monkeypatch.setattr(savedmodel, "MAX_PIXELS", 13_000)  # the image (28500 px) is now 'too large'
    got = seg.predict_boxes(image, BOXES[:2])  # the region spanning the boxes: 110 x 118 px
    for k in OUTPUTS:
        np.testing.assert_allclose(got[k], want[k], atol=1e-5)
    with pytest.raises(KerassegError, match="the boxes span 150 x 190 pixels"):
        seg.predict_boxes(image, np.array([[0, 0, 10, 10], [140, 180, 150, 190]]))


def test_ensemble_tta_export_equals_crops(tmp_path):
    from test_export_ensemble import write_folds_dir

    folds = write_folds_dir(tmp_path / "cv")
    path = export_model(folds, tmp_path / "serving" / "m", tta="flips")
    sigs = tf.saved_model.load(str(path)).signatures
    image = whole_image(4)
    out = _np(sigs["serving_boxes"](image=tf.constant(image), boxes=tf.constant(BOXES)))
    per_box = assert_matches_crops(out, crop_reference(sigs["serving_default"], image, BOXES), BOXES)
    assert max(float(b["uncertainty"].max()) for b in per_box) > 1e-3  # two members x four flips disagree
    # the cv's post-processing ran at the box size: box masks are single components without holes
    import scipy.ndimage as ndi

    for i, (h, w) in enumerate(out["box_size"]):
        m = out["mask"][i, :h, :w]
        assert ndi.label(m, np.ones((3, 3)))[1] <= 1
        np.testing.assert_array_equal(ndi.binary_fill_holes(m), m.astype(bool))


def _error(loaded, image, boxes, sig="serving_boxes", arg="image"):
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        loaded.signatures[sig](**{arg: tf.constant(image), "boxes": tf.constant(boxes, tf.int32)})
    msg = info.value.message
    assert msg.isascii()
    return msg


@pytest.mark.parametrize("case, boxes, pattern", [
    ("outside", [[10, 12, 70, 95], [140, 150, 151, 170]],
     r"box\] \[1\] \[\(y0, x0, y1, x1\) =\] \[140 150 151 170\] \[lies outside the image of shape\] \[150 190\]"),
    ("negative", [[-1, 12, 70, 95]], r"box\] \[0\] \[\(y0, x0, y1, x1\) =\] \[-1 12 70 95\] \[lies outside"),
    ("empty", [[10, 12, 70, 95], [0, 0, 10, 10], [20, 30, 20, 60]],
     r"box\] \[2\] \[\(y0, x0, y1, x1\) =\] \[20 30 20 60\] \[is empty"),
    ("reversed", [[30, 12, 10, 95]], r"box\] \[0\] \[\(y0, x0, y1, x1\) =\] \[30 12 10 95\] \[is empty"),
    ("small", [[10, 12, 70, 95], [0, 0, 10, 7]],
     r"box\] \[1\] \[\(y0, x0, y1, x1\) =\] \[0 0 10 7\] \[is smaller than 8 x 8"),
    ("none", np.zeros((0, 4), np.int32), r"1 <= N <= 64, .*got shape\] \[0 4\]"),
    ("too many", np.tile([[0, 0, 10, 10]], (65, 1)), r"1 <= N <= 64, .*got shape\] \[65 4\]"),
    ("five columns", [[0, 0, 10, 10, 3]],
     r"Shape of tensor boxes \[1,5\] is not compatible with expected shape \[\?,4\]"),
    ("rank 1", [0, 0, 10, 10], r"Shape of tensor boxes \[4\] is not compatible with expected shape \[\?,4\]"),
])
def test_bad_boxes_are_refused_naming_the_box(loaded, case, boxes, pattern):
    msg = _error(loaded, whole_image(0), np.asarray(boxes, np.int32))
    assert re.search(pattern, msg), msg
    if "box]" in pattern:
        assert "input boxes must be int32 [N, 4] boxes (y0, x0, y1, x1)" in msg


def test_bad_images_are_refused(loaded):
    image = whole_image(0)
    nan = image.copy()
    nan[45, 50] = np.nan
    msg = _error(loaded, nan, BOXES)
    assert re.search(r"finite pixels inside the boxes; box\] \[0\] \[\(y0, x0, y1, x1\) =\] \[10 12 70 95\]", msg)
    nan[45, 50] = image[45, 50]
    nan[145, 100] = np.inf  # outside every box: not used, not refused
    out = loaded.signatures["serving_boxes"](image=tf.constant(nan), boxes=tf.constant(BOXES[:2]))
    assert np.isfinite(out["image_probability"].numpy()).all()
    assert "Shape of tensor image" in _error(loaded, image[None], BOXES)
    msg = _error(loaded, tf.constant(b"not an image"), BOXES, "serving_boxes_bytes", "image_bytes")
    assert "input image_bytes must hold encoded PNG" in msg


def test_limits_of_the_function():
    """max_pixels bounds the image and the padded per-box outputs (the export uses MAX_PIXELS)."""
    fn = boxes_function(tiny_segmenter(40, crf=False), min_side=8, max_boxes=3, max_pixels=10_000)
    image = tf.constant(whole_image(0, (90, 100)))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"at most 10000 pixels; got shape\] \[101 100\]"):
        fn(tf.constant(whole_image(0, (101, 100))), tf.constant([[0, 0, 10, 10]]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"N, height, width =\] \[2\] \[80\] \[90\]"):
        fn(image, tf.constant([[0, 0, 80, 20], [0, 0, 20, 90]]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"1 <= N <= 3"):
        fn(image, tf.constant([[0, 0, 10, 10]] * 4))
    assert fn(image, tf.constant([[0, 0, 80, 90]]))["probability"].shape == (1, 80, 90)
    with pytest.raises(KerassegError, match="max_pixels must be an integer >= 1"):
        boxes_function(tiny_segmenter(40, crf=False), max_pixels=0)
    with pytest.raises(KerassegError, match="part of the ensemble function"):
        boxes_function(fn.ensemble, tta="flips")


def test_graph_and_warmup(exported, loaded):
    from tensorflow.python.framework import op_def_registry

    ops = savedmodel.graph_ops(exported)
    assert {"TensorStridedSliceUpdate", "ScaleAndTranslate"} <= ops
    assert sorted(op for op in ops if op_def_registry.get(op) is None) == []
    assert sorted(op for op in ops if op.startswith(("Xla", "_Xla")) or "PyFunc" in op) == []
    import json

    card = json.loads((exported / "assets" / "model_card.json").read_text())
    assert {"serving_boxes", "serving_boxes_bytes", "boxes_outputs"} <= set(card["input_contract"])
    assert card["input_contract"]["limits"] == {"min_side": 8, "max_batch": savedmodel.MAX_BATCH,
                                                "max_boxes": savedmodel.MAX_BOXES,
                                                "max_pixels": savedmodel.MAX_PIXELS}
    from tensorflow_serving.apis import prediction_log_pb2

    records = list(tf.data.TFRecordDataset(str(exported / "assets.extra" / "tf_serving_warmup_requests")))
    reqs = [prediction_log_pb2.PredictionLog.FromString(r.numpy()).predict_log.request for r in records]
    boxes_reqs = [r for r in reqs if r.model_spec.signature_name == "serving_boxes"]
    assert len(boxes_reqs) == 1
    args = {k: tf.constant(tf.make_ndarray(v)) for k, v in boxes_reqs[0].inputs.items()}
    assert set(args) == {"image", "boxes"} and args["boxes"].dtype == tf.int32
    out = loaded.signatures["serving_boxes"](**args)
    assert out["probability"].shape[0] == 2 and len(set(map(tuple, out["box_size"].numpy()))) == 2


# Loads the export where `import kerasseg` fails (the preamble of test_export_savedmodel's loader)
# and calls the box signatures with an image, boxes and a PNG of the image.
BOXES_LOADER = BLOCKED_LOADER.split("export, inp, outp = sys.argv[1:4]")[0] + r"""
export, inp, outp = sys.argv[1:4]
loaded = tf.saved_model.load(export)
assert not any(m.startswith("kerasseg") for m in sys.modules)
data = np.load(inp)
res = {}
out = loaded.signatures["serving_boxes"](image=tf.constant(data["image"]), boxes=tf.constant(data["boxes"]))
res.update({"boxes/" + k: v.numpy() for k, v in out.items()})
out = loaded.signatures["serving_boxes_bytes"](image_bytes=tf.constant(data["png"].tobytes()),
                                               boxes=tf.constant(data["boxes"]))
res.update({"bytes/" + k: v.numpy() for k, v in out.items()})
try:
    loaded.signatures["serving_boxes"](image=tf.constant(data["image"]), boxes=tf.constant(data["boxes"][:, ::-1]))
except tf.errors.InvalidArgumentError as exc:
    res["bad/error"] = np.array(exc.message)
np.savez(outp, **res)
print("OK", sorted(m for m in sys.modules if m.startswith("kerasseg")))
"""


def test_loads_without_kerasseg(exported, loaded, tmp_path):
    image = whole_image(5).astype(np.uint16).astype(np.float32)
    png = tf.io.encode_png(tf.constant(image.astype(np.uint16)[..., None])).numpy()
    inp = tmp_path / "in.npz"
    np.savez(inp, image=image, boxes=BOXES, png=np.frombuffer(png, np.uint8))
    proc = run_without_kerasseg(BOXES_LOADER, exported, inp, tmp_path / "out.npz", tmp_path)
    assert "OK []" in proc.stdout
    res = dict(np.load(tmp_path / "out.npz"))
    ref = crop_reference(loaded.signatures["serving_default"], image, BOXES)
    for prefix in ("boxes", "bytes"):
        assert_matches_crops({k: res[f"{prefix}/{k}"] for k in OUTPUTS}, ref, BOXES)
    assert "box] [0] [(y0, x0, y1, x1) =] [95 70 12 10] [is empty" in str(res["bad/error"])


def test_docs_example_runs(capsys):
    """The Python example of docs/serving.md (the block starting '# example: whole image') runs as is."""
    namespace = run_example("docs/serving.md", "# example: whole image")
    out = namespace["out"]
    assert out["probability"].shape == (2, 300, 260) and out["image_mask"].shape == (1200, 900)
    assert "[[240 200]\n [300 260]]" in capsys.readouterr().out
