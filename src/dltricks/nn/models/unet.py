"""U-Net (Ronneberger et al. 2015) for 2D and 3D segmentation (1D works too).

An encoder halves the resolution level by level, a decoder brings it back, and skip connections hand each
decoder level the encoder's full-resolution features: context from the deep levels, detail from the skips.
Output (N, num_classes, *spatial) at the input's resolution for any input size (inputs that do not divide
by 2^(levels-1) are zero-padded and the output cropped back).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from dltricks.nn import layers
from dltricks.nn.blocks import DualPathway, LargeKernelConv, downsample
from dltricks.nn.blocks.conv import set_padding_mode
from dltricks.nn.models.registry import register_model, spatial_dims
from dltricks.recipe import ModelSpec

_LINEAR = {1: "linear", 2: "bilinear", 3: "trilinear"}


class UNetSpec(ModelSpec):
    name: str = "unet"
    channels: list[int] = Field(default_factory=lambda: [16, 32, 64], min_length=1,
                                description="width per level; the last is the bottleneck")
    norm: Literal["batch", "group", "layer", "instance", "none"] = "batch"
    skip_connections: bool = Field(True, description="concatenate encoder features into the decoder")
    QUIET_DEFAULTS = ("padding_mode",)  # added later: at "zeros" it leaves recipes and study names unchanged
    padding_mode: Literal["zeros", "reflect", "replicate", "circular"] = Field(
        "zeros", description="what the convolutions pad with: zeros, or the border's own values (reflect)")
    dilated_bottleneck: bool = Field(False, description="dilations 2, 4, ... in the bottleneck convs: more "
                                                        "context without more downsampling")
    dual_pathway: bool = Field(False, description="first level as a DeepMedic dual pathway (full + 1/3 res)")
    weight_standardization: bool = False
    kernel_size: int = Field(3, ge=1)
    act: str = "relu"
    downsample: Literal["max", "avg", "stride"] = "max"
    # ---- less common keys ----
    blocks_per_level: int = Field(2, ge=1, description="convs per level (2 in the paper)")
    stack_3x3: bool = Field(False, description="realise each kxk conv as stacked 3x3 convs")
    upsample: Literal["transpose", "nearest", "linear"] = Field(
        "transpose", description="2x transposed conv, or interpolation followed by a 1x1 conv")


class UNet(nn.Module):
    """(N, in_ch, *spatial) -> (N, num_classes, *spatial). See :class:`UNetSpec` for the options."""

    def __init__(self, spec: UNetSpec, in_ch: int, num_classes: int, dims: int):
        super().__init__()
        self.dims, self.skips = dims, spec.skip_connections
        ch = spec.channels
        self.levels = len(ch)
        kw = {"dims": dims, "norm": spec.norm, "act": spec.act,
              "weight_standardization": spec.weight_standardization, "stack_3x3": spec.stack_3x3}

        def block(cin: int, cout: int, dilations: list[int] | None = None) -> nn.Sequential:
            dil = dilations or [1] * spec.blocks_per_level
            return nn.Sequential(*[LargeKernelConv(cin if i == 0 else cout, cout, spec.kernel_size, dilation=d,
                                                   dropout=spec.dropout if i == len(dil) - 1 else 0.0, **kw)
                                   for i, d in enumerate(dil)])

        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        cin = in_ch
        for i, c in enumerate(ch[:-1]):
            if i == 0 and spec.dual_pathway:
                self.encoders.append(DualPathway(cin, c, dims, factor=3, depth=spec.blocks_per_level,
                                                 kernel_size=spec.kernel_size, norm=spec.norm, act=spec.act,
                                                 weight_standardization=spec.weight_standardization,
                                                 stack_3x3=spec.stack_3x3, dropout=spec.dropout))
            else:
                self.encoders.append(block(cin, c))
            self.downs.append(downsample(spec.downsample, c, dims, norm=spec.norm, act=spec.act,
                                         weight_standardization=spec.weight_standardization))
            cin = c
        dil = [2 ** (i + 1) for i in range(spec.blocks_per_level)] if spec.dilated_bottleneck else None
        if len(ch) == 1 and spec.dual_pathway:
            self.bottleneck: nn.Module = DualPathway(cin, ch[-1], dims, depth=spec.blocks_per_level,
                                                     kernel_size=spec.kernel_size, norm=spec.norm, act=spec.act)
        else:
            self.bottleneck = block(cin, ch[-1], dil)
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for i in reversed(range(len(ch) - 1)):
            if spec.upsample == "transpose":
                self.ups.append(layers.conv_transpose(dims, ch[i + 1], ch[i], 2, stride=2))
            else:
                mode = "nearest" if spec.upsample == "nearest" else _LINEAR[dims]
                self.ups.append(nn.Sequential(nn.Upsample(scale_factor=2, mode=mode),
                                              layers.conv(dims, ch[i + 1], ch[i], 1)))
            self.decoders.append(block(ch[i] * (2 if self.skips else 1), ch[i]))
        self.head = layers.conv(dims, ch[0], num_classes, 1)
        self.multiple = 2 ** (len(ch) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        # pad up to a multiple of 2^(levels-1) so every skip matches its decoder level, crop at the end
        extra = [(-s) % self.multiple for s in size]
        if any(extra):
            pad = [p for e in reversed(extra) for p in (0, e)]
            x = F.pad(x, pad)
        skips = []
        for enc, down in zip(self.encoders, self.downs):
            x = enc(x)
            skips.append(x)
            x = down(x)
        x = self.bottleneck(x)
        for up, dec, skip in zip(self.ups, self.decoders, reversed(skips)):
            x = up(x)
            x = dec(torch.cat([skip, x], dim=1) if self.skips else x)
        x = self.head(x)
        if any(extra):
            x = x[(slice(None), slice(None), *(slice(0, s) for s in size))]
        return x


@register_model("unet", UNetSpec)
def build_unet(spec: UNetSpec, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    dims = spatial_dims("unet", in_shape)
    return set_padding_mode(UNet(spec, in_shape[0], num_classes, dims), spec.padding_mode)
