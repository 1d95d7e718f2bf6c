import json

import numpy as np
import pytest

from kerasseg.data.preprocess import Normalizer
from kerasseg.errors import KerassegError
from kerasseg.models import build_model
from kerasseg.training.run import load_model_source


@pytest.fixture(scope="module")
def tiny_model():
    return build_model("unet", input_size=16, filters=(4, 8), dropout=0.0)


def test_keras_file_with_and_without_normalizer(tmp_path, tiny_model):
    path = tmp_path / "m.keras"
    tiny_model.save(path)
    model, norm, config, run = load_model_source(path)
    assert norm is None and config == {} and run is None
    x = np.random.default_rng(0).standard_normal((2, 16, 16, 1)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0)["net"], tiny_model.predict(x, verbose=0)["net"],
                               atol=1e-6)
    fitted = Normalizer("position").fit(np.random.default_rng(1).random((5, 16, 16)).astype("float32"))
    (tmp_path / "normalizer.json").write_text(json.dumps(fitted.get_config()))
    _, norm, _, _ = load_model_source(str(path))
    imgs = np.random.default_rng(2).random((3, 16, 16)).astype("float32")
    np.testing.assert_allclose(norm(imgs), fitted(imgs), atol=1e-6)


def test_bad_sources_are_one_line_errors(tmp_path, tiny_model):
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
    model, norm, _, _ = load_model_source(tiny_model)
    assert model is tiny_model and norm is None
