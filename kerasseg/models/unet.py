"""Plain U-Net and residual U-Net of CRU-Net (Li et al. 2018, Sec. 2.1 and 3.2).

Layer structure for ``filters=(16, 32, 64, 128)`` on a 40x40 ROI (``k`` = kernel size,
3 for INbreast, 7 for DDSM; every convolution uses 'same' zero padding)::

    layer1 enc1  40x40x16   conv k x k + ReLU
    layer2 enc2  20x20x32   2x2 max pool -> conv k x k + ReLU
    layer3 enc3  10x10x64   2x2 max pool -> conv k x k + ReLU
    layer4 enc4   5x5x128   2x2 max pool -> conv k x k + ReLU -> dropout (0.5)
    layer5 dec5  10x10x64   2x upsampling (nearest) -> conv k x k + ReLU       input: layer4
    layer6 dec6  20x20x32   2x upsampling (nearest) -> conv k x k + ReLU       input: concat(layer3, layer5)
    layer7 dec7  40x40x16   2x upsampling (nearest) -> conv k x k + ReLU       input: concat(layer2, layer6)
    head         40x40x2    1x1 conv -> 2 logits                               input: concat(layer1, layer7)

The up path uses upsampling + convolution (not transposed convolution). Dropout is
applied once, at the bottleneck (output of layer4).

Residual U-Net (``residual=True``): each layer's output is ``F(x) + W*x`` where ``F`` is
the plain layer above (so the layer learns ``F(x) = H(x) - W*x``, eq. 2) and ``W*x`` is a
linear projection of the layer's input matching F's shape (CRU-Net Fig. 2):

- layer1: 1x1 convolution;
- down layers 2-4: 1x1 convolution followed by 2x2 max pooling;
- up layers 5-7: 2x upsampling (nearest) followed by a 2x2 convolution ('same').

More or fewer levels follow the same pattern (``len(filters)`` levels; the ROI size must
be divisible by ``2 ** (len(filters) - 1)``).
"""

from __future__ import annotations

import numbers

from keras import layers

from kerasseg.errors import KerassegError

DEFAULT_FILTERS = (16, 32, 64, 128)


def check_unet_options(arch: str, size: int, kernel_size, filters, dropout) -> tuple:
    """Validate U-Net options; returns ``(kernel_size, filters, dropout)`` normalised."""
    try:
        filters = tuple(int(f) for f in filters)
    except (TypeError, ValueError):
        raise KerassegError(f"model '{arch}' filters must be a list of integers; got {filters!r}") from None
    if len(filters) < 2 or min(filters) < 1:
        raise KerassegError(
            f"model '{arch}' needs at least 2 levels of positive filter counts; got {list(filters)}"
        )
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, numbers.Integral) or kernel_size < 1:
        raise KerassegError(f"model '{arch}' kernel_size must be a positive integer; got {kernel_size!r}")
    try:
        dropout = float(dropout)
    except (TypeError, ValueError):
        raise KerassegError(f"model '{arch}' dropout must be a number in [0, 1); got {dropout!r}") from None
    if not 0.0 <= dropout < 1.0:
        raise KerassegError(f"model '{arch}' dropout must be in [0, 1); got {dropout}")
    factor = 2 ** (len(filters) - 1)
    if size % factor != 0 or size < factor:
        raise KerassegError(f"model '{arch}' needs an ROI size divisible by {factor}; got {size}")
    return int(kernel_size), filters, dropout


def unet_logits(x, *, kernel_size: int = 3, filters=DEFAULT_FILTERS, dropout: float = 0.5,
                residual: bool = False):
    """Apply the (residual) U-Net to tensor ``x`` (B, H, W, C); returns 2-class logits (B, H, W, 2).

    Options must already be validated by :func:`check_unet_options`.
    """
    k = kernel_size
    n = len(filters)

    def conv(f, size, name, act=None):
        return layers.Conv2D(f, size, padding="same", activation=act, name=name)

    # ---- contracting path: layer1 .. layer n
    enc = []
    h = x
    for i, f in enumerate(filters, start=1):
        inp = h
        main = inp if i == 1 else layers.MaxPooling2D(2, name=f"enc{i}_pool")(inp)
        main = conv(f, k, f"enc{i}_conv", "relu")(main)
        if residual:
            sc = conv(f, 1, f"enc{i}_shortcut")(inp)
            if i > 1:
                sc = layers.MaxPooling2D(2, name=f"enc{i}_shortcut_pool")(sc)
            main = layers.Add(name=f"enc{i}_add")([main, sc])
        h = main
        if i == n and dropout > 0:
            h = layers.Dropout(dropout, name=f"enc{i}_dropout")(h)
        enc.append(h)

    # ---- expansive path: layer n+1 .. layer 2n-1; layer m pairs with layer 2n-m
    for j in range(n - 1):
        m = n + 1 + j                 # layer number
        partner = enc[n - 2 - j]      # layer 2n - m
        f = filters[n - 2 - j]
        inp = h
        main = layers.UpSampling2D(2, name=f"dec{m}_up")(inp)
        main = conv(f, k, f"dec{m}_conv", "relu")(main)
        if residual:
            sc = layers.UpSampling2D(2, name=f"dec{m}_shortcut_up")(inp)
            sc = conv(f, 2, f"dec{m}_shortcut")(sc)
            main = layers.Add(name=f"dec{m}_add")([main, sc])
        partner_layer = n - 1 - j
        h = layers.Concatenate(name=f"skip{partner_layer}_{m}")([partner, main])

    return layers.Conv2D(2, 1, padding="same", name="head_logits")(h)
