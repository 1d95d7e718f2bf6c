"""The registries of kerasseg.models.registry: an architecture or an optimizer is added in one place,
and configs, build_model and training read it from there."""

import numpy as np
import pytest

from kerasseg.errors import KerassegError


def _build_toy(image, *, size, prior, with_crf, width):
    """A toy network: one convolution of ``width`` filters, then 1x1 logits."""
    from keras import layers

    from kerasseg.models.registry import softmax_output

    x = layers.Conv2D(width, 3, padding="same", activation="relu", name="toy_conv")(image)
    return softmax_output(layers.Conv2D(2, 1, name="toy_logits")(x), prior)


@pytest.fixture
def toy_arch():
    from kerasseg.models import registry

    registry.register_arch("toy", build=_build_toy, options={"width": 3}, composites=("toy_crf",))
    try:
        yield registry
    finally:
        registry.unregister_arch("toy")
    assert "toy" not in registry.ARCH_OPTIONS and "toy_crf" not in registry.list_archs()


def test_a_registered_architecture_is_a_config_choice_and_builds(toy_arch):
    from kerasseg.config import resolve_config
    from kerasseg.config.schema import choices
    from kerasseg.training import build_training_model

    assert "toy" in choices()[("model", "arch")] and {"toy", "toy_crf"} <= set(toy_arch.list_archs())
    # the config's model keys are the registry's options, with its defaults
    assert resolve_config({"model": {"arch": "toy"}})["model"] == {"arch": "toy", "position_prior": False,
                                                                   "width": 3}
    with pytest.raises(KerassegError, match="does not apply"):
        resolve_config({"model": {"arch": "toy", "dropout": 0.1}})
    cfg = resolve_config({"name": "t", "model": {"arch": "toy", "width": 5, "position_prior": True}})
    prior = np.full((16, 16), 0.25, np.float32)
    model = build_training_model(cfg, 16, prior)
    net = model.net
    assert net.get_layer("toy_conv").filters == 5 and net.get_layer("prior") is not None
    out = net(np.zeros((2, 16, 16, 1), np.float32))
    assert sorted(out) == ["net"] and tuple(out["net"].shape) == (2, 16, 16, 2)
    np.testing.assert_allclose(np.asarray(out["net"]).sum(-1), 1.0, atol=1e-5)
    # the composite name adds the CRF on the toy's logits
    crf_model = toy_arch.build_model("toy_crf", input_size=16, width=2)
    assert sorted(crf_model(np.zeros((1, 16, 16, 1), np.float32))) == ["crf", "net"]
    with pytest.raises(KerassegError, match="unknown option"):
        toy_arch.build_model("toy", input_size=16, depth=2)


def test_optimizer_choices_are_the_registry():
    import keras

    from kerasseg.config import resolve_config
    from kerasseg.config import schema
    from kerasseg.models import registry
    from kerasseg.training import build_training_model

    assert schema.choices()[("train", "optimizer")] == tuple(registry.OPTIMIZERS) == schema.OPTIMIZERS
    assert {"adam", "sgd", "rmsprop"} <= set(registry.OPTIMIZERS)
    registry.register_optimizer("toy_sgd", keras.optimizers.SGD)
    try:
        assert "toy_sgd" in schema.OPTIMIZERS
        cfg = resolve_config({"name": "t", "model": {"arch": "unet", "filters": [4, 8]},
                              "train": {"optimizer": "toy_sgd", "learning_rate": 0.05}})
        model = build_training_model(cfg, 16)
        assert isinstance(model.optimizer, keras.optimizers.SGD)
        assert float(model.optimizer.learning_rate) == pytest.approx(0.05)
    finally:
        registry.unregister_optimizer("toy_sgd")
    assert "toy_sgd" not in schema.OPTIMIZERS
    with pytest.raises(KerassegError, match="must be one of"):
        resolve_config({"train": {"optimizer": "toy_sgd"}})
