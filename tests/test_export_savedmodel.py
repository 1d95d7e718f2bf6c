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
from test_export_common import ImageNormalizer, keras_reference, numpy_normalize, tiny_model

# Loads a SavedModel in a process where `import kerasseg` fails, calls both signatures on the
# arrays of an input .npz and writes every output (or the error text) to an output .npz.
BLOCKED_LOADER = r"""
import sys, os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "kerasseg" or name.startswith("kerasseg."):
            raise ImportError("kerasseg is blocked in this process")
        return None
sys.meta_path.insert(0, _Block())
try:
    import kerasseg  # noqa
    sys.exit("kerasseg import was not blocked")
except ImportError:
    pass
import numpy as np, tensorflow as tf
export, inp, outp = sys.argv[1:4]
loaded = tf.saved_model.load(export)
assert not any(m.startswith("kerasseg") for m in sys.modules)
data = dict(np.load(inp))
res = {}
raw = loaded.signatures["raw"](image=tf.constant(data.pop("raw")))
for k, v in raw.items():
    res["raw/" + k] = v.numpy()
for name, x in data.items():
    try:
        out = loaded.signatures["serving_default"](image=tf.constant(x))
        for k, v in out.items():
            res[name + "/" + k] = v.numpy()
    except tf.errors.InvalidArgumentError as exc:
        res[name + "/error"] = np.array(exc.message)
np.savez(outp, **res)
print("OK", sorted(m for m in sys.modules if m.startswith("kerasseg")))
"""


@pytest.fixture(scope="module")
def model():
    return tiny_model(40, crf=True)


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    base = tmp_path_factory.mktemp("serving") / "massseg"
    path = export_model((model, ImageNormalizer()), base)
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

    def broken(module, path):
        real(module, path)  # a complete write, then a crash before the rename
        (Path(path) / "half").write_text("x")
        raise RuntimeError("disk full")

    monkeypatch.setattr(savedmodel, "_write_saved_model", broken)
    base = tmp_path / "m"
    with pytest.raises(RuntimeError, match="disk full"):
        export_model(model, base)
    assert list(base.iterdir()) == []  # neither a version folder nor the temporary one
    assert existing_versions(base) == []


def test_enhancement_without_graph_form_is_rejected(model, tmp_path):
    class Clahe(ImageNormalizer):
        enhancement = "clahe"

    with pytest.raises(KerassegError, match="clahe.*no TF graph form"):
        export_model((model, Clahe()), tmp_path / "m")
    assert not (tmp_path / "m" / "1").exists()


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
    assert {"serving_default", "raw"} <= set(sigs)
    serve = "\n".join(sigs["serving_default"])
    raw = "\n".join(sigs["raw"])
    assert "inputs['image'] tensor_info" in serve and "unknown_rank" in serve
    assert "outputs['probability']" in serve and "outputs['mask']" in serve
    assert "DT_UINT8" in serve and "DT_FLOAT" in serve
    assert "inputs['image']" in raw and "(-1, 40, 40, 1)" in raw
    assert "outputs['net_probability']" in raw and "outputs['crf_probability']" in raw


def test_loads_without_kerasseg_and_matches_keras(model, exported, rois, tmp_path, rng):
    _, path = exported
    x40 = rois[:3].astype(np.float32)
    xraw = numpy_normalize(x40).astype(np.float32)[..., None]
    odd = rng.normal(100, 20, size=(2, 57, 33)).astype(np.float32)
    inp = tmp_path / "in.npz"
    np.savez(inp, raw=xraw, x40=x40, x40c=x40[..., None], odd=odd,
             rank2=x40[0], rank1=x40[0, 0], rank5=x40[None, ..., None], chan3=np.repeat(x40[..., None], 3, axis=-1), empty=np.zeros((1, 0, 5), np.float32))
    script = tmp_path / "load.py"
    script.write_text(BLOCKED_LOADER)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, str(script), str(path), str(inp), str(tmp_path / "out.npz")],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OK []" in proc.stdout
    res = dict(np.load(tmp_path / "out.npz"))

    ref = model(xraw, training=False)
    np.testing.assert_allclose(res["raw/net_probability"], np.asarray(ref["net"]), atol=1e-5)
    np.testing.assert_allclose(res["raw/crf_probability"], np.asarray(ref["crf"]), atol=1e-5)
    # dropout is active in training mode, so this would fail if the export ran in training mode
    assert not np.allclose(np.asarray(model(xraw, training=True)["net"]), res["raw/net_probability"], atol=1e-3)

    expected = keras_reference(model, x40, "crf")
    for key in ("x40", "x40c"):
        prob = res[f"{key}/probability"]
        assert prob.shape == (3, 40, 40) and prob.dtype == np.float32
        np.testing.assert_allclose(prob, expected, atol=1e-5)
        np.testing.assert_array_equal(res[f"{key}/mask"], (prob >= 0.5).astype(np.uint8))
        assert res[f"{key}/mask"].dtype == np.uint8
    m = res["x40/mask"]
    assert 0 < m.sum() < m.size  # non-trivial masks

    assert res["odd/probability"].shape == (2, 57, 33) and res["odd/mask"].shape == (2, 57, 33)
    assert np.all((res["odd/probability"] >= 0) & (res["odd/probability"] <= 1))
    for bad in ("rank2", "rank1", "rank5", "chan3"):
        assert "must be float32 [batch, height, width]" in str(res[f"{bad}/error"])
    assert "height and width must be > 0" in str(res["empty/error"])


def test_any_size_follows_resize_reference(model, exported, rng):
    """serving_default on 57x33 = bicubic resize -> normalise -> model -> bilinear resize back (TF image ops)."""
    import tensorflow as tf

    _, path = exported
    loaded = tf.saved_model.load(str(path))
    x = rng.normal(100, 20, size=(2, 57, 33)).astype(np.float32)
    out = loaded.signatures["serving_default"](image=tf.constant(x))
    small = tf.image.resize(x[..., None], (40, 40), method="bicubic").numpy()[..., 0]
    prob40 = keras_reference(model, small, "crf")
    back = tf.image.resize(prob40[..., None], (57, 33), method="bilinear").numpy()[..., 0]
    np.testing.assert_allclose(out["probability"].numpy(), back, atol=1e-5)


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
    assert set(pred) == {"probability", "mask"}
    prob = np.asarray(pred["probability"])
    mask = np.asarray(pred["mask"])
    assert prob.shape == roi.shape and mask.shape == roi.shape
    assert set(np.unique(mask)) <= {0, 1}
    np.testing.assert_array_equal(mask, (prob >= 0.5).astype(int))
    direct = loaded.signatures["serving_default"](image=tf.constant(roi[None]))["probability"].numpy()[0]
    np.testing.assert_allclose(prob, direct, atol=1e-6)  # JSON float round trip keeps the values

    x = numpy_normalize(rois[:1]).astype(np.float32)[..., None]
    body = json.dumps({"signature_name": "raw", "inputs": {"image": x.tolist()}})
    resp = _rest_predict(loaded, body)
    assert set(resp["outputs"]) == {"net_probability", "crf_probability"}
    net = np.asarray(resp["outputs"]["net_probability"])
    assert net.shape == (1, 40, 40, 2)
    np.testing.assert_allclose(net, np.asarray(model(x, training=False)["net"]), atol=1e-5)


def test_docs_rest_example_matches_signature():
    doc = Path(__file__).resolve().parents[1] / "docs" / "serving.md"
    text = doc.read_text()
    assert "/v1/models/massseg:predict" in text
    assert '{"instances"' in text and '"predictions"' in text and '"signature_name": "raw"' in text
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
