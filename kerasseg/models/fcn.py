"""FCNs of Zhu et al. 2018 (Table 1) and their four-scale ensemble.

Each FCN (``(maps, kernel)`` per layer from Table 1)::

    conv1  maps1 @ k1 x k1, 'valid', tanh
    pool1  2x2 max pooling
    conv2  maps2 @ k2 x k2, 'valid', tanh
    pool2  2x2 max pooling
    conv3  maps3 @ k3 x k3, 'valid', tanh
    deconv 2 @ K x K transposed convolution, stride 4, 'valid'  -> (H, W, 2) logits

Reading of "the last layers of the four FCNs are all two 40x40 transpose convolution
kernels": with 'valid' convolutions every variant maps a 40x40 ROI to a 1x1 map after
conv3 (FCN1: 40-36-18-14-7-1; FCN2: 40-37-18-15-7-1; FCN3: 40-38-19-17-8-1;
FCN4: 40-39-19-18-9-1), so the last layer is literally two 40x40 transposed-convolution
kernels. The stride is 4 (the total pooling factor), which only matters for other ROI
sizes: conv3 then yields an ``s x s`` map and the kernel is ``K = H - 4 (s - 1)``, so the
output is exactly ``H x W``; e.g. H=64 gives s=7, K=40 for FCN1. A size where conv3 would
be empty or K < 4 (output pixels not covered) is refused.

The layer parameter counts are almost equal across the four variants, as the paper
states (e.g. conv3: 588*12*49 ≈ 415*13*64 ≈ 355*12*81 ≈ 3.45e5).

``multifcn``: the four FCNs on the same input. ``net`` = mean of the four softmaxes.
As the CRF unary, :class:`kerasseg.layers.fusion.UnaryFusion` sums the four FCNs' log-probabilities with a
learned weight per FCN and class (initialised to 1/4): ψ_u = Σ_u' w(u') ψ_u' (Zhu Sec. 3).
"""

from __future__ import annotations

from keras import layers

from kerasseg.errors import KerassegError
from kerasseg.layers.fusion import UnaryFusion  # noqa: F401  (the multifcn CRF unary; kerasseg/layers/fusion.py)

#: Zhu et al. Table 1: ((maps, kernel) for conv1, conv2, conv3)
FCN_VARIANTS = {
    1: ((6, 5), (12, 5), (588, 7)),
    2: ((9, 4), (12, 4), (588, 7)),
    3: ((16, 3), (13, 3), (415, 8)),
    4: ((37, 2), (12, 2), (355, 9)),
}
DECONV_STRIDE = 4


def fcn_geometry(size: int, variant: int, arch: str = "fcn") -> tuple[int, int]:
    """``(s, K)``: conv3 output side and transposed-conv kernel for an ROI side ``size``."""
    if variant not in FCN_VARIANTS:
        raise KerassegError(f"model '{arch}' fcn_variant must be one of 1, 2, 3, 4; got {variant!r}")
    (_, k1), (_, k2), (_, k3) = FCN_VARIANTS[variant]
    s = size - k1 + 1
    s = s // 2 - k2 + 1
    s = s // 2 - k3 + 1
    if s < 1:
        raise KerassegError(
            f"model '{arch}' (FCN {variant}) needs an ROI size of at least "
            f"{min_fcn_size(variant)}; got {size}"
        )
    kernel = size - DECONV_STRIDE * (s - 1)
    if kernel < DECONV_STRIDE:
        raise KerassegError(
            f"model '{arch}' (FCN {variant}) cannot map its {s}x{s} feature map back to "
            f"{size}x{size}; choose another ROI size (e.g. {size + 1})"
        )
    return s, kernel


def min_fcn_size(variant: int) -> int:
    """Smallest ROI side for which conv3 of FCN ``variant`` is non-empty."""
    (_, k1), (_, k2), (_, k3) = FCN_VARIANTS[variant]
    return 2 * (2 * k3 + k2 - 1) + k1 - 1


def fcn_logits(x, *, size: int, variant: int = 1, prefix: str = ""):
    """Apply FCN ``variant`` to ``x`` (B, size, size, C); returns logits (B, size, size, 2)."""
    _, kernel = fcn_geometry(size, variant)
    (m1, k1), (m2, k2), (m3, k3) = FCN_VARIANTS[variant]
    h = layers.Conv2D(m1, k1, padding="valid", activation="tanh", name=f"{prefix}conv1")(x)
    h = layers.MaxPooling2D(2, name=f"{prefix}pool1")(h)
    h = layers.Conv2D(m2, k2, padding="valid", activation="tanh", name=f"{prefix}conv2")(h)
    h = layers.MaxPooling2D(2, name=f"{prefix}pool2")(h)
    h = layers.Conv2D(m3, k3, padding="valid", activation="tanh", name=f"{prefix}conv3")(h)
    return layers.Conv2DTranspose(
        2, kernel, strides=DECONV_STRIDE, padding="valid", name=f"{prefix}deconv"
    )(h)
