"""The built-in mammographic phantom: mass ROIs with ground truth, deterministic from a seed.

Each sample is synthesised on a working canvas and then cropped and resized exactly like the
real data (tight bounding box of the mass, small random jitter, bicubic resize to ``size``):

* **Parenchyma** - a Gaussian random field with a power-law spectrum ``P(f) ~ 1/f**beta``
  (``beta`` about 3, the exponent measured on mammograms), random phase, synthesised by FFT on a
  canvas twice as large as needed and cropped (so it is not periodic).
* **Mass** - a BI-RADS shape (round, oval, lobulated, irregular) given by a radius function
  ``r(theta)`` on a rotated ellipse; its projected thickness falls to zero at the outline
  (``(1 - d**2)**alpha``), so the edge contrast is low as in real masses.
* **Margin** - circumscribed (sharp, system blur only), obscured (margin blurred and partly
  hidden by an overlapping dense-tissue blob), spiculated (thin radiating spicules that the
  outline - the ground-truth mask - does not include).
* **Acquisition** - system blur, transmission ``N0 * exp(-mu)`` with Poisson (quantum) noise, then
  a log transform to "for presentation" intensities (dense = bright, 12-bit-like range): the
  noise is signal-dependent.

Masses have areas of 20-800 mm^2 (INbreast: 15-3689 mm^2) at 0.07 mm pixels; ``spacing_mm`` is the
ROI pixel size after the resize (area-preserving: :func:`kerasseg.data.roi.roi_spacing`,
``0.07 * sqrt(w * h) / size``) and ``boxes``
the ROI box (x0, y0, x1, y1, end exclusive) in the pixel coordinates of a virtual 3328 x 4084
INbreast-sized image.

**Context windows** (``context_size``, default 128; the dataset's ``context*`` arrays): the window
of :func:`kerasseg.data.roi.context_window` around the mass's tight box (the mask's box, without the
ROI's jitter; side twice its longer side), cut from the same synthetic image. The working canvas is
smaller than that window, so the image is continued around it: the same parenchyma field (the FFT
field is twice the canvas), dense tissue, overlapping blob and spicules, the same blur and
transmission, with the quantum noise of the added pixels drawn from a random stream of their own;
the canvas itself is pasted unchanged in the middle, so the ROIs (``images``, ``masks``) are exactly
those drawn without windows. A part of a window beyond the FFT field (rare: a strongly off-centre
outline at large ROI sizes) is edge-padded and left out of ``context_valid``.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from kerasseg.data.dataset import ROIDataset
from kerasseg.data.roi import context_square, context_window, resize_roi, roi_spacing
from kerasseg.errors import KerassegError

SHAPES = ("round", "oval", "lobulated", "irregular")
MARGINS = ("circumscribed", "obscured", "spiculated")
PIXEL_MM = 0.07                    # INbreast detector pixel size
VIRTUAL_IMAGE = (4084, 3328)       # (rows, cols) of the virtual full-field image
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}


# --------------------------------------------------------------------------- background
@functools.lru_cache(maxsize=16)
def _amplitude(H, W, beta):
    fy = np.fft.fftfreq(H)[:, None]
    fx = np.fft.fftfreq(W)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    amp = f ** (-beta / 2.0)
    amp[0, 0] = 0.0
    amp.setflags(write=False)
    return amp


def _power_law_pair(shape, beta, rng, pad=2.0, whole=None):
    """Two independent power-law fields from one complex FFT (real and imaginary parts).

    ``whole``: a dict that receives the whole FFT field (``"field"``), the crop's offset in it
    (``"offset"``) and each part's normalisation (``"norm"``: (mean, sd) pairs), so the phantom can
    continue the crop beyond its edges (context windows)."""
    h, w = int(shape[0]), int(shape[1])
    H, W = int(np.ceil(h * pad)), int(np.ceil(w * pad))
    amp = _amplitude(H, W, float(beta))
    phase = rng.uniform(0.0, 2.0 * np.pi, size=amp.shape)
    field = np.fft.ifft2(amp * np.exp(1j * phase))
    y0, x0 = (H - h) // 2, (W - w) // 2
    out, norm = [], []
    for part in (field.real, field.imag):
        crop = part[y0:y0 + h, x0:x0 + w]
        mean = crop.mean()
        crop = crop - mean
        sd = crop.std()
        out.append(crop / sd if sd > 0 else crop)
        norm.append((mean, sd))
    if whole is not None:
        whole.update(field=field, offset=(y0, x0), norm=norm)
    return out


def _normalised_part(part, mean, sd):
    """A part of the FFT field normalised like its canvas crop (the same float operations)."""
    part = part - mean
    return part / sd if sd > 0 else part


def power_law_background(shape, beta=3.0, rng=None, pad=2.0) -> np.ndarray:
    """A zero-mean, unit-std random field with power spectrum ``~ 1/f**beta``.

    Synthesised with random phase by inverse FFT on a canvas ``pad`` times larger than
    ``shape`` and cropped from its centre, so the result is not periodic. This is the
    parenchyma texture of every phantom ROI.
    """
    return _power_law_pair(shape, beta, np.random.default_rng(rng), pad)[0]


# --------------------------------------------------------------------------- mass shapes
def _radius_function(shape, rng):
    """(aspect, harmonics) describing r(theta) = 1 + sum a_k cos(k theta + phi_k)."""
    if shape == "round":
        aspect = rng.uniform(1.0, 1.15)
        ks = np.arange(2, 5)
        amps = rng.uniform(0.0, 0.025, size=ks.size)
    elif shape == "oval":
        aspect = rng.uniform(1.35, 2.0)
        ks = np.arange(2, 5)
        amps = rng.uniform(0.0, 0.03, size=ks.size)
    elif shape == "lobulated":
        aspect = rng.uniform(1.0, 1.5)
        k = int(rng.integers(3, 7))
        ks = np.array([k, k + 1, 2 * k])
        amps = np.array([rng.uniform(0.08, 0.15), rng.uniform(0.0, 0.05), rng.uniform(0.0, 0.03)])
    elif shape == "irregular":
        aspect = rng.uniform(1.0, 1.6)
        ks = np.arange(2, 14)
        amps = rng.uniform(0.3, 1.0, size=ks.size) * 0.22 / ks ** 0.9
    else:  # pragma: no cover - guarded by make_phantom
        raise KerassegError(f"unknown mass shape {shape!r}")
    phases = rng.uniform(0, 2 * np.pi, size=ks.size)
    return aspect, ks, amps, phases


def _eval_r(theta, ks, amps, phases):
    r = np.ones_like(theta)
    for k, a, p in zip(ks, amps, phases):
        r = r + a * np.cos(k * theta + p)
    return np.maximum(r, 0.35)


def _normalised_distance(yy, xx, cy, cx, scale, aspect, angle, ks, amps, phases):
    """d = rho / r(theta) in the mass frame: d < 1 inside the outline."""
    dy, dx = yy - cy, xx - cx
    ca, sa = np.cos(angle), np.sin(angle)
    u = (dx * ca + dy * sa) / (scale * np.sqrt(aspect))
    v = (-dx * sa + dy * ca) * np.sqrt(aspect) / scale
    rho = np.hypot(u, v)
    theta = np.arctan2(v, u)
    return rho / _eval_r(theta, ks, amps, phases)


def _outline_extent(aspect, angle, ks, amps, phases):
    """Bounding half-widths (y, x) of the unit-scale outline."""
    t = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    r = _eval_r(t, ks, amps, phases)
    u, v = r * np.cos(t) * np.sqrt(aspect), r * np.sin(t) / np.sqrt(aspect)
    ca, sa = np.cos(angle), np.sin(angle)
    x = u * ca - v * sa
    y = u * sa + v * ca
    return np.abs(y).max(), np.abs(x).max()


# --------------------------------------------------------------------------- ROI resize
def _resize_roi(image, mask, size):
    """Bicubic resize of the image; mask resized as float and thresholded at 0.5 - the same
    rule as the readers (:mod:`kerasseg.data.roi`), so phantom and real ROIs match."""
    return resize_roi(image, mask, size)


# --------------------------------------------------------------------------- one sample
def _sample(rng, size, beta, difficulty, context_size=0, context_rng=None):
    """One ROI: returns image (size,size) float32, mask uint8, box, spacing, info dict and the
    context window (:func:`kerasseg.data.roi.context_window`'s tuple; None for ``context_size=0``).

    ``context_rng`` draws only the noise of the pixels added around the canvas for the window: the
    draws of ``rng`` (and so the ROI) are the same with or without a window."""
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    margin = MARGINS[int(rng.integers(len(MARGINS)))]
    if margin == "spiculated" and shape in ("round", "oval") and rng.uniform() < 0.7:
        shape = "irregular"          # spiculated masses are mostly irregular
    aspect, ks, amps, phases = _radius_function(shape, rng)
    angle = rng.uniform(0, np.pi)

    # Working canvas: the mass's long box side is about 1.6 * size working pixels.
    ey, ex = _outline_extent(aspect, angle, ks, amps, phases)
    long_side = 1.6 * size
    scale = long_side / (2.0 * max(ey, ex))
    C = int(2 * np.ceil(1.15 * long_side / 2.0)) + 8
    cy = C / 2.0 + rng.uniform(-0.5, 0.5)
    cx = C / 2.0 + rng.uniform(-0.5, 0.5)
    yy, xx = np.mgrid[0:C, 0:C].astype(np.float64)
    d = _normalised_distance(yy, xx, cy, cx, scale, aspect, angle, ks, amps, phases)
    mask = d < 1.0
    area_px = float(mask.sum())
    if area_px < 4:  # pragma: no cover - scale guarantees a large mass
        raise KerassegError("phantom mass too small")

    # Physical scale: mass area 20-800 mm^2 (log-uniform).
    area_mm2 = float(np.exp(rng.uniform(np.log(20.0), np.log(800.0))))
    px_mm = np.sqrt(area_mm2 / area_px)            # working pixel size in mm

    # Mass thickness: falls to zero at the outline.
    alpha = {"circumscribed": rng.uniform(0.25, 0.45), "obscured": rng.uniform(0.6, 1.0),
             "spiculated": rng.uniform(0.4, 0.7)}[margin]
    thick = np.clip(1.0 - d * d, 0.0, None) ** alpha

    # Parenchyma: power-law field plus dense "blobs" (clipped field -> fibroglandular tissue).
    whole = {}
    bg, dense = _power_law_pair((C, C), beta, rng, whole=whole)
    dense_off = rng.uniform(0.0, 0.8)
    dense = np.clip(dense - dense_off, 0.0, None)

    k = difficulty
    bg_std = k * rng.uniform(0.35, 0.70)          # background modulation relative to mass contrast
    dense_amp = k * rng.uniform(0.10, 0.40)
    mu = bg_std * bg + dense_amp * dense
    blob_args = spicules = None

    if margin == "obscured":
        sig = scale * rng.uniform(0.08, 0.16)
        thick = ndimage.gaussian_filter(thick, sig)
        # an overlapping dense-tissue blob straddling part of the outline
        phi = rng.uniform(0, 2 * np.pi)
        by = cy + 0.9 * scale * np.sin(phi)
        bx = cx + 0.9 * scale * np.cos(phi)
        bs = scale * rng.uniform(0.35, 0.6)
        blob = np.exp(-((yy - by) ** 2 + (xx - bx) ** 2) / (2 * bs * bs))
        blob_amp = k * rng.uniform(0.4, 0.8)
        mu = mu + blob_amp * blob
        blob_args = (by, bx, bs, blob_amp)
    mu = mu + thick

    if margin == "spiculated":
        spic = np.zeros((C, C))
        n_sp = int(rng.integers(8, 20))
        spicules = []
        for _ in range(n_sp):
            th = rng.uniform(0, 2 * np.pi)
            r0 = _eval_r(np.array([th]), ks, amps, phases)[0] * 0.9
            length = rng.uniform(0.3, 0.8)
            ts = np.linspace(r0, r0 + length, int(4 * length * scale) + 2)
            u = ts * np.cos(th) * np.sqrt(aspect)
            v = ts * np.sin(th) / np.sqrt(aspect)
            ca, sa = np.cos(angle), np.sin(angle)
            px = cx + scale * (u * ca - v * sa)
            py = cy + scale * (u * sa + v * ca)
            spicules.append((px, py))
            ok = (px >= 0) & (px < C - 1) & (py >= 0) & (py < C - 1)
            w = np.linspace(1.0, 0.2, ts.size)[ok]
            np.add.at(spic, (np.round(py[ok]).astype(int), np.round(px[ok]).astype(int)), w)
        spic = ndimage.gaussian_filter(np.minimum(spic, 1.0), 0.8)
        spic_amp = rng.uniform(0.8, 1.6)
        mu = mu + spic_amp * spic
        spicules = (spicules, spic_amp)

    # System blur, transmission with quantum noise, log transform (dense = bright).
    blur = rng.uniform(0.6, 1.0)
    mu_pre_blur = mu
    mu = ndimage.gaussian_filter(mu, blur)
    contrast = rng.uniform(0.08, 0.16)            # attenuation of the mass centre
    mu_min = mu.min()
    mu_tot = 1.0 + contrast * (mu - mu_min)
    n0 = rng.uniform(1500.0, 4000.0) / k ** 2
    counts = rng.poisson(n0 * np.exp(-mu_tot)).astype(np.float64)
    img = -np.log(np.maximum(counts, 0.5) / n0)
    img = 400.0 + 1200.0 * img

    # Tight bounding box + jitter, crop, resize.
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    context = None
    tight = (int(x0), int(y0), int(x1), int(y1))
    if context_size:
        context = _context(
            img, mask, tight, int(context_size), px_mm, context_rng,
            whole=whole, mix=(bg_std, dense_amp, dense_off), blob=blob_args, spicules=spicules,
            mu_pre_blur=mu_pre_blur, blur=blur, contrast=contrast, mu_min=mu_min, n0=n0)
    hj, wj = y1 - y0, x1 - x0
    jit = rng.uniform(-0.02, 0.08, size=4)
    y0 = int(np.clip(np.round(y0 - jit[0] * hj), 0, C - 2))
    y1 = int(np.clip(np.round(y1 + jit[1] * hj), y0 + 2, C))
    x0 = int(np.clip(np.round(x0 - jit[2] * wj), 0, C - 2))
    x1 = int(np.clip(np.round(x1 + jit[3] * wj), x0 + 2, C))
    roi_img, roi_mask = _resize_roi(img[y0:y1, x0:x1], mask[y0:y1, x0:x1], size)

    # Box in the virtual full image (original pixel coordinates).
    f = px_mm / PIXEL_MM
    bh, bw = (y1 - y0) * f, (x1 - x0) * f
    oy = rng.uniform(0, VIRTUAL_IMAGE[0] - bh - 1)
    ox = rng.uniform(0, VIRTUAL_IMAGE[1] - bw - 1)
    box = np.array([ox, oy, ox + bw, oy + bh]).round().astype(np.int32)
    spacing = roi_spacing(PIXEL_MM, bh, bw, size)
    info = {"shape": shape, "margin": margin, "area_mm2": area_mm2}
    if context is not None:  # the ROI's own (jittered) box in the window: (y0, x0, y1, x1)
        top, left, side = context_square(tight)
        f = context_size / side
        info["roi_box_in_window"] = tuple(float(v) for v in
                                          ((y0 - top) * f, (x0 - left) * f, (y1 - top) * f, (x1 - left) * f))
    return roi_img, roi_mask, box, np.float32(spacing), info, context


def _context(img, mask, box, context_size, px_mm, rng, *, whole, mix, blob, spicules, mu_pre_blur,
             blur, contrast, mu_min, n0):
    """The context window of one phantom mass: the canvas continued to the window's square (module
    docstring) and :func:`~kerasseg.data.roi.context_window` on it; the canvas is pasted unchanged."""
    C = img.shape[0]
    top, left, side = context_square(box)
    field = whole["field"]
    fy, fx = whole["offset"]                          # canvas (0, 0) in the FFT field
    # the rendered region: canvas and window together, inside the FFT field
    r0, c0 = max(min(top, 0), -fy), max(min(left, 0), -fx)
    r1, c1 = min(max(top + side, C), field.shape[0] - fy), min(max(left + side, C), field.shape[1] - fx)
    sl = (slice(r0 + fy, r1 + fy), slice(c0 + fx, c1 + fx))
    (m_bg, sd_bg), (m_dense, sd_dense) = whole["norm"]
    bg_std, dense_amp, dense_off = mix
    bg = _normalised_part(field.real[sl], m_bg, sd_bg)
    dense = np.clip(_normalised_part(field.imag[sl], m_dense, sd_dense) - dense_off, 0.0, None)
    mu = bg_std * bg + dense_amp * dense
    if blob is not None:
        by, bx, bs, blob_amp = blob
        yy, xx = np.ogrid[r0:r1, c0:c1]
        mu = mu + blob_amp * np.exp(-((yy - by) ** 2 + (xx - bx) ** 2) / (2 * bs * bs))
    if spicules is not None:
        lines, spic_amp = spicules
        spic = np.zeros(mu.shape)
        for px, py in lines:
            ok = (px >= c0) & (px < c1 - 1) & (py >= r0) & (py < r1 - 1)
            w = np.linspace(1.0, 0.2, px.size)[ok]
            np.add.at(spic, (np.round(py[ok]).astype(int) - r0, np.round(px[ok]).astype(int) - c0), w)
        mu = mu + spic_amp * ndimage.gaussian_filter(np.minimum(spic, 1.0), 0.8)
    inner = (slice(-r0, -r0 + C), slice(-c0, -c0 + C))  # the canvas in the region
    mu[inner] = mu_pre_blur                             # the mass, blob and spicules as drawn
    added = np.ones(mu.shape, bool)
    added[inner] = False
    lam = n0 * np.exp(-(1.0 + contrast * (ndimage.gaussian_filter(mu, blur)[added] - mu_min)))
    out = np.empty(mu.shape)
    out[added] = 400.0 + 1200.0 * -np.log(np.maximum(rng.poisson(lam), 0.5) / n0)
    out[inner] = img
    full_mask = np.zeros(mu.shape, np.uint8)
    full_mask[inner] = mask
    x0, y0, x1, y1 = box
    return context_window(out, full_mask, (x0 - c0, y0 - r0, x1 - c0, y1 - r0), size=context_size,
                          spacing=px_mm)


# --------------------------------------------------------------------------- datasets
def make_phantom(n_train=58, n_val=12, n_test=58, size=40, seed=0, *, beta=3.0,
                 difficulty=1.0, return_info=False, context_size=128):
    """Generate the phantom dataset (a :class:`~kerasseg.data.dataset.ROIDataset`).

    Deterministic from ``seed``; sample ``k`` of a split depends only on (seed, split, k), so
    changing ``n_test`` does not change the training ROIs. ``difficulty`` scales background
    structure and noise relative to the mass contrast (1.0 = the default task).
    ``return_info=True`` also returns a list of per-ROI dicts (shape, margin, area_mm2; with
    context windows also ``roi_box_in_window``: the ROI's own box, the tight box with its jitter,
    as (y0, x0, y1, x1) window pixels, where ``context_box`` is the tight box).
    Every phantom ROI is drawn independently, so each is its own ``group``.
    ``context_size``: side of the context windows (module docstring); 0 or None: no windows. The
    ROIs are the same with or without windows.
    """
    counts = {"train": n_train, "val": n_val, "test": n_test}
    for name, n in counts.items():
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise KerassegError(f"phantom: n_{name} must be a non-negative integer, got {n!r}")
    if sum(counts.values()) == 0:
        raise KerassegError("phantom: at least one ROI is needed (all split sizes are 0)")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 8:
        raise KerassegError(f"phantom: size must be an integer >= 8, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise KerassegError(f"phantom: seed must be a non-negative integer, got {seed!r}")
    if not (1.0 <= float(beta) <= 5.0):
        raise KerassegError(f"phantom: beta must be in [1, 5], got {beta!r}")
    if not (0.05 <= float(difficulty) <= 5.0):
        raise KerassegError(f"phantom: difficulty must be in [0.05, 5], got {difficulty!r}")
    if context_size is None:
        context_size = 0
    if (isinstance(context_size, bool) or not isinstance(context_size, (int, np.integer))
            or (context_size != 0 and context_size < 8)):
        raise KerassegError(f"phantom: context_size must be 0 (no windows) or an integer >= 8, "
                            f"got {context_size!r}")

    images, masks, splits, ids, boxes, spacing, infos, windows = [], [], [], [], [], [], [], []
    for name in ("train", "val", "test"):
        for k in range(counts[name]):
            rng = np.random.default_rng([int(seed), _SPLIT_CODE[name], k])
            # the window's added pixels draw their noise from a stream of their own
            context_rng = np.random.default_rng([int(seed), _SPLIT_CODE[name], k, 1]) if context_size else None
            img, m, box, sp, info, window = _sample(rng, int(size), float(beta), float(difficulty),
                                                    int(context_size), context_rng)
            windows.append(window)
            images.append(img)
            masks.append(m)
            splits.append(name)
            ids.append(f"phantom{int(seed)}-{name}{k:03d}-mass1")
            boxes.append(box)
            spacing.append(sp)
            infos.append(info)
    context = {}
    if context_size:
        win, win_mask, win_box, valid, win_sp = zip(*windows)
        context = dict(context=np.stack(win), context_mask=np.stack(win_mask), context_box=np.stack(win_box),
                       context_valid=np.stack(valid), context_spacing_mm=np.array(win_sp, dtype=np.float32))
    ds = ROIDataset(images=np.stack(images), masks=np.stack(masks), split=np.array(splits),
                    ids=np.array(ids), spacing_mm=np.array(spacing, dtype=np.float32),
                    boxes=np.stack(boxes), source="phantom", group=np.array(ids), **context)
    return (ds, infos) if return_info else ds


@functools.lru_cache(maxsize=1)
def _default():
    return make_phantom()


def default_dataset() -> ROIDataset:
    """``make_phantom()`` with the defaults, generated once per process (a fresh copy each call)."""
    ds = _default()
    return ds.select(np.arange(len(ds)))
