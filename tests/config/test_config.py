"""Config files: the 13 table rows, paper hyper-parameters, validation errors."""

import re

import pytest

from kerasseg.layers.crf import MODES as CRF_MODES  # the CRF layer's own list

from kerasseg.config import apply_dataset, list_configs, resolve_config, to_yaml
from kerasseg.errors import KerassegError

ROWS = ["crunet-l067", "crunet-l0", "crunet-l1", "crunet-nor-l067", "crunet-unet",
        "zhu-fcn", "zhu-adv-fcn", "zhu-fcn-crf", "zhu-adv-fcn-crf", "zhu-multifcn",
        "zhu-adv-multifcn", "zhu-multifcn-crf", "zhu-adv-multifcn-crf"]
#: not rows of the papers: the same models trained with box jitter (issue "Any box")
ANYBOX = ["crunet-l067-anybox", "crunet-unet-anybox"]


def test_all_rows_shipped():
    assert sorted(list_configs()) == sorted(ROWS + ANYBOX)


@pytest.mark.parametrize("name", ROWS)
def test_paper_hyperparameters(name):
    ib = resolve_config(name, dataset="inbreast")
    dd = resolve_config(name, dataset="ddsm")
    assert ib["train"]["optimizer"] == "adam"
    if name.startswith("zhu"):   # Zhu et al. use no dropout; the FCNs take no dropout/kernel_size
        assert "dropout" not in ib["model"] and "kernel_size" not in ib["model"]
        assert "filters" not in ib["model"]
    else:
        assert ib["model"]["dropout"] == 0.5 and "fcn_variant" not in ib["model"]
    if ib["crf"] is not None:
        assert ib["crf"]["iterations_train"] == 5 and ib["crf"]["iterations_test"] == 10
    if name.startswith("zhu"):
        assert ib["train"]["learning_rate"] == 0.003
        assert ib["train"]["epsilon"] == 0.1 and dd["train"]["epsilon"] == 0.5
        assert ib["train"]["adversarial"] == ("-adv-" in name)
        assert ib["model"]["arch"] == ("multifcn" if "multifcn" in name else "fcn")
        assert ib["model"]["position_prior"] is True
        assert (ib["crf"] is not None) == name.endswith("-crf")
    else:
        assert ib["model"]["kernel_size"] == 3 and dd["model"]["kernel_size"] == 7
        lam = {"crunet-l067": 0.67, "crunet-l0": 0.0, "crunet-l1": 1.0, "crunet-nor-l067": 0.67,
               "crunet-unet": 0.0}[name]
        assert ib["loss"]["lambda"] == lam
        assert ib["model"]["arch"] == ("unet" if name in ("crunet-unet", "crunet-nor-l067") else "resunet")
        assert (ib["crf"] is None) == (name == "crunet-unet")


def write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_unknown_key_suggests_closest(tmp_path):
    with pytest.raises(KerassegError, match=r"unknown key 'modle'.*did you mean 'model'.*valid keys") as e:
        resolve_config(write(tmp_path, "extends: crunet-l067\nmodle: {arch: unet}\n"))
    assert str(tmp_path / "c.yaml") in str(e.value)
    with pytest.raises(KerassegError, match=r"train\.'learning_rat'.*did you mean 'learning_rate'"):
        resolve_config(write(tmp_path, "train: {learning_rat: 0.1}\n"))
    with pytest.raises(KerassegError, match=r"datasets\.inbreast\.train\.'epsilom'.*'epsilon'"):
        resolve_config(write(tmp_path, "datasets: {inbreast: {train: {epsilom: 0.1}}}\n"))
    with pytest.raises(KerassegError, match=r"unknown config 'crunet-l67'.*'crunet-l067'"):
        resolve_config("crunet-l67")


@pytest.mark.parametrize("text,msg", [
    ("loss: {lambda: 1.5}\ncrf: {}", r"loss\.lambda must be in \[0, 1\], got 1\.5"),
    ("loss: {lambda: -0.1}\ncrf: {}", r"loss\.lambda must be in \[0, 1\]"),
    ("train: {epsilon: -0.1}", r"train\.epsilon must be >= 0"),
    ("train: {learning_rate: 0}", r"train\.learning_rate must be > 0"),
    ("model: {dropout: 1.0}", r"model\.dropout must be in \[0, 1\)"),
    ("train: {batch_size: two}", r"train\.batch_size must be an integer"),
    ("model: {arch: vgg}", r"model\.arch must be one of"),
    ("loss: {lambda: 0.5}", r"no crf section"),
    ("datasets: {ddsm: {train: {epsilon: -1}}}", r"datasets\.ddsm\.train\.epsilon must be >= 0"),
    ("model: [1, 2", r"not valid YAML"),
    ("train: {jit_compile: 1}", r"train\.jit_compile must be true or false"),
    ("crf: {mode: fastest}", r"crf: mode='fastest' is unknown; use one of " + re.escape(str(list(CRF_MODES)))),
    ("crf: {theta_beta: -1}", r"crf: theta_beta=-1 must be a positive number"),
    ("crf: {kernels: [spatial, colour]}", r"crf: kernels=.*invalid"),
])
def test_out_of_range_values(tmp_path, text, msg):
    path = write(tmp_path, text + "\n")
    with pytest.raises(KerassegError, match=msg) as err:
        resolve_config(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)  # one line naming the file


def test_extends_and_dataset_override(tmp_path):
    write(tmp_path, "extends: zhu-adv-fcn\ntrain: {batch_size: 4}\n", "mine.yaml")
    cfg = resolve_config(tmp_path / "mine.yaml", dataset="ddsm")
    assert cfg["train"]["batch_size"] == 4 and cfg["train"]["epsilon"] == 0.5
    assert cfg["train"]["adversarial"] is True and cfg["dataset"] == "ddsm"
    flat = apply_dataset(resolve_config("crunet-l067"), None)
    assert "datasets" not in flat and flat["model"]["kernel_size"] == 3
    # the resolved YAML round-trips to the same config
    again = resolve_config(write(tmp_path, to_yaml(flat), "flat.yaml"))
    again.pop("_path"), again.pop("datasets")
    assert again == flat
    with pytest.raises(KerassegError, match="dataset 'ddms'.*did you mean 'ddsm'"):
        apply_dataset(resolve_config("crunet-l067"), "ddms")


@pytest.mark.parametrize("text,key,arch", [
    ("model: {arch: fcn, dropout: 0.5}", "dropout", "fcn"),
    ("model: {arch: multifcn, kernel_size: 3}", "kernel_size", "multifcn"),
    ("model: {arch: unet, fcn_variant: 2}", "fcn_variant", "unet"),
    ("extends: zhu-fcn\nmodel: {filters: [4, 8]}", "filters", "fcn"),
    ("extends: zhu-fcn\ndatasets: {ddsm: {model: {dropout: 0.1}}}", "dropout", "fcn"),
])
def test_inapplicable_model_key_is_one_line_error(tmp_path, text, key, arch):
    path = write(tmp_path, text + "\n")
    with pytest.raises(KerassegError, match=rf"model\.{key} does not apply to arch '{arch}'") as err:
        resolve_config(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_overlay_changing_arch_takes_that_archs_options(tmp_path):
    path = write(tmp_path, "extends: zhu-fcn\ndatasets: {ddsm: {model: {arch: unet, kernel_size: 7}}}\n")
    cfg = resolve_config(path, dataset="ddsm")
    assert cfg["model"]["arch"] == "unet" and cfg["model"]["kernel_size"] == 7
    assert "fcn_variant" not in cfg["model"] and cfg["model"]["dropout"] == 0.5


def test_choices_come_from_the_registries():
    import kerasseg.config as c
    from kerasseg.layers import crf as crf_module
    from kerasseg.layers.crf import CRFRNN
    from kerasseg.layers.preprocessing import ENHANCEMENTS, NORMALIZATIONS
    from kerasseg.models.registry import ARCH_OPTIONS

    ch = c.CHOICES
    assert ch[("model", "arch")] == tuple(ARCH_OPTIONS) == c.ARCHS
    assert ch[("data", "enhancement")] == tuple(ENHANCEMENTS)
    assert ch[("data", "normalization")] == tuple(NORMALIZATIONS)
    assert set(crf_module.MODES) <= set(ch[("crf", "mode")])
    # every architecture option is a model key with the registry's default
    for opts in ARCH_OPTIONS.values():
        for key, value in opts.items():
            want = list(value) if isinstance(value, tuple) else value
            assert c.DEFAULTS["model"][key] == want
    for arch, opts in ARCH_OPTIONS.items():
        cfg = resolve_config({"model": {"arch": arch}})
        assert set(cfg["model"]) == {"arch", "position_prior"} | set(opts)
    # a crf key the layer does not take is refused; every constructor argument is accepted
    import inspect
    params = [k for k, v in inspect.signature(CRFRNN.__init__).parameters.items()
              if k not in ("self", "name", "dtype", "trainable") and v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL)]
    assert params and all(k in c.schema.crf_valid_keys() for k in params)
    with pytest.raises(KerassegError, match=r"unknown key crf\.'no_such_option'"):
        resolve_config({"crf": {"no_such_option": 1}})


def test_import_config_does_not_start_tensorflow():
    import subprocess
    import sys

    code = "import sys, kerasseg.config as c; c.list_configs(); print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr[-500:]


def test_kerasseg_error_is_a_value_error():
    err = KerassegError("bad value", path="x.yaml")
    assert isinstance(err, ValueError) and str(err) == "x.yaml: bad value"
    with pytest.raises(ValueError, match="x.yaml: bad value"):
        raise err
