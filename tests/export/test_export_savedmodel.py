"""TF Serving export: layout, atomicity, signatures, numeric equality, loading without kerasseg."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from kerasseg.errors import KerassegError
from kerasseg.export import savedmodel
from kerasseg.export.savedmodel import existing_versions, export_model
from fixtures.export import BLOCKED_LOADER, keras_reference, numpy_normalize, run_without_kerasseg, tiny_segmenter
from fixtures import REPO as _REPO

# Loads a SavedModel in a process where `import kerasseg` fails, calls both signatures on the
# arrays of an input .npz and writes every output (or the error text) to an output .npz.


@pytest.fixture(scope="module")
def model():
    return tiny_segmenter(40, crf=True)


@pytest.fixture(scope="module")
def network(model):
    from kerasseg.models import get_network

    return get_network(model)


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    base = tmp_path_factory.mktemp("serving") / "massseg"
    path = export_model(model, base)
    return base, path


@pytest.fixture(scope="module")
def rois():
    from kerasseg.data.phantom import make_phantom

    ds = make_phantom(n_train=2, n_val=1, n_test=3, size=40, seed=3)
    return ds.images


def test_layout_and_versions(model, exported, tmp_path):
    base, path = exported
    assert path == base / "1"
    assert (path / "saved_model.pb").is_file()
    assert (path / "variables").is_dir() and any((path / "variables").iterdir())
    assert (path / "assets").is_dir()
    assert existing_versions(base) == [1]
    # a second export gets the next version; an explicit existing version needs force
    base2 = tmp_path / "m"
    (base2 / "7").mkdir(parents=True)
    (base2 / "notaversion").mkdir()
    (base2 / "7" / "marker").write_text("old")
    p = export_model(model, base2)
    assert p == base2 / "8"
    with pytest.raises(KerassegError, match="already exists"):
        export_model(model, base2, version=7)
    assert (base2 / "7" / "marker").exists()
    p = export_model(model, base2, version=7, force=True)
    assert not (p / "marker").exists() and (p / "saved_model.pb").exists()
    assert existing_versions(base2) == [7, 8]
    assert sorted(x.name for x in base2.iterdir()) == ["7", "8", "notaversion"]  # no temp left
    with pytest.raises(KerassegError, match="positive integer"):
        export_model(model, base2, version=0)


def test_interrupted_export_leaves_no_version(model, tmp_path, monkeypatch):
    real = savedmodel._write_saved_model

    def broken(module, path, *args, **kwargs):
        real(module, path, *args, **kwargs)  # a complete write, then a crash before the rename
        (Path(path) / "half").write_text("x")
        raise RuntimeError("disk full")

    monkeypatch.setattr(savedmodel, "_write_saved_model", broken)
    base = tmp_path / "m"
    with pytest.raises(RuntimeError, match="disk full"):
        export_model(model, base)
    assert list(base.iterdir()) == []  # neither a version folder nor the temporary one
    assert existing_versions(base) == []


def test_saved_model_cli_lists_signatures(exported):
    _, path = exported
    cmd = [shutil.which("saved_model_cli")] if shutil.which("saved_model_cli") else [
        sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run(cmd + ["show", "--all", "--dir", str(path)], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    sigs = {}
    current = None
    for line in text.splitlines():
        if line.startswith("signature_def['"):
            current = line.split("'")[1]
            sigs[current] = []
        elif current:
            sigs[current].append(line)
    assert {"serving_default", "serving_4d", "serving_bytes"} <= set(sigs)
    serve = "\n".join(sigs["serving_default"])
    four = "\n".join(sigs["serving_4d"])
    byts = "\n".join(sigs["serving_bytes"])
    # defined ranks (TF Serving conventions): [-1, -1, -1], [-1, -1, -1, 1], [-1] strings
    assert "inputs['image'] tensor_info" in serve and "(-1, -1, -1)" in serve and "unknown_rank" not in serve
    assert "outputs['probability']" in serve and "outputs['mask']" in serve and "outputs['uncertainty']" in serve
    assert "DT_UINT8" in serve and "DT_FLOAT" in serve
    assert "(-1, -1, -1, 1)" in four
    assert "inputs['image_bytes']" in byts and "DT_STRING" in byts and "shape: (-1)" in byts


def _png(arr):
    import tensorflow as tf

    return tf.io.encode_png(tf.constant(arr)).numpy()


def test_loads_without_kerasseg_and_matches_keras(model, network, exported, rois, tmp_path, rng):
    _, path = exported
    x40 = rois[:3].astype(np.float32)
    odd = rng.normal(100, 20, size=(2, 57, 33)).astype(np.float32)
    g8 = rng.integers(0, 255, (2, 40, 40, 1), dtype=np.uint8)
    g16 = rng.integers(0, 65535, (2, 44, 41, 1), dtype=np.uint16)
    rgb = rng.integers(0, 255, (1, 40, 40, 3), dtype=np.uint8)
    nan = x40.copy()
    nan[0, 3, 4] = np.nan
    inp = tmp_path / "in.npz"
    obj = lambda items: np.array(items, dtype=object)  # noqa: E731
    np.savez(inp, serving_default__x40=x40, serving_4d__x40c=x40[..., None], serving_default__odd=odd,
             serving_default__rank2=x40[0], serving_default__rank4=x40[..., None],
             serving_default__empty=np.zeros((0, 40, 40), np.float32),
             serving_default__small=np.zeros((1, 7, 40), np.float32), serving_default__nan=nan,
             serving_bytes__g8=obj([_png(a) for a in g8]), serving_bytes__g16=obj([_png(a) for a in g16]),
             serving_bytes__rgb=obj([_png(rgb[0])]), serving_bytes__junk=obj([b"not an image at all"]),
             serving_bytes__mixed=obj([_png(g8[0]), _png(g16[0])]))
    proc = run_without_kerasseg(BLOCKED_LOADER, path, inp, tmp_path / "out.npz", tmp_path)
    assert "OK []" in proc.stdout
    res = dict(np.load(tmp_path / "out.npz"))

    expected = keras_reference(network, x40, "crf")  # float64 normalisation, network in inference mode
    xn = numpy_normalize(x40).astype(np.float32)[..., None]
    # dropout is active in training mode, so this would fail if the export ran in training mode
    assert not np.allclose(np.asarray(network(xn, training=True)["crf"])[..., 1], expected, atol=1e-3)
    for key in ("serving_default__x40", "serving_4d__x40c"):
        prob = res[f"{key}/probability"]
        assert prob.shape == (3, 40, 40) and prob.dtype == np.float32
        np.testing.assert_allclose(prob, expected, atol=1e-5)
        np.testing.assert_array_equal(res[f"{key}/mask"], (prob >= 0.5).astype(np.uint8))
        assert res[f"{key}/mask"].dtype == np.uint8
        # one model without TTA: nothing to disagree with
        np.testing.assert_array_equal(res[f"{key}/uncertainty"], np.zeros_like(prob))
    m = res["serving_default__x40/mask"]
    assert 0 < m.sum() < m.size  # non-trivial masks

    assert res["serving_default__odd/probability"].shape == (2, 57, 33)
    assert np.all((res["serving_default__odd/probability"] >= 0) & (res["serving_default__odd/probability"] <= 1))
    # bytes: decoded in the graph to the raw stored values (8 and 16 bit), RGB by the BT.709 weights
    from kerasseg.data.imageio import RGB_TO_GREY

    for key, arr in (("g8", g8[..., 0]), ("g16", g16[..., 0]),
                     ("rgb", (rgb.astype(np.float64) @ np.asarray(RGB_TO_GREY)).astype(np.float32))):
        direct = model.predict(arr.astype(np.float32)[..., None], verbose=0)["crf"][..., 1]
        prob = res[f"serving_bytes__{key}/probability"]
        assert prob.shape == arr.shape
        if arr.shape[1:] == (40, 40):
            np.testing.assert_allclose(prob, direct, atol=1e-5)
    # the graph's checks name the input and the contract (a loaded signature does not check the rank)
    for bad in ("rank2", "rank4"):
        assert "Shape of tensor image" in str(res[f"serving_default__{bad}/error"])
        assert "is not compatible with expected shape [?,?,?]" in str(res[f"serving_default__{bad}/error"])
    for bad in ("empty", "small", "nan"):
        msg = str(res[f"serving_default__{bad}/error"])
        assert "input image must be float32 [batch, height, width]" in msg and "height and width >= 8" in msg
    assert "input image_bytes must hold encoded PNG" in str(res["serving_bytes__junk/error"])
    assert "same height and width" in str(res["serving_bytes__mixed/error"])


def test_any_size_follows_resize_reference(model, network, exported, rng):
    """serving_default on 57x33 = the one resize -> normalise -> network -> bilinear resize back."""
    import tensorflow as tf

    from kerasseg.data import transforms

    _, path = exported
    loaded = tf.saved_model.load(str(path))
    x = rng.normal(100, 20, size=(2, 57, 33)).astype(np.float32)
    out = loaded.signatures["serving_default"](image=tf.constant(x))
    small = tf.image.resize(x[..., None], (40, 40), method="bicubic", antialias=True).numpy()[..., 0]
    np.testing.assert_allclose(transforms.resize(x, 40).numpy(), small, atol=1e-4)
    prob40 = keras_reference(network, small, "crf")
    back = tf.image.resize(prob40[..., None], (57, 33), method="bilinear", antialias=True).numpy()[..., 0]
    np.testing.assert_allclose(out["probability"].numpy(), back, atol=1e-5)


def test_warmup_requests_and_model_card(model, exported):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    _, path = exported
    loaded = tf.saved_model.load(str(path))
    records = list(tf.data.TFRecordDataset(str(path / "assets.extra" / "tf_serving_warmup_requests")))
    assert len(records) >= 3
    seen = set()
    for rec in records:
        log = prediction_log_pb2.PredictionLog.FromString(rec.numpy())
        req = log.predict_log.request
        sig = req.model_spec.signature_name
        assert req.model_spec.name == "massseg"
        seen.add(sig)
        args = {k: tf.make_ndarray(v) for k, v in req.inputs.items()}
        if sig == "serving_bytes":
            args = {k: tf.constant(list(v.reshape(-1)), tf.string) for k, v in args.items()}
        out = loaded.signatures[sig](**{k: tf.constant(v) for k, v in args.items()})
        if sig.startswith("serving_boxes"):  # the whole-image signatures: per-box and full-image outputs
            from kerasseg.models.whole_image import OUTPUTS

            assert set(out) == set(OUTPUTS) and out["box_size"].shape == (2, 2)
        else:
            assert set(out) == {"probability", "mask", "uncertainty"}
    assert seen == set(savedmodel.SIGNATURES)
    card = json.loads((path / "assets" / "model_card.json").read_text())
    assert card["input_contract"]["model_size"] == 40
    assert card["input_contract"]["final_output"] == "crf"
    assert card["input_contract"]["preprocessing"]["normalization"] == "image"
    assert {"versions", "metrics", "data_hash", "config"} <= set(card)


def _chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def crafted_png(width, height, depth=16):
    """A PNG whose IHDR declares width x height (valid chunk CRCs) with a few rows of pixel data: the
    shape of a decompression bomb (the real one of issue 20 was 249 KB for 16000 x 16000)."""
    import struct
    import zlib

    rows = zlib.compress(b"\0" * 4 * (1 + width * depth // 8))
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, 0))
            + _chunk(b"IDAT", rows) + _chunk(b"IEND", b""))


def _encoded(arr, fmt, **kwargs):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def test_image_header_sizes_match_pil(rng):
    """read_image_header: the (height, width) PIL reads, for PNG, JPEG (baseline, progressive, with an
    APP segment before the frame header) and BMP; nothing decoded."""
    import io

    import tensorflow as tf
    from PIL import Image

    rgb = rng.integers(0, 255, (37, 53, 3), dtype=np.uint8)
    grey16 = rng.integers(0, 65535, (29, 41), dtype=np.uint16)
    cases = [_png(grey16[..., None]), _png(rgb), _encoded(rgb, "JPEG"), _encoded(rgb, "JPEG", progressive=True),
             _encoded(rgb[..., 0], "JPEG", exif=b"Exif\x00\x00" + bytes(300)), _encoded(rgb, "BMP"),
             _encoded(rgb[..., 0], "BMP")]
    for data in cases:
        w, h = Image.open(io.BytesIO(data)).size
        got = savedmodel.read_image_header(tf.constant(data))
        assert (int(got[0]), int(got[1])) == (h, w)
        decoded = savedmodel.decode_image_bytes(tf.constant(data))
        assert decoded.shape == (h, w)
    # a top-down BMP (negative height): TF decodes it, the header gives its size
    bmp = bytearray(_encoded(rgb, "BMP"))
    bmp[22:26] = (-37).to_bytes(4, "little", signed=True)
    assert [int(v) for v in savedmodel.read_image_header(tf.constant(bytes(bmp)))[:2]] == [37, 53]
    # PNG bit depth read from the IHDR: 16-bit values are kept
    np.testing.assert_array_equal(savedmodel.decode_image_bytes(tf.constant(cases[0])).numpy(), grey16)


def _refused(fn, **kwargs):
    import tensorflow as tf

    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        fn(**kwargs)
    msg = info.value.message
    assert msg.isascii() and "\\x" not in msg, msg  # plain text, never the request's bytes
    return msg


def test_bombs_and_junk_bytes_are_refused_before_decoding(exported):
    """issue 20: a small PNG declaring 16000 x 16000 is refused from its header (it used to take 27 s
    and 7.6 GB); junk bytes and bare signatures give a plain-text InvalidArgumentError naming the
    contract (they used to raise UnicodeDecodeError)."""
    import resource

    import tensorflow as tf

    _, path = exported
    sigs = tf.saved_model.load(str(path)).signatures
    bomb = crafted_png(16000, 16000)
    assert len(bomb) < 10_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for fn, kwargs in ((sigs["serving_bytes"], {"image_bytes": tf.constant([bomb])}),
                       (sigs["serving_boxes_bytes"], {"image_bytes": tf.constant(bomb),
                                                      "boxes": tf.constant([[0, 0, 40, 40]], tf.int32)})):
        msg = _refused(fn, **kwargs)
        assert "input image_bytes must hold encoded PNG" in msg
        assert "[PNG] [image declaring height x width =] [16000] [16000]" in msg
        assert f"over the limit of {savedmodel.MAX_PIXELS} pixels (MAX_PIXELS)" in msg
    # the 512 MB the decoder would allocate for 16000 x 16000 x 16 bit never is (kB on Linux)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 256 * 1024
    bmp = bytearray(_encoded(np.zeros((8, 8), np.uint8), "BMP"))
    bmp[18:26] = (20000).to_bytes(4, "little") + (20000).to_bytes(4, "little")
    jpeg = bytearray(_encoded(np.zeros((8, 8), np.uint8), "JPEG"))
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5:sof + 9] = (60000).to_bytes(2, "big") + (60000).to_bytes(2, "big")
    for data, name in ((bytes(bmp), "BMP"), (bytes(jpeg), "JPEG")):
        msg = _refused(sigs["serving_bytes"], image_bytes=tf.constant([data]))
        assert f"[{name}] [image declaring height x width =]" in msg and "MAX_PIXELS" in msg
    junk = {"junk": (b"not an image \xff\xfe\x00\x89", "start with no PNG, JPEG or BMP signature"),
            "empty": (b"", "[0] [bytes that start with no PNG"),
            "PNG signature": (b"\x89PNG\r\n\x1a\n", "truncated or malformed] [PNG] [header (] [8] [bytes)"),
            "PNG cut in the IHDR": (_png(np.zeros((9, 9, 1), np.uint8))[:30], "malformed] [PNG]"),
            "JPEG signature": (b"\xff\xd8", "truncated or malformed] [JPEG]"),
            "JPEG without a frame": (b"\xff\xd8\xff\xe0\x00\x04ab\xff\xda\x00\x02" + bytes(20), "malformed] [JPEG]"),
            "BMP signature": (b"BM", "truncated or malformed] [BMP]")}
    for name, (data, expected) in junk.items():
        msg = _refused(sigs["serving_bytes"], image_bytes=tf.constant([data]))
        assert "input image_bytes must hold encoded PNG (8/16-bit), JPEG or BMP images" in msg, name
        assert expected in msg, (name, msg)


def test_batch_limits(exported):
    import tensorflow as tf

    _, path = exported
    sigs = tf.saved_model.load(str(path)).signatures
    n = savedmodel.MAX_BATCH + 1
    msg = _refused(sigs["serving_default"], image=tf.zeros([n, 8, 8]))
    assert f"1 <= batch <= {savedmodel.MAX_BATCH}" in msg and f"got shape] [{n} 8 8]" in msg
    full = sigs["serving_default"](image=tf.zeros([savedmodel.MAX_BATCH, 8, 8]))
    assert full["mask"].shape[0] == savedmodel.MAX_BATCH
    png = _png(np.zeros((8, 8, 1), np.uint8))
    msg = _refused(sigs["serving_bytes"], image_bytes=tf.constant([png] * n))
    assert f"must hold 1 to {savedmodel.MAX_BATCH} (MAX_BATCH) images; got batch] [{n}]" in msg
    # each image under MAX_PIXELS, the request over it: refused from the headers
    big = crafted_png(6000, 5000, depth=8)
    msg = _refused(sigs["serving_bytes"], image_bytes=tf.constant([big, big]))
    assert "at most 50000000 pixels (MAX_PIXELS) in all; got batch, height, width =] [2] [5000 6000]" in msg


def test_graph_has_only_standard_ops(exported):
    """Every op of every signature (and its functions) is a registered core TF op, none XLA-only."""
    from tensorflow.python.framework import op_def_registry

    _, path = exported
    ops = savedmodel.graph_ops(path)
    assert {"ScaleAndTranslate", "DecodePng"} & ops  # the resize and the bytes decoder are in the graph
    unknown = sorted(op for op in ops if op_def_registry.get(op) is None)
    assert unknown == []
    assert sorted(op for op in ops if op.startswith(("Xla", "_Xla")) or "PyFunc" in op) == []


def _rest_predict(loaded, body_text):
    """What tensorflow_model_server's REST API does with a predict body, on the loaded SavedModel."""
    import tensorflow as tf

    body = json.loads(body_text)
    sig = loaded.signatures[body.get("signature_name", "serving_default")]
    if "instances" in body:  # row format: one instance per batch element
        outs = sig(image=tf.constant(np.asarray(body["instances"], np.float32)))
        outs = {k: v.numpy().tolist() for k, v in outs.items()}
        n = len(body["instances"])
        return {"predictions": [{k: v[i] for k, v in outs.items()} for i in range(n)]}
    outs = sig(image=tf.constant(np.asarray(body["inputs"]["image"], np.float32)))
    return {"outputs": {k: v.numpy().tolist() for k, v in outs.items()}}


def test_rest_body_round_trip(model, exported, rois):
    import tensorflow as tf

    _, path = exported
    loaded = tf.saved_model.load(str(path))
    roi = rois[0][3:40, 0:31]  # a real ROI crop, not at the model size
    body = json.dumps({"instances": [roi.tolist()]})
    resp = json.loads(json.dumps(_rest_predict(loaded, body)))
    assert list(resp) == ["predictions"] and len(resp["predictions"]) == 1
    pred = resp["predictions"][0]
    assert set(pred) == {"probability", "mask", "uncertainty"}
    prob = np.asarray(pred["probability"])
    mask = np.asarray(pred["mask"])
    assert prob.shape == roi.shape and mask.shape == roi.shape
    assert set(np.unique(mask)) <= {0, 1}
    np.testing.assert_array_equal(mask, (prob >= 0.5).astype(int))
    direct = loaded.signatures["serving_default"](image=tf.constant(roi[None]))["probability"].numpy()[0]
    np.testing.assert_allclose(prob, direct, atol=1e-6)  # JSON float round trip keeps the values

    # serving_bytes in REST's column format: {"inputs": {"image_bytes": [{"b64": ...}]}}
    import base64

    png = _png(np.clip(roi, 0, 65535).astype(np.uint16)[..., None])
    body = json.dumps({"signature_name": "serving_bytes",
                       "inputs": {"image_bytes": [{"b64": base64.b64encode(png).decode()}]}})
    req = json.loads(body)["inputs"]["image_bytes"]
    out = loaded.signatures["serving_bytes"](image_bytes=tf.constant([base64.b64decode(r["b64"]) for r in req]))
    ref = loaded.signatures["serving_default"](image=tf.constant(np.clip(roi, 0, 65535).astype(np.uint16)[None].astype(np.float32)))
    np.testing.assert_allclose(out["probability"].numpy(), ref["probability"].numpy(), atol=1e-6)


def test_docs_rest_example_matches_signature():
    doc = _REPO / "docs" / "serving.md"
    text = doc.read_text()
    assert "/v1/models/massseg:predict" in text
    assert '{"instances"' in text and '"predictions"' in text and '"signature_name": "serving_bytes"' in text and '"b64"' in text
    assert "--model_base_path" in text and "tensorflow/serving" in text


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("tensorflow_model_server") is None,
                    reason="tensorflow_model_server binary is not on PATH")
def test_tensorflow_model_server(exported, rois, tmp_path):  # pragma: no cover - needs the binary
    base, _ = exported
    rest, grpc = _free_port(), _free_port()
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(["tensorflow_model_server", f"--port={grpc}", f"--rest_api_port={rest}",
                             "--rest_api_num_threads=2", "--model_name=massseg",
                             f"--model_base_path={base.resolve()}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{rest}/v1/models/massseg"
        for _ in range(120):
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if b"AVAILABLE" in r.read():
                        break
            except OSError:
                pass
            time.sleep(0.5)
        roi = rois[0][:35, :30]
        req = urllib.request.Request(url + ":predict", data=json.dumps({"instances": [roi.tolist()]}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            resp = json.loads(r.read())
        prob = np.asarray(resp["predictions"][0]["probability"])
        assert prob.shape == roi.shape
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_force_swaps_so_a_version_always_exists(model, tmp_path, monkeypatch):
    base = tmp_path / "m"
    first = export_model(model, base, version=1)
    (first / "marker").write_text("old")
    seen = []
    real_exchange = savedmodel._exchange

    def watched(a, b):
        seen.append(b.exists())
        real_exchange(a, b)
        seen.append(b.exists() and not (b / "marker").exists() and (a / "marker").exists())

    monkeypatch.setattr(savedmodel, "_exchange", watched)
    real_rmtree = savedmodel.shutil.rmtree

    def killed(path, *args, **kwargs):  # the process dies right after the swap, before cleaning up
        raise KeyboardInterrupt

    monkeypatch.setattr(savedmodel.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        export_model(model, base, version=1, force=True)
    assert seen == [True, True]
    assert (first / "saved_model.pb").exists() and not (first / "marker").exists()  # the new version
    leftovers = [p for p in base.iterdir() if p.name.startswith(".1.tmp-")]
    assert len(leftovers) == 1
    monkeypatch.setattr(savedmodel.shutil, "rmtree", real_rmtree)
    os.utime(leftovers[0], (time.time() - 3600, time.time() - 3600))
    export_model(model, base)  # the next export cleans the stale leftover
    assert sorted(p.name for p in base.iterdir()) == ["1", "2"]


def test_exchange_swaps_two_folders(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    (b / "x").write_text("b")
    savedmodel._exchange(a, b)
    assert (a / "x").read_text() == "b" and (b / "x").read_text() == "a"
