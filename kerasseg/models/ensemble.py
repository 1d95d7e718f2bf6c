"""Ensembles and test-time augmentation (TTA) as one inference graph.

nnU-Net predicts with the ensemble of its K cross-validation folds and mirroring TTA, then applies
the post-processing the cross-validation chose. :func:`ensemble_function` is that graph for kerasseg
segmenters, a ``tf.function`` of raw crops like :func:`kerasseg.models.segmenter.segment_function`
(which it equals exactly for one member, no TTA and no post-processing):

1. the raw crops (B, h, w) are resized ONCE to the model size S with the members' own resize
   (:func:`kerasseg.data.transforms.resize`, bicubic); each member's ``Resize`` layer is then the
   identity (the same op returns its input at S);
2. the T transforms of :data:`TTA_MODES` are applied in that S x S space and stacked along the
   batch axis (T*B images);
3. every member runs once on the stacked batch (inference mode; its enhancement, normalisation,
   network and CRF), its final mass probability is taken;
4. each transform is undone, and the M*T maps are reduced to their mean (``probability``) and
   population standard deviation (``uncertainty``);
5. both are resized back to (h, w) (bilinear, as segment_function) and clipped to [0, 1]
   (uncertainty to [0, 0.5], the largest std of values in [0, 1]); ``mask`` is the one threshold
   (:func:`kerasseg.layers.postprocessing.binarize`) of the probability, then the optional
   post-processing (:func:`kerasseg.layers.postprocessing.postprocess`) at the crop size.
"""

from __future__ import annotations

from kerasseg.errors import KerassegError

#: test-time augmentation modes: the identity only; the 4 flips (identity, h, v, hv); the 8
#: symmetries of the square (the flips and the same after a transpose)
TTA_MODES = ("none", "flips", "dihedral")

#: every transform as (transpose, flip rows (v), flip columns (h)); applied as transpose, then flips
DIHEDRAL = ((False, False, False), (False, False, True), (False, True, False), (False, True, True),
            (True, False, False), (True, False, True), (True, True, False), (True, True, True))
_TTA_COUNT = {"none": 1, "flips": 4, "dihedral": 8}


def tta_transforms(tta: str) -> tuple:
    """The transforms of a TTA mode (a prefix of :data:`DIHEDRAL`); KerassegError for an unknown mode."""
    if tta not in TTA_MODES:
        raise KerassegError(f"unknown TTA mode {tta!r}; choose one of {list(TTA_MODES)}")
    return DIHEDRAL[:_TTA_COUNT[tta]]


def apply_transform(x, transform):
    """Apply one transform of :data:`DIHEDRAL` to square images (B, S, S) (tensor or NumPy)."""
    import tensorflow as tf

    transpose, flip_v, flip_h = transform
    if transpose:
        x = tf.transpose(x, [0, 2, 1])
    if flip_v:
        x = tf.reverse(x, [1])
    if flip_h:
        x = tf.reverse(x, [2])
    return x


def undo_transform(x, transform):
    """The inverse of :func:`apply_transform`: the flips first (each its own inverse), then the transpose."""
    import tensorflow as tf

    transpose, flip_v, flip_h = transform
    if flip_h:
        x = tf.reverse(x, [2])
    if flip_v:
        x = tf.reverse(x, [1])
    if transpose:
        x = tf.transpose(x, [0, 2, 1])
    return x


def _check_postprocessing(postprocessing) -> dict:
    known = ("largest_component", "fill_holes")
    pp = dict(postprocessing or {})
    unknown = sorted(set(pp) - set(known))
    if unknown:
        raise KerassegError(f"unknown post-processing step(s) {unknown}; known: {list(known)}")
    for k in known:
        if not isinstance(pp.get(k, False), bool):
            raise KerassegError(f"post-processing {k} must be true or false, got {pp[k]!r}")
    return {k: bool(pp.get(k, False)) for k in known}


def ensemble_function(members, tta: str = "none", postprocessing: dict | None = None):
    """The ensemble + TTA + post-processing inference graph, as a ``tf.function`` of raw crops.

    Args:
        members: one segmenter or a list of them (``keras.Model``; bare networks are wrapped with
            the resize-only preprocessor, as :func:`kerasseg.models.segmenter.as_segmenter`). All
            must compute at the same model size S.
        tta: one of :data:`TTA_MODES`.
        postprocessing: ``{"largest_component": bool, "fill_holes": bool}`` (missing keys are
            False; ``None``: none), applied to the thresholded mask at the crop size.

    Input shape:
        ``image`` float32 ``(batch, height, width)``: raw ROI crops, any size.

    Output shape:
        a dict: ``probability`` float32 ``(batch, height, width)`` (mean over members x
        transforms of the mass probability), ``mask`` uint8 (thresholded, post-processed) and
        ``uncertainty`` float32 (the population standard deviation over members x transforms).

    Example:

    >>> fn = ensemble_function([model_a, model_b], tta="flips")
    >>> out = fn(tf.constant(crops))           # crops float32 (B, h, w)
    >>> out["probability"], out["mask"], out["uncertainty"]
    """
    import keras
    import tensorflow as tf

    from kerasseg.data import transforms
    from kerasseg.layers.postprocessing import postprocess
    from kerasseg.models.registry import final_key
    from kerasseg.models.segmenter import as_segmenter, get_preprocessor, model_size, quiet_own_retracing
    from kerasseg.layers.postprocessing import binarize

    if isinstance(members, keras.Model):
        members = [members]
    members = list(members)
    if not members:
        raise KerassegError("an ensemble needs at least one member model")
    for m in members:
        if not isinstance(m, keras.Model):
            raise KerassegError(f"ensemble members must be Keras models, got {type(m).__name__}")
    members = [as_segmenter(m) for m in members]
    keys = [final_key(m) for m in members]
    sizes = [model_size(m) for m in members]
    if len(set(sizes)) != 1:
        raise KerassegError(f"ensemble members must share one model size, got sizes {sizes}")
    size = sizes[0]
    methods = {get_preprocessor(m).resize.interpolation for m in members}
    if len(methods) != 1:
        raise KerassegError(f"ensemble members must share one resize interpolation, got {sorted(methods)}")
    method = methods.pop()
    tfs = tta_transforms(tta)
    post = _check_postprocessing(postprocessing)
    n_maps = len(members) * len(tfs)

    quiet_own_retracing()

    @tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.float32, name="image")])
    def ensemble(image):
        hw = tf.shape(image)[1:3]
        batch = tf.shape(image)[0]
        x = tf.ensure_shape(transforms.resize(image, size, method=method), [None, size, size])
        stacked = tf.concat([apply_transform(x, t) for t in tfs], axis=0) if len(tfs) > 1 else x
        maps = []
        for model, key in zip(members, keys):
            out = model(stacked[..., tf.newaxis], training=False)  # one pass per member
            prob = tf.cast(out[key], tf.float32)[..., 1]
            for i, t in enumerate(tfs):
                maps.append(undo_transform(prob[i * batch:(i + 1) * batch], t))
        maps = tf.stack(maps) if n_maps > 1 else maps[0][tf.newaxis]
        mean = tf.reduce_mean(maps, axis=0)
        std = tf.sqrt(tf.reduce_mean(tf.square(maps - mean[tf.newaxis]), axis=0))
        prob = tf.clip_by_value(transforms.resize(mean, hw, method="bilinear"), 0.0, 1.0)
        unc = tf.clip_by_value(transforms.resize(std, hw, method="bilinear"), 0.0, 0.5)
        mask = binarize(prob)
        if post["largest_component"] or post["fill_holes"]:
            mask = postprocess(mask, **post)
        return {"probability": prob, "mask": mask, "uncertainty": unc}

    ensemble.members = members
    ensemble.final_keys = keys
    ensemble.size = size
    ensemble.tta = tta
    ensemble.postprocessing = post
    return ensemble


def predict_ensemble(fn, images, batch_size: int = 32, progress: bool = False) -> dict:
    """Run an :func:`ensemble_function` over raw crops in batches.

    Args:
        fn: the function of :func:`ensemble_function` (or anything with its signature, e.g. a
            loaded ``serving_default``, called as ``fn(image=...)`` or ``fn(x)``).
        images: float (N, h, w) or (N, h, w, 1) raw crops of one size.
        batch_size: crops per call.
        progress: show a tqdm bar when there is more than one batch.

    Returns:
        ``{"probability": float32 (N, h, w), "mask": uint8, "uncertainty": float32}`` NumPy arrays.

    Example:

    >>> out = predict_ensemble(ensemble_function(members, tta="flips"), crops)
    """
    import numpy as np
    import tensorflow as tf

    x = np.asarray(images, np.float32)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3:
        raise KerassegError(f"images must be (N, H, W), got shape {x.shape}")
    if int(batch_size) < 1:
        raise KerassegError(f"batch_size must be >= 1, got {batch_size}")
    starts = range(0, len(x), int(batch_size))
    if progress and len(x) > batch_size:
        from tqdm import tqdm

        starts = tqdm(starts, desc="predict", unit="batch")
    parts = {"probability": [], "mask": [], "uncertainty": []}
    for i in starts:
        out = fn(tf.constant(x[i:i + batch_size]))
        for k in parts:
            parts[k].append(np.asarray(out[k]))
    dtypes = {"probability": np.float32, "mask": np.uint8, "uncertainty": np.float32}
    return {k: (np.concatenate(v).astype(dtypes[k]) if v else np.zeros(x.shape, dtypes[k]))
            for k, v in parts.items()}
