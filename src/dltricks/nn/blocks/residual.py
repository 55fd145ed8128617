"""Residual blocks (He et al. 2016): basic, bottleneck and pre-activation, for 1D, 2D and 3D.

A residual block learns a correction ``F(x)`` to its input instead of a whole mapping, so gradients reach
early layers through the identity path; that is what makes 50+ layer nets trainable.
"""

from __future__ import annotations

import torch
from torch import nn

from dltricks.nn import layers
from dltricks.nn.blocks.attention import SqueezeExcite
from dltricks.nn.blocks.conv import ConvNormAct, LargeKernelConv, SeparableConv, make_conv


def projection(in_ch: int, out_ch: int, dims: int, stride: int = 1, norm: str = "batch",
               weight_standardization: bool = False, with_norm: bool = True) -> nn.Module:
    """The shortcut: identity when the shape is kept, else a strided 1x1 conv (+ norm) that matches it."""
    if in_ch == out_ch and stride == 1:
        return nn.Identity()
    conv = make_conv(in_ch, out_ch, 1, dims, stride=stride, padding=0, bias=norm == "none" or not with_norm,
                     weight_standardization=weight_standardization)
    if not with_norm:
        return conv
    return nn.Sequential(conv, layers.norm(norm, out_ch, dims))


class Residual(nn.Module):
    """``act(body(x) + shortcut(x))``: the generic residual unit the blocks below are made of.

    (N, C_in, *spatial) -> (N, C_out, *spatial'), where body and shortcut must agree on the output shape.
    """

    def __init__(self, body: nn.Module, shortcut: nn.Module | None = None, act: str = "relu"):
        super().__init__()
        self.body = body
        self.shortcut = shortcut if shortcut is not None else nn.Identity()
        self.act = layers.activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


def _zero_init_last_norm(body: nn.Module) -> None:
    # Goyal et al. 2017: a block that starts as the identity makes a deep net start shallow
    norms = [m for m in body.modules() if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm))]
    if norms and norms[-1].weight is not None:
        nn.init.zeros_(norms[-1].weight)


class BasicBlock(Residual):
    """Two k^d convs with a shortcut (ResNet-18/34): conv(stride)-norm-act, conv-norm, [SE], + x, act.

    (N, in_ch, *spatial) -> (N, out_ch, *spatial / stride). ``stack_3x3`` turns each k^d conv into its 3^d
    stack; ``se`` adds squeeze-excitation before the addition; ``dropout`` is spatial dropout between the
    convs; ``zero_init`` starts the block as the identity.
    """

    def __init__(self, in_ch: int, out_ch: int, dims: int = 2, stride: int = 1, kernel_size: int = 3,
                 dilation: int = 1, norm: str = "batch", act: str = "relu", weight_standardization: bool = False,
                 separable: bool = False, stack_3x3: bool = False, se: bool = False, se_reduction: int = 16,
                 dropout: float = 0.0, zero_init: bool = False):
        kw = {"dims": dims, "dilation": dilation, "norm": norm, "weight_standardization": weight_standardization,
              "separable": separable, "stack_3x3": stack_3x3}
        body = nn.Sequential(
            LargeKernelConv(in_ch, out_ch, kernel_size, stride=stride, act=act, dropout=dropout, **kw),
            LargeKernelConv(out_ch, out_ch, kernel_size, act=act, last_act="none", **kw))
        if se:
            body.append(SqueezeExcite(out_ch, se_reduction, dims))
        if zero_init:
            _zero_init_last_norm(body)
        super().__init__(body, projection(in_ch, out_ch, dims, stride, norm, weight_standardization), act)


class Bottleneck(Residual):
    """1x1 reduce, k^d conv (carries the stride, as in ResNet v1.5), 1x1 expand, with a shortcut (ResNet-50+).

    (N, in_ch, *spatial) -> (N, out_ch, *spatial / stride); the inner width is ``out_ch // expansion``
    unless ``width`` sets it (wide ResNets use a wider inner conv).
    """

    def __init__(self, in_ch: int, out_ch: int, dims: int = 2, stride: int = 1, kernel_size: int = 3,
                 dilation: int = 1, norm: str = "batch", act: str = "relu", weight_standardization: bool = False,
                 separable: bool = False, stack_3x3: bool = False, se: bool = False, se_reduction: int = 16,
                 dropout: float = 0.0, zero_init: bool = False, expansion: int = 4, width: int | None = None):
        mid = width or max(1, out_ch // expansion)
        kw = {"dims": dims, "norm": norm, "weight_standardization": weight_standardization}
        body = nn.Sequential(
            ConvNormAct(in_ch, mid, 1, act=act, **kw),
            LargeKernelConv(mid, mid, kernel_size, stride=stride, dilation=dilation, act=act, separable=separable,
                            stack_3x3=stack_3x3, dropout=dropout, **kw),
            ConvNormAct(mid, out_ch, 1, act="none", **kw))
        if se:
            body.append(SqueezeExcite(out_ch, se_reduction, dims))
        if zero_init:
            _zero_init_last_norm(body)
        super().__init__(body, projection(in_ch, out_ch, dims, stride, norm, weight_standardization), act)


class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016, Identity Mappings): norm-act-conv twice, + shortcut, no
    activation after the addition, so the identity path stays clean from input to output.

    (N, in_ch, *spatial) -> (N, out_ch, *spatial / stride). A projection shortcut takes the pre-activated
    input, as in the paper. A net of these needs a final norm-act before its head.
    """

    def __init__(self, in_ch: int, out_ch: int, dims: int = 2, stride: int = 1, kernel_size: int = 3,
                 dilation: int = 1, norm: str = "batch", act: str = "relu", weight_standardization: bool = False,
                 separable: bool = False, stack_3x3: bool = False, se: bool = False, se_reduction: int = 16,
                 dropout: float = 0.0, zero_init: bool = False):
        super().__init__()
        kw = {"dims": dims, "dilation": dilation, "norm": norm, "act": act,
              "weight_standardization": weight_standardization, "separable": separable, "order": "norm-act-conv"}
        self.pre = nn.Sequential(layers.norm(norm, in_ch, dims), layers.activation(act))
        # conv1 sees the already pre-activated input, so its first conv is bare; a 3x3 stack continues in
        # the pre-activation order and its last conv carries the stride
        n, k = ((kernel_size - 1) // 2, 3) if stack_3x3 and kernel_size > 3 else (1, kernel_size)
        if separable:
            first: nn.Module = SeparableConv(in_ch, out_ch, k, dims, stride if n == 1 else 1, dilation,
                                             bias=False, weight_standardization=weight_standardization)
        else:
            first = make_conv(in_ch, out_ch, k, dims, stride if n == 1 else 1, dilation, bias=False,
                              weight_standardization=weight_standardization)
        rest = [ConvNormAct(out_ch, out_ch, k, stride=stride if i == n - 1 else 1, **kw) for i in range(1, n)]
        self.conv1 = nn.Sequential(first, *rest)
        self.drop = layers.dropout(dims, dropout, spatial=True)
        self.conv2 = LargeKernelConv(out_ch, out_ch, kernel_size, stack_3x3=stack_3x3, **kw)
        self.se = SqueezeExcite(out_ch, se_reduction, dims) if se else nn.Identity()
        self.shortcut = projection(in_ch, out_ch, dims, stride, norm, weight_standardization, with_norm=False)
        self.project = not isinstance(self.shortcut, nn.Identity)
        if zero_init:
            convs = [m for m in self.conv2.modules() if isinstance(m, nn.modules.conv._ConvNd)]
            nn.init.zeros_(convs[-1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre(x)
        shortcut = self.shortcut(pre) if self.project else x
        out = self.conv2(self.drop(self.conv1(pre)))
        return self.se(out) + shortcut
