"""A configurable CNN classifier for signals, images and volumes: stages of conv blocks with downsampling.

The spatial rank comes from the data: in_shape (C, L) -> 1D, (C, H, W) -> 2D, (C, D, H, W) -> 3D.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field
from torch import nn

from dltricks.nn import layers
from dltricks.nn.blocks import ConvNormAct
from dltricks.nn.models.registry import register_model
from dltricks.recipe import ModelSpec


class CNNSpec(ModelSpec):
    name: str = "cnn"
    channels: list[int] = Field(default_factory=lambda: [32, 64, 128], min_length=1,
                                description="width of each stage")
    blocks_per_stage: int = Field(1, ge=1)
    kernel_size: int = Field(3, ge=1)
    stack_3x3: bool = Field(False, description="realise each kxk conv as (k-1)/2 stacked 3x3 convs: "
                                               "same receptive field, fewer weights, more non-linearities")
    dilation: int = Field(1, ge=1)
    downsample: Literal["max", "avg", "stride", "none"] = "max"
    norm: Literal["batch", "group", "layer", "instance", "none"] = "batch"
    weight_standardization: bool = False
    separable: bool = False
    act: str = "relu"
    head: Literal["avg", "max", "flatten"] = "avg"


def conv_unit(spec: CNNSpec, in_ch: int, out_ch: int, dims: int, stride: int = 1) -> nn.Sequential:
    """One kxk conv block, or its stack of 3x3 equivalents (the last one carries the stride)."""
    kw = dict(dims=dims, dilation=spec.dilation, norm=spec.norm, act=spec.act,
              weight_standardization=spec.weight_standardization, separable=spec.separable)
    k = spec.kernel_size
    if spec.stack_3x3 and k > 3:
        if k % 2 == 0:
            raise ValueError(f"model.stack_3x3 needs an odd kernel_size, got {k}")
        n = (k - 1) // 2
        return nn.Sequential(*[ConvNormAct(in_ch if i == 0 else out_ch, out_ch, 3,
                                           stride=stride if i == n - 1 else 1, **kw) for i in range(n)])
    return nn.Sequential(ConvNormAct(in_ch, out_ch, k, stride=stride, **kw))


@register_model("cnn", CNNSpec)
def build_cnn(spec: CNNSpec, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    dims = len(in_shape) - 1
    if dims not in (1, 2, 3):
        raise ValueError(f"cnn needs (C, *spatial) input with 1-3 spatial dims, got shape {in_shape}")
    ch, size = in_shape[0], list(in_shape[1:])
    body: list[nn.Module] = []
    for i, width in enumerate(spec.channels):
        last_stage = i == len(spec.channels) - 1
        down = not last_stage and spec.downsample != "none" and min(size) >= 2
        for b in range(spec.blocks_per_stage):
            stride = 2 if down and spec.downsample == "stride" and b == spec.blocks_per_stage - 1 else 1
            body.append(conv_unit(spec, ch, width, dims, stride))
            ch = width
        if down and spec.downsample in ("max", "avg"):
            pool = layers.max_pool if spec.downsample == "max" else layers.avg_pool
            body.append(pool(dims, 2))
        if down:
            size = [s // 2 for s in size]
    if spec.head == "flatten":
        head = [nn.Flatten(), nn.Dropout(spec.dropout), nn.Linear(ch * math.prod(size), num_classes)]
    else:
        pool = layers.adaptive_avg_pool if spec.head == "avg" else layers.adaptive_max_pool
        head = [pool(dims, 1), nn.Flatten(), nn.Dropout(spec.dropout), nn.Linear(ch, num_classes)]
    return nn.Sequential(nn.Sequential(*body), nn.Sequential(*head))
