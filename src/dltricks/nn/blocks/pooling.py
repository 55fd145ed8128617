"""Pooling blocks: spatial pyramid pooling (fixed-length output for any input size) and atrous spatial
pyramid pooling (parallel dilated branches for multi-scale context)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dltricks.nn import layers
from dltricks.nn.blocks.conv import ConvNormAct
from dltricks.nn.layers import BuildError


class SPP(nn.Module):
    """Spatial pyramid pooling (He et al. 2014, SPP-net): pool the map into 1, 2, 4, ... bins per axis and
    concatenate, so any input size gives the same vector length and a fully connected head still applies.

    (N, C, *spatial) -> (N, C * sum(level ** dims)). ``mode`` is ``max`` (as in the paper) or ``avg``.
    """

    def __init__(self, levels: Sequence[int] = (1, 2, 4), dims: int = 2, mode: str = "max"):
        super().__init__()
        if not levels or any(int(lv) < 1 for lv in levels):
            raise BuildError(f"SPP levels must be positive bin counts, got {list(levels)}")
        if mode not in layers.POOLS:
            raise BuildError(f"unknown SPP mode {mode!r}; valid: {', '.join(layers.POOLS)}")
        self.levels, self.dims = tuple(int(lv) for lv in levels), dims
        make = layers.adaptive_max_pool if mode == "max" else layers.adaptive_avg_pool
        self.pools = nn.ModuleList(make(dims, lv) for lv in self.levels)

    def out_features(self, channels: int) -> int:
        """Length of the output vector for ``channels`` input channels."""
        return channels * sum(lv ** self.dims for lv in self.levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([p(x).flatten(1) for p in self.pools], dim=1)


class ImagePool(nn.Module):
    """Global average -> 1x1 conv -> act, broadcast back over all positions (ASPP's image-level branch).
    No norm: on a 1x1 map BatchNorm would see a single value per channel at batch size 1."""

    def __init__(self, in_ch: int, out_ch: int, dims: int, act: str = "relu"):
        super().__init__()
        self.conv = layers.conv(dims, in_ch, out_ch, 1)
        self.act = layers.activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.act(self.conv(x.mean(tuple(range(2, x.dim())), keepdim=True)))
        return s.expand(-1, -1, *x.shape[2:])


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (Chen et al. 2017, DeepLab v3): a 1x1 branch, one 3^d branch per
    dilation ``rate`` and (optionally) an image-pooling branch look at the same map at several scales in
    parallel; their outputs are concatenated and projected back by a 1x1 conv.

    (N, in_ch, *spatial) -> (N, out_ch, *spatial).
    """

    def __init__(self, in_ch: int, out_ch: int, rates: Sequence[int] = (6, 12, 18), dims: int = 2,
                 norm: str = "batch", act: str = "relu", image_pool: bool = True, dropout: float = 0.0,
                 weight_standardization: bool = False):
        super().__init__()
        kw = {"dims": dims, "norm": norm, "act": act, "weight_standardization": weight_standardization}
        branches: list[nn.Module] = [ConvNormAct(in_ch, out_ch, 1, **kw)]
        branches += [ConvNormAct(in_ch, out_ch, 3, dilation=int(r), **kw) for r in rates]
        if image_pool:
            branches.append(ImagePool(in_ch, out_ch, dims, act))
        self.branches = nn.ModuleList(branches)
        self.project = ConvNormAct(out_ch * len(branches), out_ch, 1, dropout=dropout, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([b(x) for b in self.branches], dim=1))
