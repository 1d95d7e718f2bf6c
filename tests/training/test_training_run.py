import numpy as np
import pytest
import yaml

from kerasseg.errors import KerassegError
from kerasseg.models import build_model
from kerasseg.training.run import load_model_source


@pytest.fixture(scope="module")
def tiny_model():
    return build_model("unet", input_size=16, filters=(4, 8), dropout=0.0)


def _position_segmenter(network, train):
    from kerasseg.layers import ImagePreprocessor
    from kerasseg.models import build_segmenter

    pre = ImagePreprocessor(16, enhancement="none", normalization="position", name="preprocessor")
    pre.adapt(train)
    return build_segmenter(network, pre)


def _numpy_position(train, images):
    """Independent float64 reference of the position normalisation fitted on ``train``."""
    t = np.asarray(train, np.float64)
    mean = t.mean(axis=0)
    std = np.maximum(t.std(axis=0), 1e-6)
    return (np.asarray(images, np.float64) - mean) / std


def test_keras_file_of_network_and_of_segmenter(tmp_path, tiny_model):
    from kerasseg.models import get_network, get_preprocessor

    # a .keras file of a bare network: wrapped with the resize-only preprocessor (no normalisation)
    path = tmp_path / "m.keras"
    tiny_model.save(path)
    model, config, run = load_model_source(path)
    assert config == {} and run is None
    pre = get_preprocessor(model)
    assert pre is not None and pre.mode == "none" and pre.enhancement == "none" and pre.size == 16
    x = np.random.default_rng(0).standard_normal((2, 16, 16, 1)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0)["net"], tiny_model.predict(x, verbose=0)["net"],
                               atol=1e-6)

    # a .keras file of a segmenter: its fitted position maps come back with it
    train = np.random.default_rng(1).random((5, 16, 16)).astype("float32") * 1000
    seg = _position_segmenter(tiny_model, train)
    seg_path = tmp_path / "seg.keras"
    seg.save(seg_path)
    loaded, config, run = load_model_source(str(seg_path))
    assert config == {} and run is None
    pre = get_preprocessor(loaded)
    assert pre.mode == "position"
    t = train.astype(np.float64)
    np.testing.assert_allclose(np.asarray(pre.normalize.mean), t.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(pre.normalize.std), np.maximum(t.std(axis=0), 1e-6), rtol=1e-5)
    imgs = np.random.default_rng(2).random((3, 16, 16)).astype("float32") * 1000
    np.testing.assert_allclose(pre.transform(imgs)[..., 0], _numpy_position(train, imgs), atol=1e-4)
    # the loaded segmenter = the network on the reference-normalised input
    ref = tiny_model(_numpy_position(train, imgs).astype(np.float32)[..., None], training=False)["net"]
    np.testing.assert_allclose(np.asarray(loaded(imgs[..., None], training=False)["net"]), np.asarray(ref),
                               atol=1e-5)
    assert get_network(loaded).count_params() == tiny_model.count_params()


def test_run_dir_and_its_model_file(tmp_path, tiny_model):
    from kerasseg.models import get_preprocessor
    from kerasseg.training import load_run

    train = np.random.default_rng(3).random((4, 16, 16)).astype("float32") * 500
    seg = _position_segmenter(tiny_model, train)
    run = tmp_path / "run"
    run.mkdir()
    seg.save(run / "model.keras")
    cfg = {"name": "tiny", "model": {"arch": "unet"}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    model, config = load_run(run)
    assert config == cfg and get_preprocessor(model).mode == "position"
    imgs = np.random.default_rng(4).random((2, 16, 16)).astype("float32") * 500
    want = np.asarray(seg(imgs[..., None], training=False)["net"])
    for src in (run, str(run), run / "model.keras"):
        model, config, run_dir = load_model_source(src)
        assert config == cfg and run_dir == run
        np.testing.assert_allclose(np.asarray(model(imgs[..., None], training=False)["net"]), want, atol=1e-6)
    (run / "config.yaml").write_text("a: [unclosed")
    with pytest.raises(KerassegError, match="config.yaml is not valid YAML"):
        load_run(run)
    (run / "config.yaml").unlink()
    # model.keras without config.yaml: a plain model file
    model, config, run_dir = load_model_source(run / "model.keras")
    assert config == {} and run_dir is None
    with pytest.raises(KerassegError, match="config.yaml is missing"):
        load_run(run)


def test_bad_sources_are_one_line_errors(tmp_path, tiny_model):
    from kerasseg.models import get_network, get_preprocessor
    from kerasseg.training.segmentation_model import SegmentationModel

    with pytest.raises(KerassegError, match="no such run directory or model file"):
        load_model_source(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(KerassegError, match="expected a run directory or a .keras"):
        load_model_source(tmp_path / "notes.txt")
    with pytest.raises(KerassegError, match="no model.keras here"):
        load_model_source(tmp_path)
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    with pytest.raises(KerassegError, match="cannot load model"):
        load_model_source(tmp_path / "broken.keras")
    # an in-memory bare network is wrapped (weights shared), a segmenter is passed through
    model, config, run = load_model_source(tiny_model)
    assert config == {} and run is None
    assert get_network(model) is tiny_model and get_preprocessor(model).mode == "none"
    seg = _position_segmenter(tiny_model, np.random.default_rng(5).random((3, 16, 16)).astype("float32"))
    assert load_model_source(seg)[0] is seg
    # a SegmentationModel training wrapper: its inner model
    model, _, _ = load_model_source(SegmentationModel(seg))
    assert model is seg
