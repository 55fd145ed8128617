"""Attention over channels (squeeze-excitation) and over positions (multi-head self-attention)."""

from __future__ import annotations

import torch
from torch import nn

from dltricks.nn import layers
from dltricks.nn.layers import BuildError


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): average each channel over all positions, pass the channel
    vector through a small bottleneck MLP and rescale the channels by its sigmoid output. Gives every
    position a cheap view of global context.

    (N, C, *spatial) -> (N, C, *spatial). The MLP is two 1x1 convs with ``max(4, C // reduction)`` hidden
    units, so the block works unchanged for any ``dims``.
    """

    def __init__(self, channels: int, reduction: int = 16, dims: int = 2, act: str = "relu", min_hidden: int = 4):
        super().__init__()
        hidden = max(min_hidden, channels // reduction)
        self.fc1 = layers.conv(dims, channels, hidden, 1)
        self.act = layers.activation(act)
        self.fc2 = layers.conv(dims, hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(tuple(range(2, x.dim())), keepdim=True)  # squeeze: (N, C, 1, ...)
        return x * torch.sigmoid(self.fc2(self.act(self.fc1(s))))


class SelfAttention(nn.Module):
    """Multi-head self-attention over the positions of a sequence or feature map (Vaswani et al. 2017;
    SAGAN, Zhang et al. 2019; non-local nets, Wang et al. 2018): every position attends to every other, so
    the output sees the whole input however small the convolutional receptive field.

    (N, C, *spatial) -> (N, C, *spatial), with ``C % heads == 0``. Pre-norm (LayerNorm over channels) and a
    residual connection scaled by a learnable ``gamma`` initialised at ``init_scale`` (0 as in SAGAN: the
    block starts as the identity and the net learns how much non-local evidence to use). Cost grows with
    the square of the number of positions: use it on downsampled maps.
    """

    def __init__(self, channels: int, heads: int = 4, dims: int = 2, dropout: float = 0.0,
                 init_scale: float = 0.0):
        super().__init__()
        if channels % heads:
            raise BuildError(f"self-attention needs channels divisible by heads, got {channels} and {heads}")
        self.dims = dims
        self.norm = nn.LayerNorm(channels)
        self.attn = nn.MultiheadAttention(channels, heads, dropout=dropout, batch_first=True)
        self.gamma = nn.Parameter(torch.full((1,), float(init_scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, *spatial = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (N, positions, C)
        h = self.norm(tokens)
        a, _ = self.attn(h, h, h, need_weights=False)
        return x + self.gamma * a.transpose(1, 2).reshape(n, c, *spatial)
