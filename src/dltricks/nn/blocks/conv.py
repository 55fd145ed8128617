"""Convolution, normalisation and activation as one block, for 1D, 2D and 3D.

Also the convolution variants the tips are about: weight-standardised, depthwise-separable, a large
kernel or its stack of 3x3 equivalents, and the choice between pooling and strided convolution.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from dltricks.nn import layers
from dltricks.nn.layers import BuildError

Order = Literal["conv-norm-act", "norm-act-conv"]
Padding = Literal["same", "valid"] | int
DOWNSAMPLES = ("max", "avg", "stride", "none")


class WSConv(nn.Module):
    """A convolution with weight standardisation (Qiao et al. 2019): each filter is normalised to zero
    mean, unit variance before use. Paired with GroupNorm it recovers much of BatchNorm's benefit at
    batch sizes of 1-4. Wraps a regular ``nn.ConvNd`` so that its weights load as usual.

    Shapes are those of the wrapped conv: (N, C_in, *spatial) -> (N, C_out, *spatial')."""

    def __init__(self, conv: nn.Module, eps: float = 1e-5):
        super().__init__()
        self.conv, self.eps = conv, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.conv.weight
        dims = tuple(range(1, w.dim()))
        w = (w - w.mean(dims, keepdim=True)) / torch.sqrt(w.var(dims, keepdim=True, unbiased=False) + self.eps)
        c = self.conv
        fn = {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}[w.dim()]
        if c.padding_mode != "zeros":
            x = F.pad(x, c._reversed_padding_repeated_twice, mode=c.padding_mode)
            return fn(x, w, c.bias, c.stride, 0, c.dilation, c.groups)
        return fn(x, w, c.bias, c.stride, c.padding, c.dilation, c.groups)


def same_padding(kernel_size: int, dilation: int = 1) -> int:
    """Padding per side that keeps the size at stride 1 for odd kernels (``dilation*(k-1)//2``)."""
    return dilation * (kernel_size - 1) // 2


def resolve_padding(padding: Padding, kernel_size: int, dilation: int = 1) -> int:
    if padding == "same":
        return same_padding(kernel_size, dilation)
    if padding == "valid":
        return 0
    if isinstance(padding, int) and not isinstance(padding, bool) and padding >= 0:
        return padding
    raise BuildError(f"padding must be 'same', 'valid' or an int >= 0, got {padding!r}")


PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def set_padding_mode(model: nn.Module, mode: str) -> nn.Module:
    """What every (non-transposed) convolution of ``model`` pads with: zeros (PyTorch's default) or the
    border's own values. Set after building, so every block of every model takes it alike; ``nn.ConvNd``
    keeps the padding amounts it needs for any mode."""
    if mode not in PADDING_MODES:
        raise BuildError(f"padding_mode must be one of {', '.join(PADDING_MODES)}, got {mode!r}")
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd) and not m.transposed:
            m.padding_mode = mode
    return model


def make_conv(in_ch: int, out_ch: int, kernel_size: int, dims: int, stride: int = 1, dilation: int = 1,
              padding: Padding = "same", groups: int = 1, bias: bool = True,
              weight_standardization: bool = False) -> nn.Module:
    """One convolution. ``padding="same"`` keeps the size (``dilation*(k-1)//2`` per side, which also works
    with stride > 1); ``"valid"`` pads nothing; an int pads that much."""
    pad = resolve_padding(padding, kernel_size, dilation)
    c = layers.conv(dims, in_ch, out_ch, kernel_size, stride=stride, padding=pad, dilation=dilation,
                    groups=groups, bias=bias)
    return WSConv(c) if weight_standardization else c


class SeparableConv(nn.Sequential):
    """Depthwise-separable convolution (Chollet 2017; MobileNet): a depthwise k^d conv per channel, then a
    pointwise 1x1 conv that mixes channels. About k^d + C_out weights per input channel instead of
    k^d * C_out, with the same receptive field.

    (N, in_ch, *spatial) -> (N, out_ch, *spatial / stride). Children ``0`` (depthwise) and ``1`` (pointwise).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, dims: int = 2, stride: int = 1,
                 dilation: int = 1, padding: Padding = "same", bias: bool = True,
                 weight_standardization: bool = False):
        ws = weight_standardization
        super().__init__(
            make_conv(in_ch, in_ch, kernel_size, dims, stride, dilation, padding, groups=in_ch, bias=False,
                      weight_standardization=ws),
            make_conv(in_ch, out_ch, 1, dims, bias=bias, weight_standardization=ws))


class ConvNormAct(nn.Sequential):
    """conv -> norm -> act (or the pre-activation order norm -> act -> conv), optionally separable.

    Input (N, in_ch, *spatial) with len(spatial) == dims; output (N, out_ch, *spatial / stride).
    ``separable=True`` splits the conv into a depthwise k^d conv and a pointwise 1x1 conv: about
    k^d + C_out instead of k^d * C_out weights per input channel. ``dropout`` is spatial dropout (whole
    channels) after the block. ``groups`` is the number of GroupNorm groups (for ``norm="group"``).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, dims: int = 2, stride: int = 1,
                 dilation: int = 1, padding: Padding = "same", norm: str = "batch", act: str = "relu",
                 order: Order = "conv-norm-act", weight_standardization: bool = False,
                 separable: bool = False, dropout: float = 0.0, groups: int = 8):
        if order not in ("conv-norm-act", "norm-act-conv"):
            raise BuildError(f"unknown order {order!r}; valid: conv-norm-act, norm-act-conv")
        # a norm right after the conv makes its bias redundant (the norm's shift replaces it); in the
        # pre-activation order the next block's norm does the same
        bias = norm == "none"
        ws = weight_standardization
        if separable:
            conv = SeparableConv(in_ch, out_ch, kernel_size, dims, stride, dilation, padding, bias=bias,
                                 weight_standardization=ws)
        else:
            conv = make_conv(in_ch, out_ch, kernel_size, dims, stride, dilation, padding, bias=bias,
                             weight_standardization=ws)
        if order == "conv-norm-act":
            mods = [conv, layers.norm(norm, out_ch, dims, groups), layers.activation(act)]
        else:
            mods = [layers.norm(norm, in_ch, dims, groups), layers.activation(act), conv]
        if dropout > 0:
            mods.append(layers.dropout(dims, dropout, spatial=True))
        super().__init__(*mods)


class LargeKernelConv(nn.Sequential):
    """A k^d convolution block, or its stack of 3^d equivalents from one option (Simonyan & Zisserman 2015).

    ``stack_3x3=True`` realises the k x k conv as (k-1)/2 stacked 3x3 :class:`ConvNormAct` (2 stacked
    = 5x5, 3 = 7x7): the same receptive field (also with dilation), fewer weights (2*9 = 18 vs 25 per
    channel pair, 27 vs 49) and a non-linearity after each. The last conv of the stack carries the stride.
    Extra keyword arguments go to every :class:`ConvNormAct`; ``last_act`` overrides the activation of the
    last one (``"none"`` where a residual addition follows).

    (N, in_ch, *spatial) -> (N, out_ch, *spatial / stride).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 7, dims: int = 2, stride: int = 1,
                 stack_3x3: bool = False, last_act: str | None = None, **kwargs):
        k = kernel_size
        n = 1
        if stack_3x3 and k > 3:
            if k % 2 == 0:
                raise BuildError(f"stack_3x3 needs an odd kernel_size, got {k}")
            n, k = (k - 1) // 2, 3
        mods = []
        for i in range(n):
            kw = dict(kwargs)
            if i == n - 1 and last_act is not None:
                kw["act"] = last_act  # e.g. "none" before a residual addition
            if i < n - 1:
                kw.pop("dropout", None)  # spatial dropout once, after the whole unit
            mods.append(ConvNormAct(in_ch if i == 0 else out_ch, out_ch, k, dims,
                                    stride=stride if i == n - 1 else 1, **kw))
        super().__init__(*mods)


def downsample(kind: str, channels: int, dims: int, factor: int = 2, norm: str = "batch", act: str = "relu",
               weight_standardization: bool = False) -> nn.Module:
    """Halve (``factor``) the resolution: ``max``/``avg`` pooling (no weights, fixed), ``stride`` a learned
    strided 3^d conv (Springenberg et al. 2015, "all convolutional net"), ``none`` the identity.

    (N, C, *spatial) -> (N, C, *spatial / factor)."""
    if kind in ("max", "avg"):
        return layers.pool(kind, dims, factor)
    if kind == "stride":
        return ConvNormAct(channels, channels, max(3, factor), dims, stride=factor, norm=norm, act=act,
                           weight_standardization=weight_standardization)
    if kind == "none":
        return nn.Identity()
    raise BuildError(f"unknown downsample {kind!r}; valid: {', '.join(DOWNSAMPLES)}")
