"""A configurable CNN classifier for signals, images and volumes: stages of conv blocks with downsampling.

The spatial rank comes from the data: in_shape (C, L) -> 1D, (C, H, W) -> 2D, (C, D, H, W) -> 3D.
Each stage is ``blocks_per_stage`` conv units (one k^d conv, or its stack of 3^d convs), optionally
residual and with squeeze-excitation, followed by downsampling (except after the last stage); an optional
self-attention block follows the last stage; the head pools (avg, max, SPP) or flattens.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field
from torch import nn

from dltricks.nn import layers
from dltricks.nn.blocks import SPP, LargeKernelConv, SelfAttention, SqueezeExcite
from dltricks.nn.blocks.conv import set_padding_mode
from dltricks.nn.blocks.residual import Residual, projection
from dltricks.nn.layers import BuildError
from dltricks.nn.models.registry import register_model, spatial_dims
from dltricks.nn.shapes import output_shape
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
    head: Literal["avg", "max", "flatten", "spp"] = "avg"
    # ---- architecture tricks (off by default: the plain CNN above is unchanged) ----
    padding: Literal["same", "valid"] = Field("same", description="valid shrinks every map by k-1")
    QUIET_DEFAULTS = ("padding_mode",)  # added later: at "zeros" it leaves recipes and study names unchanged
    padding_mode: Literal["zeros", "reflect", "replicate", "circular"] = Field(
        "zeros", description="what 'same' padding pads with: zeros, or the border's own values (reflect)")
    residual: bool = Field(False, description="a shortcut around each conv unit (1x1 projection when the "
                                              "shape changes)")
    se: bool = Field(False, description="squeeze-excitation after each conv unit")
    se_reduction: int = Field(16, ge=1)
    attention: bool = Field(False, description="multi-head self-attention over positions after the last stage")
    attention_heads: int = Field(4, ge=1)
    spp_levels: list[int] = Field(default_factory=lambda: [1, 2, 4], min_length=1,
                                  description="bins per axis of the SPP head")
    spatial_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="drop whole channels after each conv unit")


def conv_unit(spec: CNNSpec, in_ch: int, out_ch: int, dims: int, stride: int = 1) -> nn.Module:
    """One kxk conv block, or its stack of 3x3 equivalents (the last one carries the stride); with
    ``residual`` wrapped in a shortcut, with ``se`` followed by squeeze-excitation."""
    kw = {"dims": dims, "stride": stride, "stack_3x3": spec.stack_3x3, "dilation": spec.dilation,
          "norm": spec.norm, "act": spec.act, "weight_standardization": spec.weight_standardization,
          "separable": spec.separable, "padding": spec.padding, "dropout": spec.spatial_dropout}
    if spec.residual:
        if spec.padding == "valid":
            raise BuildError("model.residual needs padding = 'same' (a shortcut cannot match a shrunk map)")
        body = LargeKernelConv(in_ch, out_ch, spec.kernel_size, last_act="none", **kw)
        if spec.se:
            body.append(SqueezeExcite(out_ch, spec.se_reduction, dims))
        shortcut = projection(in_ch, out_ch, dims, stride, spec.norm, spec.weight_standardization)
        return Residual(body, shortcut, spec.act)
    unit = LargeKernelConv(in_ch, out_ch, spec.kernel_size, **kw)
    if spec.se:
        unit.append(SqueezeExcite(out_ch, spec.se_reduction, dims))
    return unit


@register_model("cnn", CNNSpec)
def build_cnn(spec: CNNSpec, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    dims = spatial_dims("cnn", in_shape)
    shape = tuple(in_shape)
    ch = shape[0]
    body: list[nn.Module] = []

    def add(m: nn.Module) -> None:
        nonlocal shape
        body.append(m)
        shape = output_shape(m, shape)

    for i, width in enumerate(spec.channels):
        last_stage = i == len(spec.channels) - 1
        down = not last_stage and spec.downsample != "none" and min(shape[1:]) >= 2
        for b in range(spec.blocks_per_stage):
            stride = 2 if down and spec.downsample == "stride" and b == spec.blocks_per_stage - 1 else 1
            add(conv_unit(spec, ch, width, dims, stride))
            ch = width
        if down and spec.downsample in ("max", "avg"):
            add(layers.pool(spec.downsample, dims, 2))
    if spec.attention:
        if ch % spec.attention_heads:
            raise BuildError(f"model.attention_heads = {spec.attention_heads} must divide the last stage's "
                             f"width {ch}")
        body.append(SelfAttention(ch, spec.attention_heads, dims))
    if spec.head == "flatten":
        head = [nn.Flatten(), nn.Dropout(spec.dropout), nn.Linear(ch * math.prod(shape[1:]), num_classes)]
    elif spec.head == "spp":
        spp = SPP(spec.spp_levels, dims, "max")
        head = [spp, nn.Dropout(spec.dropout), nn.Linear(spp.out_features(ch), num_classes)]
    else:
        pool = layers.adaptive_avg_pool if spec.head == "avg" else layers.adaptive_max_pool
        head = [pool(dims, 1), nn.Flatten(), nn.Dropout(spec.dropout), nn.Linear(ch, num_classes)]
    return set_padding_mode(nn.Sequential(nn.Sequential(*body), nn.Sequential(*head)), spec.padding_mode)

