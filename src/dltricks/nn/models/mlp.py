"""A multilayer perceptron on flattened input."""

from __future__ import annotations

import math

from pydantic import Field
from torch import nn

from dltricks.nn import layers
from dltricks.nn.models.registry import register_model
from dltricks.recipe import ModelSpec


class MLPSpec(ModelSpec):
    name: str = "mlp"
    hidden: list[int] = Field(default_factory=lambda: [100, 100], description="width of each hidden layer")
    act: str = "relu"
    norm: str = Field("none", pattern="^(none|batch|layer)$")


@register_model("mlp", MLPSpec)
def build_mlp(spec: MLPSpec, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    mods: list[nn.Module] = [nn.Flatten()]
    width = math.prod(in_shape)
    for h in spec.hidden:
        mods.append(nn.Linear(width, h))
        if spec.norm == "batch":
            mods.append(nn.BatchNorm1d(h))
        elif spec.norm == "layer":
            mods.append(nn.LayerNorm(h))
        mods.append(layers.activation(spec.act))
        if spec.dropout:
            mods.append(nn.Dropout(spec.dropout))
        width = h
    mods.append(nn.Linear(width, num_classes))
    return nn.Sequential(*mods)
