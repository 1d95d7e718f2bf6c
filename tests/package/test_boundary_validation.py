"""Validation at the boundary (issue "Faults and bad input", item 3): bad datasets, non-finite
config numbers, a diverging loss and NaN spacings never pass silently."""

import json

import numpy as np
import pytest

from kerasseg.data.dataset import ROIDataset, load_npz
from kerasseg.errors import KerassegError


def _arrays(n=4, size=40, **over):
    rng = np.random.default_rng(0)
    arrays = {"images": rng.normal(100, 10, (n, size, size)).astype(np.float32),
              "masks": (rng.random((n, size, size)) > 0.5).astype(np.uint8),
              "split": np.array(["train", "train", "val", "test"][:n]),
              "ids": np.array([f"r{i}" for i in range(n)])}
    arrays.update(over)
    return arrays


@pytest.mark.parametrize("bad, match", [
    ({"masks": np.full((4, 40, 40), 0.5)}, "binary"),
    ({"masks": np.full((4, 40, 40), 2, np.uint8)}, "binary"),
    ({"images": np.zeros((4, 40, 40), np.complex64)}, "real numbers"),
    ({"images": np.zeros((4, 40, 32), np.float32), "masks": np.zeros((4, 40, 32), np.uint8)}, "square"),
    ({"spacing_mm": np.array([0.1, -0.1, 0.1, 0.1])}, "spacing_mm must be > 0"),
    ({"spacing_mm": np.array([0.1, np.inf, 0.1, 0.1])}, "spacing_mm must be > 0"),
])
def test_bad_dataset_files_are_refused_naming_the_file(bad, match, tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, **_arrays(**bad))
    with pytest.raises(KerassegError, match=match) as exc:
        load_npz(path)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_fractional_mask_is_not_truncated_to_zero():
    # the old cast turned 0.5 into 0 and training then reported Dice 1.0 on empty masks
    with pytest.raises(KerassegError, match="binary"):
        ROIDataset(**_arrays(masks=np.full((4, 40, 40), 0.5)))
    ok = ROIDataset(**_arrays(masks=np.ones((4, 40, 40), bool)))
    assert ok.masks.dtype == np.uint8 and ok.masks.min() == 1


def test_nan_spacing_means_unknown_and_metrics_json_stays_valid(tmp_path):
    from kerasseg.evaluation.report import evaluate_arrays

    ds = ROIDataset(**_arrays(spacing_mm=np.array([0.1, np.nan, 0.1, 0.1])))
    prob = ds.masks.astype(np.float32) * 0.9
    evaluate_arrays(prob, ds.masks, ds.ids, tmp_path / "rep", images=ds.images, spacing_mm=ds.spacing_mm,
                    figures=False, verbose=False)

    def refuse(const):
        raise AssertionError(f"invalid JSON constant {const}")

    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text(), parse_constant=refuse)
    assert metrics["n"] == 4


@pytest.mark.parametrize("key, value", [("learning_rate", ".inf"), ("epsilon", ".inf"), ("learning_rate", ".nan")])
def test_non_finite_config_numbers_are_refused(key, value, tmp_path):
    from kerasseg.config import resolve_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"extends: crunet-unet\ntrain: {{{key}: {value}}}\n")
    with pytest.raises(KerassegError, match=f"train.{key}") as exc:
        resolve_config(str(cfg))
    assert str(cfg) in str(exc.value)


def test_a_nan_loss_stops_training_and_no_nan_model_is_saved(tmp_path, monkeypatch):
    import tensorflow as tf

    from kerasseg.data.dataset import save_npz
    from kerasseg.data.phantom import make_phantom
    from kerasseg.training import fit, losses

    data = save_npz(make_phantom(n_train=4, n_val=2, n_test=0, seed=2), tmp_path / "d.npz")
    real = losses.per_example_loss

    def nan_loss(*args, **kwargs):
        return real(*args, **kwargs) * tf.constant(float("nan"))

    monkeypatch.setattr(losses, "per_example_loss", nan_loss)
    with pytest.raises(KerassegError, match="training diverged: the loss is nan at epoch 1"):
        fit("crunet-unet", data=str(data), out_dir=tmp_path / "run", epochs=2, verbose=0)
    assert not (tmp_path / "run" / "model.keras").exists()
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "running"  # never "finished"


def test_resume_with_other_data_is_refused(tmp_path):
    from kerasseg.data.dataset import save_npz
    from kerasseg.data.phantom import make_phantom
    from kerasseg.training import fit

    a = save_npz(make_phantom(n_train=4, n_val=2, n_test=0, seed=2), tmp_path / "a.npz")
    b = save_npz(make_phantom(n_train=4, n_val=2, n_test=0, seed=3), tmp_path / "b.npz")
    run = tmp_path / "run"
    fit("crunet-unet", data=str(a), out_dir=run, epochs=1, verbose=0)
    info = json.loads((run / "run.json").read_text())
    info["status"] = "interrupted"            # as a killed run leaves it: a backup and run.json
    (run / "run.json").write_text(json.dumps(info))
    (run / "backup").mkdir()
    with pytest.raises(KerassegError, match="unfinished run on other data") as exc:
        fit("crunet-unet", data=str(b), out_dir=run, epochs=1, verbose=0)
    assert str(run) in str(exc.value)


def test_a_fresh_run_records_its_data_before_training(tmp_path, monkeypatch):
    from kerasseg.data.dataset import load_npz, save_npz
    from kerasseg.data.phantom import make_phantom
    from kerasseg.training import fit, losses

    a = save_npz(make_phantom(n_train=4, n_val=2, n_test=0, seed=2), tmp_path / "a.npz")
    def crash(*args, **kwargs):  # the process dies in the first step
        raise RuntimeError("crash")

    monkeypatch.setattr(losses, "per_example_loss", crash)
    with pytest.raises(RuntimeError, match="crash"):
        fit("crunet-unet", data=str(a), out_dir=tmp_path / "run", epochs=1, verbose=0)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "running" and info["data_hash"] == load_npz(a).data_hash()


def test_a_torn_first_checkpoint_does_not_block_the_run(tmp_path):
    """Issue repro: `mkdir -p r/backup && : > r/backup/latest.weights.h5 && kerasseg fit ...` failed forever."""
    from kerasseg.data.dataset import save_npz
    from kerasseg.data.phantom import make_phantom
    from kerasseg.training import fit

    a = save_npz(make_phantom(n_train=4, n_val=2, n_test=0, seed=2), tmp_path / "a.npz")
    run = tmp_path / "r"
    (run / "backup").mkdir(parents=True)
    (run / "backup" / "latest.weights.h5").write_bytes(b"")
    with pytest.warns(Warning, match="torn"):
        res = fit("crunet-unet", data=str(a), out_dir=run, epochs=1, verbose=0)
    assert res.status == "finished" and (run / "model.keras").is_file()
