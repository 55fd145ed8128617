"""Small ResNets for signals, images and volumes (He et al. 2016), up to ResNet-50-sized ones.

The defaults are a CIFAR-style ResNet for small inputs (3x3 stem, no stem pooling, three stages of two
basic blocks); ``resnet50_spec()`` gives the ImageNet ResNet-50 layout (v1.5: the stride sits on the 3x3).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from torch import nn

from dltricks.nn import layers
from dltricks.nn.blocks import BasicBlock, Bottleneck, LargeKernelConv, PreActBlock
from dltricks.nn.models.registry import register_model, spatial_dims
from dltricks.recipe import ModelSpec

_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck, "preact": PreActBlock}


class ResNetSpec(ModelSpec):
    name: str = "resnet"
    block: Literal["basic", "bottleneck", "preact"] = "basic"
    layers: list[int] = Field(default_factory=lambda: [2, 2, 2], min_length=1, description="blocks per stage")
    channels: list[int] = Field(default_factory=lambda: [16, 32, 64], min_length=1,
                                description="width per stage (bottleneck: inner width; the output is 4x)")
    stem_channels: int = Field(16, ge=1)
    stem_kernel: int = Field(3, ge=1)
    stem_stride: int = Field(1, ge=1)
    stem_pool: bool = Field(False, description="3x3 max-pool with stride 2 after the stem (ImageNet style)")
    stack_3x3: bool = Field(False, description="realise the stem's kxk conv as stacked 3x3 convs (ResNet-C)")
    kernel_size: int = Field(3, ge=1)
    downsample: Literal["stride", "max", "avg"] = Field(
        "stride", description="how stages 2+ halve the resolution: strided conv in the first block, or pooling")
    norm: Literal["batch", "group", "layer", "instance", "none"] = "batch"
    weight_standardization: bool = False
    act: str = "relu"
    se: bool = False
    se_reduction: int = Field(16, ge=1)
    zero_init_residual: bool = Field(True, description="start each block as the identity (Goyal et al. 2017)")
    spatial_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="between the convs of each block")

    @model_validator(mode="after")
    def _same_length(self) -> ResNetSpec:
        if len(self.layers) != len(self.channels):
            raise ValueError(f"layers ({len(self.layers)} stages) and channels ({len(self.channels)}) "
                             "must have the same length")
        return self


def resnet50_spec(**overrides) -> ResNetSpec:
    """The ResNet-50 layout: 7x7/2 stem + max-pool, bottleneck stages [3, 4, 6, 3] of width 64-512."""
    kw = {"block": "bottleneck", "layers": [3, 4, 6, 3], "channels": [64, 128, 256, 512], "stem_channels": 64,
          "stem_kernel": 7, "stem_stride": 2, "stem_pool": True, "zero_init_residual": False}
    kw.update(overrides)
    return ResNetSpec(**kw)


class ResNet(nn.Module):
    """stem -> stages of residual blocks -> global average pool -> linear.

    (N, C, *spatial) -> (N, num_classes). ``features(x)`` returns the last (N, C', *spatial') map."""

    def __init__(self, spec: ResNetSpec, in_ch: int, num_classes: int, dims: int):
        super().__init__()
        block = _BLOCKS[spec.block]
        expansion = 4 if spec.block == "bottleneck" else 1
        pre = spec.block == "preact"
        stem: list[nn.Module] = [LargeKernelConv(
            in_ch, spec.stem_channels, spec.stem_kernel, dims, stride=spec.stem_stride, stack_3x3=spec.stack_3x3,
            norm=spec.norm, act=spec.act, weight_standardization=spec.weight_standardization)]
        if spec.stem_pool:
            stem.append(layers.max_pool(dims, 3, 2, padding=1))
        self.stem = nn.Sequential(*stem)
        ch = spec.stem_channels
        stages = []
        for i, (n, width) in enumerate(zip(spec.layers, spec.channels)):
            out = width * expansion
            blocks: list[nn.Module] = []
            stride = 1 if i == 0 else 2
            if stride == 2 and spec.downsample != "stride":
                blocks.append(layers.pool(spec.downsample, dims, 2))
                stride = 1
            kw = {"kernel_size": spec.kernel_size, "norm": spec.norm, "act": spec.act, "se": spec.se,
                  "weight_standardization": spec.weight_standardization, "se_reduction": spec.se_reduction,
                  "dropout": spec.spatial_dropout, "zero_init": spec.zero_init_residual}
            for b in range(n):
                blocks.append(block(ch, out, dims, stride=stride if b == 0 else 1, **kw))
                ch = out
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        # pre-activation blocks leave their output un-normalised: one final norm-act (He et al. 2016b)
        self.final = nn.Sequential(layers.norm(spec.norm, ch, dims), layers.activation(spec.act)) if pre \
            else nn.Identity()
        self.head = nn.Sequential(layers.adaptive_avg_pool(dims, 1), nn.Flatten(), nn.Dropout(spec.dropout),
                                  nn.Linear(ch, num_classes))

    def features(self, x):
        return self.final(self.stages(self.stem(x)))

    def forward(self, x):
        return self.head(self.features(x))


@register_model("resnet", ResNetSpec)
def build_resnet(spec: ResNetSpec, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    dims = spatial_dims("resnet", in_shape)
    return ResNet(spec, in_shape[0], num_classes, dims)
