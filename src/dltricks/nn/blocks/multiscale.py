"""Multi-scale blocks: a full-resolution and a downsampled pathway, fused (DeepMedic style)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dltricks.nn import layers
from dltricks.nn.blocks.conv import ConvNormAct, LargeKernelConv
from dltricks.nn.layers import BuildError

_LINEAR = {1: "linear", 2: "bilinear", 3: "trilinear"}


class DualPathway(nn.Module):
    """Two pathways over the same input (Kamnitsas et al. 2017, DeepMedic): ``depth`` convs at full
    resolution for detail, the same on a copy average-pooled by ``factor`` for context, the low pathway
    upsampled back and both fused by a 1x1 conv. The low pathway's receptive field is ``factor`` times
    larger for the same number of weights.

    (N, in_ch, *spatial) -> (N, out_ch, *spatial). Any input size works: the pooled copy uses ceil mode
    and the low pathway is resized to the full one exactly.
    """

    def __init__(self, in_ch: int, out_ch: int, dims: int = 2, factor: int = 3, depth: int = 2,
                 kernel_size: int = 3, low_channels: int | None = None, norm: str = "batch", act: str = "relu",
                 weight_standardization: bool = False, stack_3x3: bool = False, dropout: float = 0.0,
                 upsample: str = "nearest"):
        super().__init__()
        if factor < 2 or depth < 1:
            raise BuildError(f"dual pathway needs factor >= 2 and depth >= 1, got {factor} and {depth}")
        if upsample not in ("nearest", "linear"):
            raise BuildError(f"unknown upsample {upsample!r}; valid: nearest, linear")
        low = low_channels or out_ch
        kw = {"dims": dims, "norm": norm, "act": act, "weight_standardization": weight_standardization,
              "stack_3x3": stack_3x3}
        self.full = nn.Sequential(*[LargeKernelConv(in_ch if i == 0 else out_ch, out_ch, kernel_size, **kw)
                                    for i in range(depth)])
        self.down = layers.avg_pool(dims, factor, factor, ceil_mode=True)
        self.low = nn.Sequential(*[LargeKernelConv(in_ch if i == 0 else low, low, kernel_size, **kw)
                                   for i in range(depth)])
        self.fuse = ConvNormAct(out_ch + low, out_ch, 1, dims, norm=norm, act=act, dropout=dropout,
                                weight_standardization=weight_standardization)
        self.mode = "nearest" if upsample == "nearest" else _LINEAR[dims]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        full = self.full(x)
        low = self.low(self.down(x))
        kw = {} if self.mode == "nearest" else {"align_corners": False}
        low = F.interpolate(low, size=full.shape[2:], mode=self.mode, **kw)
        return self.fuse(torch.cat([full, low], dim=1))
