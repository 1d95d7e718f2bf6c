"""Preprocessing: optional contrast enhancement and intensity normalisation.

Enhancement (per image, after scaling the ROI to [0, 1]; the role of the Ball-and-Bruce step of the
older pipelines):

* ``"none"``   - leave intensities as they are (no [0, 1] scaling either)
* ``"clahe"``  - contrast-limited adaptive histogram equalisation (``skimage.exposure.equalize_adapthist``)
* ``"histeq"`` - global histogram equalisation (``skimage.exposure.equalize_hist``)

Normalisation:

* ``"image"``    - per image: zero mean, unit standard deviation
* ``"position"`` - per pixel position (Zhu et al. 2018): subtract the mean map and divide by the
  standard-deviation map, both computed on the TRAIN split only (:meth:`Normalizer.fit`)
* ``"none"``     - no normalisation

:class:`Normalizer` bundles both; it is JSON-serialisable with :meth:`~Normalizer.get_config` and
:meth:`~Normalizer.from_config` and offers :meth:`~Normalizer.tf_normalize`, the same normalisation
with TensorFlow ops for serving graphs.
"""

from __future__ import annotations

import numpy as np

from kerasseg.errors import KerassegError

MODES = ("image", "position", "none")
ENHANCEMENTS = ("none", "clahe", "histeq")
EPS = 1e-6  # floor of every standard deviation (constant images normalise to 0)


def _as_stack(images, what="images"):
    """(N, H, W) float64 view of ``images``; a clear error for anything else."""
    try:
        arr = np.asarray(images, dtype=np.float64)
    except (TypeError, ValueError):
        raise KerassegError(f"{what} must be a numeric array") from None
    if arr.ndim != 3:
        raise KerassegError(f"{what} must have shape (N, H, W), got {arr.shape}")
    if arr.size and not np.all(np.isfinite(arr)):
        raise KerassegError(f"{what} contain NaN or infinite values")
    return arr


def scale01(images) -> np.ndarray:
    """Scale each image linearly to [0, 1] (a constant image becomes all zeros)."""
    x = _as_stack(images)
    lo = x.min(axis=(1, 2), keepdims=True)
    hi = x.max(axis=(1, 2), keepdims=True)
    rng = hi - lo
    return np.where(rng > 0, (x - lo) / np.where(rng > 0, rng, 1.0), 0.0)


def enhance(images, method="none", *, clip_limit=0.01, kernel_size=None, nbins=256) -> np.ndarray:
    """Apply the enhancement ``method`` to each image of an (N, H, W) stack; float64 result.

    ``clip_limit`` and ``kernel_size`` are passed to ``equalize_adapthist`` (CLAHE), ``nbins``
    to both equalisers.
    """
    if method not in ENHANCEMENTS:
        raise KerassegError(f"unknown enhancement {method!r}; choose one of {list(ENHANCEMENTS)}")
    x = _as_stack(images)
    if method == "none":
        return x
    from skimage import exposure

    x01 = scale01(x)
    out = np.empty_like(x01)
    for i, img in enumerate(x01):
        if img.max() <= img.min():
            out[i] = img
        elif method == "clahe":
            out[i] = exposure.equalize_adapthist(img, kernel_size=kernel_size,
                                                 clip_limit=clip_limit, nbins=nbins)
        else:
            out[i] = exposure.equalize_hist(img, nbins=nbins)
    return out


def normalize_per_image(images) -> np.ndarray:
    """Zero mean, unit std per image (population std, floored at ``EPS``); float64."""
    x = _as_stack(images)
    mean = x.mean(axis=(1, 2), keepdims=True)
    std = x.std(axis=(1, 2), keepdims=True)
    return (x - mean) / np.maximum(std, EPS)


class Normalizer:
    """Enhancement + normalisation, fitted on the TRAIN split only.

    >>> norm = Normalizer("position", "clahe").fit(train_images)
    >>> x = norm(test_images)                      # float32 (N, H, W)
    >>> Normalizer.from_config(norm.get_config())  # same behaviour, e.g. from normalizer.json
    """

    def __init__(self, mode="image", enhancement="none", *, clahe_clip_limit=0.01,
                 clahe_kernel_size=None):
        if mode not in MODES:
            raise KerassegError(f"unknown normalisation mode {mode!r}; choose one of {list(MODES)}")
        if enhancement not in ENHANCEMENTS:
            raise KerassegError(
                f"unknown enhancement {enhancement!r}; choose one of {list(ENHANCEMENTS)}")
        try:
            clip = float(clahe_clip_limit)
        except (TypeError, ValueError):
            clip = float("nan")
        if not (0.0 < clip <= 1.0):
            raise KerassegError(f"clahe_clip_limit must be in (0, 1], got {clahe_clip_limit!r}")
        if clahe_kernel_size is not None and (
                isinstance(clahe_kernel_size, bool) or not isinstance(clahe_kernel_size, (int, np.integer))
                or clahe_kernel_size < 2):
            raise KerassegError(f"clahe_kernel_size must be an integer >= 2, got {clahe_kernel_size!r}")
        self.mode = mode
        self.enhancement = enhancement
        self.clahe_clip_limit = clip
        self.clahe_kernel_size = None if clahe_kernel_size is None else int(clahe_kernel_size)
        self.mean = None  # (H, W) float32, position mode
        self.std = None

    # ----------------------------------------------------------------- numpy path
    def enhance(self, images) -> np.ndarray:
        """The enhancement step alone (float64)."""
        return enhance(images, self.enhancement, clip_limit=self.clahe_clip_limit,
                       kernel_size=self.clahe_kernel_size)

    def fit(self, train_images) -> "Normalizer":
        """Compute the statistics the mode needs from the training images (N, H, W)."""
        x = _as_stack(train_images, "training images")
        if len(x) == 0:
            raise KerassegError("cannot fit the normaliser on an empty training set")
        if self.mode == "position":
            e = self.enhance(x)
            self.mean = e.mean(axis=0).astype(np.float32)
            self.std = np.maximum(e.std(axis=0), EPS).astype(np.float32)
        return self

    @property
    def fitted(self) -> bool:
        return self.mode != "position" or self.mean is not None

    def _check_position(self, hw):
        if self.mean is None:
            raise KerassegError("the position normaliser is not fitted: call fit(train_images) first")
        if tuple(hw) != tuple(self.mean.shape):
            raise KerassegError(f"images of size {tuple(hw)} do not match the normaliser's "
                                f"fitted size {tuple(self.mean.shape)}")

    def __call__(self, images) -> np.ndarray:
        """Enhance and normalise an (N, H, W) stack (an (H, W) image is also accepted and the
        result keeps its rank); float32."""
        arr = np.asarray(images)
        single = arr.ndim == 2
        x = _as_stack(arr[None] if single else arr)
        if self.mode == "position":
            self._check_position(x.shape[1:])
        e = self.enhance(x)
        if self.mode == "image":
            e = normalize_per_image(e)
        elif self.mode == "position":
            e = (e - self.mean.astype(np.float64)) / self.std.astype(np.float64)
        out = e.astype(np.float32)
        return out[0] if single else out

    # ----------------------------------------------------------------- TF path
    def tf_normalize(self, x):
        """The normalisation (not the enhancement) with TF ops on a (B, H, W) float tensor.

        Used inside exported serving graphs. Enhancement has no TF-graph form: a normaliser with
        ``enhancement != "none"`` raises :class:`KerassegError`.
        """
        import tensorflow as tf

        if self.enhancement != "none":
            raise KerassegError(f"enhancement {self.enhancement!r} has no TF-graph form "
                                "(only enhancement 'none' can be exported)")
        x = tf.cast(x, tf.float32)
        if self.mode == "none":
            return x
        if self.mode == "image":
            mean = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
            var = tf.reduce_mean(tf.square(x - mean), axis=[1, 2], keepdims=True)
            return (x - mean) / tf.maximum(tf.sqrt(var), EPS)
        if self.mean is None:
            raise KerassegError("the position normaliser is not fitted: call fit(train_images) first")
        mean = tf.constant(self.mean, dtype=tf.float32)
        std = tf.constant(self.std, dtype=tf.float32)
        return (x - mean) / std

    # ----------------------------------------------------------------- config
    def get_config(self) -> dict:
        """JSON-serialisable configuration (position mode stores the mean/std maps as lists)."""
        return {
            "mode": self.mode,
            "enhancement": self.enhancement,
            "clahe_clip_limit": self.clahe_clip_limit,
            "clahe_kernel_size": self.clahe_kernel_size,
            "mean": None if self.mean is None else self.mean.tolist(),
            "std": None if self.std is None else self.std.tolist(),
        }

    @classmethod
    def from_config(cls, cfg) -> "Normalizer":
        """Rebuild a normaliser from :meth:`get_config` output (e.g. read from normalizer.json)."""
        if not isinstance(cfg, dict):
            raise KerassegError(f"normaliser config must be a mapping, got {type(cfg).__name__}")
        known = {"mode", "enhancement", "clahe_clip_limit", "clahe_kernel_size", "mean", "std"}
        extra = sorted(set(cfg) - known)
        if extra:
            raise KerassegError(f"unknown normaliser config key(s) {extra}")
        norm = cls(cfg.get("mode", "image"), cfg.get("enhancement", "none"),
                   clahe_clip_limit=cfg.get("clahe_clip_limit", 0.01),
                   clahe_kernel_size=cfg.get("clahe_kernel_size"))
        mean, std = cfg.get("mean"), cfg.get("std")
        if (mean is None) != (std is None):
            raise KerassegError("normaliser config must give both 'mean' and 'std' or neither")
        if mean is not None:
            try:
                m = np.asarray(mean, dtype=np.float32)
                s = np.asarray(std, dtype=np.float32)
            except (TypeError, ValueError):
                raise KerassegError("normaliser 'mean'/'std' must be numeric 2-D lists") from None
            if m.ndim != 2 or m.shape != s.shape:
                raise KerassegError(f"normaliser 'mean' {m.shape} and 'std' {s.shape} must be "
                                    "2-D maps of the same shape")
            if not (np.all(np.isfinite(m)) and np.all(np.isfinite(s)) and np.all(s > 0)):
                raise KerassegError("normaliser 'mean'/'std' must be finite with std > 0")
            norm.mean, norm.std = m, s
        elif norm.mode == "position":
            raise KerassegError("a position normaliser config needs its 'mean' and 'std' maps")
        return norm

    def __repr__(self):
        fitted = "" if self.mode != "position" else (", fitted" if self.fitted else ", not fitted")
        return f"Normalizer(mode={self.mode!r}, enhancement={self.enhancement!r}{fitted})"


def fit_normalizer(ds, mode="image", enhancement="none", **kwargs) -> Normalizer:
    """A :class:`Normalizer` fitted on the TRAIN split of a dataset only (val/test never seen)."""
    return Normalizer(mode, enhancement, **kwargs).fit(ds.subset("train").images)
