"""A 1D regression toy for predictive uncertainty: ``y = x^3 + noise`` (Hernandez-Lobato & Adams 2015)
with a gap in the training inputs, where a good predictive should widen its intervals.

Training inputs are uniform on ``[-range, range]`` minus ``(-gap, gap)``; test inputs are uniform on the
whole range, gap included. ``y`` (N, 1) is one regression target; ``x`` (N, 1) one feature.
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator

from dltricks.data.bundle import DataBundle, Target
from dltricks.data.registry import register_dataset
from dltricks.recipe import DataSpec


class Cubic1dSpec(DataSpec):
    name: str = "cubic1d"
    num_train: int = Field(160, ge=10)
    num_test: int = Field(400, ge=10)
    range: float = Field(4.0, gt=0.0, description="inputs lie in [-range, range]")
    gap: float = Field(1.5, ge=0.0, description="no training inputs in (-gap, gap); 0 = no gap")
    noise: float = Field(3.0, ge=0.0, description="std of the Gaussian noise on y")
    data_seed: int = Field(0, description="seed of the generated data")

    @model_validator(mode="after")
    def _gap_inside(self) -> Cubic1dSpec:
        if self.gap >= self.range:
            raise ValueError(f"gap = {self.gap} must be smaller than range = {self.range}")
        return self


@register_dataset("cubic1d", Cubic1dSpec)
def load_cubic1d(spec: Cubic1dSpec, seed: int) -> DataBundle:
    g = torch.Generator().manual_seed(spec.data_seed)
    side = spec.range - spec.gap
    u = torch.rand(spec.num_train, generator=g) * 2 * side - side  # [-side, side], then pushed out of the gap
    x = (u + torch.sign(u) * spec.gap)[:, None]
    xt = (torch.rand(spec.num_test, generator=g) * 2 - 1)[:, None] * spec.range

    def f(v: torch.Tensor) -> torch.Tensor:
        return v.pow(3) + spec.noise * torch.randn(v.shape, generator=g)

    return DataBundle(train=(x, f(x)), test=(xt, f(xt)), task="regression", num_classes=1,
                      targets=[Target("y", "regression")])
