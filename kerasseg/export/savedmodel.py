"""Export a trained model as a TF Serving SavedModel.

The exported folder follows TF Serving's layout ``BASE/NAME/<version>/`` (``saved_model.pb``,
``variables/``, ``assets/``) and holds two signatures built from core TF ops only, so a stock
``tensorflow_model_server`` (no Python, no kerasseg) serves it:

``serving_default``
    input ``image`` float32 ``[batch, height, width]`` (a trailing channel axis of size 1 is
    accepted too) of ROI crops of any size. In the graph: bicubic resize to the model size, the
    run's normalisation (``image``/``position``/``none``), the network (+ CRF with its inference
    iteration count) in inference mode, the final mass probability resized back (bilinear).
    Outputs ``probability`` float32 ``[batch, height, width]`` and ``mask`` uint8 (probability >= 0.5).
``raw``
    input ``image`` float32 ``[batch, S, S, 1]`` already normalised at the model size ``S``;
    outputs ``net_probability`` and (with a CRF) ``crf_probability``, float32 ``[batch, S, S, 2]``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path


from kerasseg.errors import KerassegError

_GRAPH_MODES = ("image", "position", "none")


# --------------------------------------------------------------------------- loading
def _normalizer_mode(normalizer) -> tuple[str, str]:
    """(mode, enhancement) of a Normalizer (attributes or its config)."""
    if normalizer is None:
        return "none", "none"
    cfg = {}
    if hasattr(normalizer, "get_config"):
        try:
            cfg = dict(normalizer.get_config())
        except Exception:  # noqa: BLE001 - fall back to attributes
            cfg = {}
    mode = getattr(normalizer, "mode", cfg.get("mode", "none"))
    enh = getattr(normalizer, "enhancement", cfg.get("enhancement", "none"))
    return str(mode), str(enh if enh is not None else "none")


def check_graph_normalizer(normalizer, source=None) -> None:
    """Raise :class:`KerassegError` if the normaliser cannot be written as TF graph ops."""
    mode, enh = _normalizer_mode(normalizer)
    if enh not in ("none", "", "None"):
        raise KerassegError(
            f"the run's enhancement {enh!r} has no TF graph form, so it cannot be exported for "
            "TF Serving; retrain with enhancement: none (or apply it client-side and use the 'raw' signature)",
            source,
        )
    if mode not in _GRAPH_MODES:
        raise KerassegError(f"normalisation mode {mode!r} cannot be exported (allowed: {list(_GRAPH_MODES)})", source)
    if mode != "none" and not hasattr(normalizer, "tf_normalize"):
        raise KerassegError(f"normaliser {type(normalizer).__name__} has no tf_normalize(); cannot export", source)


def load_source(source):
    """Resolve ``source`` into ``(model, normalizer)``.

    ``source`` is a keras.Model, a ``(model, normalizer)`` pair, a training run directory
    (``kerasseg.training.load_run``) or a ``.keras`` file (its sibling ``normalizer.json``, if any,
    gives the normaliser; otherwise no normalisation).
    """
    import keras

    from kerasseg.training.run import load_model_source

    if isinstance(source, (tuple, list)) and len(source) == 2 and isinstance(source[0], keras.Model):
        return source[0], source[1]
    model, normalizer, _config, _run = load_model_source(source)
    if normalizer is None and not isinstance(source, keras.Model):
        from kerasseg.errors import warn

        warn("no normalizer.json beside the model: exporting without normalisation", source)
    return model, normalizer


def model_size(model) -> int:
    """The square input size S of a Contract-3 model."""
    shape = model.input_shape
    if isinstance(shape, dict):
        shape = next(iter(shape.values()))
    if isinstance(shape, list):
        shape = shape[0]
    if len(shape) != 4 or shape[3] != 1 or shape[1] is None or shape[1] != shape[2]:
        raise KerassegError(f"model input must be (batch, S, S, 1), got {tuple(shape)}")
    return int(shape[1])


# --------------------------------------------------------------------------- the serving module
def build_serving_module(model, normalizer=None, source=None):
    """A ``tf.Module`` with ``serving_default`` and ``raw`` tf.functions around ``model``."""
    import tensorflow as tf

    check_graph_normalizer(normalizer, source)
    size = model_size(model)
    mode, _ = _normalizer_mode(normalizer)

    class SegmentationServing(tf.Module):
        def __init__(self):
            super().__init__(name="kerasseg_serving")
            self.model = model
            self.size = size

        def _normalize(self, x):  # x (B, S, S)
            if mode == "none":
                return x
            return tf.cast(normalizer.tf_normalize(x), tf.float32)

        def _outputs(self, x4):
            out = self.model(x4, training=False)
            if not isinstance(out, dict):
                out = {"net": out}
            return out

        @tf.function(input_signature=[tf.TensorSpec(shape=[None, size, size, 1], dtype=tf.float32, name="image")])
        def raw(self, image):
            out = self._outputs(image)
            result = {"net_probability": tf.cast(out["net"], tf.float32)}
            if "crf" in out:
                result["crf_probability"] = tf.cast(out["crf"], tf.float32)
            return result

        @tf.function(input_signature=[tf.TensorSpec(shape=None, dtype=tf.float32, name="image")])
        def serve(self, image):
            shape = tf.shape(image)
            rank = tf.rank(image)
            ok = tf.logical_or(
                tf.equal(rank, 3),
                tf.logical_and(tf.equal(rank, 4), tf.equal(tf.reduce_prod(shape[3:]), 1)),
            )
            check = tf.debugging.Assert(
                ok,
                ["kerasseg: 'image' must be float32 [batch, height, width] or [batch, height, width, 1]; got shape",
                 shape],
            )
            with tf.control_dependencies([check]):
                x = tf.reshape(image, shape[:3])
            x = tf.ensure_shape(x, [None, None, None])
            hw = tf.shape(x)[1:3]  # computed after the rank check, so it always has 2 elements
            nonempty = tf.debugging.Assert(
                tf.reduce_all(hw > 0), ["kerasseg: 'image' height and width must be > 0; got shape", shape]
            )
            with tf.control_dependencies([nonempty]):
                x = tf.identity(x)
            x4 = x[..., tf.newaxis]
            target = tf.constant([size, size], tf.int32)
            same = tf.reduce_all(tf.equal(hw, target))
            x4 = tf.cond(
                same,
                lambda: x4,
                lambda: tf.image.resize(x4, target, method="bicubic"),
            )
            x4 = tf.ensure_shape(x4, [None, size, size, 1])
            xn = self._normalize(x4[..., 0])[..., tf.newaxis]
            out = self._outputs(xn)
            key = "crf" if "crf" in out else "net"
            prob = tf.cast(out[key][..., 1:2], tf.float32)
            prob = tf.cond(
                same,
                lambda: prob,
                lambda: tf.image.resize(prob, hw, method="bilinear"),
            )
            prob = tf.clip_by_value(prob[..., 0], 0.0, 1.0)
            mask = tf.cast(prob >= 0.5, tf.uint8)
            return {"probability": prob, "mask": mask}

    return SegmentationServing()


# --------------------------------------------------------------------------- versions and writing
_VERSION_RE = re.compile(r"^\d+$")


def existing_versions(base: Path) -> list[int]:
    """Numeric version folders under ``base`` (TF Serving's layout), sorted."""
    base = Path(base)
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and _VERSION_RE.match(p.name))


def _write_saved_model(module, path: Path) -> None:
    """Write ``module`` as a SavedModel at ``path`` (separated out so tests can inject failures)."""
    import tensorflow as tf

    signatures = {
        "serving_default": module.serve.get_concrete_function(),
        "raw": module.raw.get_concrete_function(),
    }
    tf.saved_model.save(module, str(path), signatures=signatures)
    (path / "assets").mkdir(exist_ok=True)


def export_model(source, out, version: int | None = None, force: bool = False) -> Path:
    """Export ``source`` (run dir, ``.keras`` file, keras.Model or (model, normalizer)) to ``out/<version>``.

    ``version`` defaults to the highest existing version + 1 (1 for a new folder). The SavedModel is
    written to a temporary folder beside the target and renamed into place, so a polling server never
    sees a half-written version. An existing version is only replaced with ``force=True``.
    Returns the version folder.
    """
    base = Path(out)
    if base.exists() and not base.is_dir():
        raise KerassegError("export destination exists and is not a folder", base)
    if version is None:
        found = existing_versions(base)
        version = (found[-1] + 1) if found else 1
    try:
        version = int(version)
    except (TypeError, ValueError):
        raise KerassegError(f"version must be a positive integer, got {version!r}") from None
    if version < 1:
        raise KerassegError(f"version must be a positive integer, got {version}")
    target = base / str(version)
    if target.exists() and not force:
        raise KerassegError("version already exists; use --force to overwrite it", target)

    model, normalizer = load_source(source)
    module = build_serving_module(model, normalizer, source=None if not isinstance(source, (str, Path)) else source)

    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=base))
    try:
        _write_saved_model(module, tmp / "model")
        if target.exists():  # force
            old = Path(tempfile.mkdtemp(prefix=f".{version}.old-", dir=base))
            os.replace(target, old / "v")
            os.replace(tmp / "model", target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp / "model", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# --------------------------------------------------------------------------- loading an export
def find_export(path) -> Path | None:
    """The SavedModel folder for ``path`` (a version folder, or BASE/NAME -> highest version), else None."""
    path = Path(path)
    if (path / "saved_model.pb").exists():
        return path
    versions = existing_versions(path)
    for v in reversed(versions):
        if (path / str(v) / "saved_model.pb").exists():
            return path / str(v)
    return None
