"""Convolution, normalisation and activation as one block, for 1D, 2D and 3D."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from dltricks.nn import layers

Order = Literal["conv-norm-act", "norm-act-conv"]


class WSConv(nn.Module):
    """A convolution with weight standardisation (Qiao et al. 2019): each filter is normalised to zero
    mean, unit variance before use. Paired with GroupNorm it recovers much of BatchNorm's benefit at
    batch sizes of 1-4. Wraps a regular ``nn.ConvNd`` so that its weights load as usual."""

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


def make_conv(in_ch: int, out_ch: int, kernel_size: int, dims: int, stride: int = 1, dilation: int = 1,
              padding: str | int = "same", groups: int = 1, bias: bool = True,
              weight_standardization: bool = False) -> nn.Module:
    """One convolution. ``padding="same"`` keeps the size (``dilation*(k-1)//2`` per side, which also works
    with stride > 1); ``"valid"`` pads nothing; an int pads that much."""
    if padding == "same":
        pad = dilation * (kernel_size - 1) // 2
    elif padding == "valid":
        pad = 0
    else:
        pad = int(padding)
    c = layers.conv(dims, in_ch, out_ch, kernel_size, stride=stride, padding=pad, dilation=dilation,
                    groups=groups, bias=bias)
    return WSConv(c) if weight_standardization else c


class ConvNormAct(nn.Sequential):
    """conv -> norm -> act (or the pre-activation order norm -> act -> conv), optionally separable.

    Input (N, in_ch, *spatial) with len(spatial) == dims; output (N, out_ch, *spatial / stride).
    ``separable=True`` splits the conv into a depthwise k^d conv and a pointwise 1x1 conv: about
    k^d + C_out instead of k^d * C_out weights per input channel.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, dims: int = 2, stride: int = 1,
                 dilation: int = 1, padding: str | int = "same", norm: str = "batch", act: str = "relu",
                 order: Order = "conv-norm-act", weight_standardization: bool = False,
                 separable: bool = False, dropout: float = 0.0, groups: int = 8):
        bias = norm == "none"  # a norm right after the conv makes its bias redundant
        ws = weight_standardization
        if separable:
            conv = nn.Sequential(
                make_conv(in_ch, in_ch, kernel_size, dims, stride, dilation, padding, groups=in_ch,
                          bias=False, weight_standardization=ws),
                make_conv(in_ch, out_ch, 1, dims, bias=bias, weight_standardization=ws))
        else:
            conv = make_conv(in_ch, out_ch, kernel_size, dims, stride, dilation, padding, bias=bias,
                             weight_standardization=ws)
        if order == "conv-norm-act":
            mods = [conv, layers.norm(norm, out_ch, dims, groups), layers.activation(act)]
        elif order == "norm-act-conv":
            mods = [layers.norm(norm, in_ch, dims, groups), layers.activation(act), conv]
        else:
            raise ValueError(f"unknown order {order!r}; valid: conv-norm-act, norm-act-conv")
        if dropout > 0:
            mods.append(layers.spatial_dropout(dims, dropout))
        super().__init__(*mods)
