"""A zero-shot dataset whose classes are described by attributes by construction (no download).

Each sample is a 1D signal (1, 64) made of the parts its class has, out of six: a slow wave, a fast wave,
a bump on the left, a bump on the right, a dip in the centre and a rising ramp. A class is one
combination of two or three parts (its attribute vector, e.g. ``slow_wave+bump_right``); twenty such
combinations are the classes. Every part is drawn with a random amplitude (0.6-1.4) and shift (up to 4
samples), plus gaussian noise, so a class is recognisable only by the parts it shows. Because every part
also appears in other classes, a model that learns to see the parts on some classes can recognise an
unseen combination from its description alone: the set-up of Lampert et al.'s Animals with Attributes,
built so that it needs no download.
"""

from __future__ import annotations

import itertools
import math

import torch
from pydantic import Field

from dltricks.data.bundle import DataBundle
from dltricks.data.registry import register_dataset
from dltricks.recipe import DataSpec

ATTRIBUTES = ["slow_wave", "fast_wave", "bump_left", "bump_right", "dip_centre", "ramp"]
LENGTH = 64


def class_table(n: int = 20) -> dict[str, list[float]]:
    """The first ``n`` of all 2- and 3-part combinations (35), in a fixed shuffled order: name -> 0/1 vector."""
    combos = [c for r in (2, 3) for c in itertools.combinations(range(len(ATTRIBUTES)), r)]
    order = torch.randperm(len(combos), generator=torch.Generator().manual_seed(0)).tolist()
    out = {}
    for i in order[:n]:
        parts = combos[i]
        out["+".join(ATTRIBUTES[p] for p in parts)] = [1.0 if a in parts else 0.0 for a in range(len(ATTRIBUTES))]
    return out


class Zsl1dSpec(DataSpec):
    name: str = "zsl1d"
    num_classes: int = Field(20, ge=2, le=35, description="how many part combinations are classes")
    per_class: int = Field(100, ge=2, description="samples per class (train and test together)")
    test_fraction: float = Field(0.3, gt=0.0, lt=1.0)
    noise: float = Field(0.3, ge=0.0, description="std of gaussian noise")
    data_seed: int = Field(0, ge=0)


def _parts(n: int, g: torch.Generator) -> torch.Tensor:
    """(n, 6, 64): each part drawn n times with its own amplitude and shift."""
    t = torch.arange(LENGTH).float()
    shift = (torch.rand(n, 1, generator=g) * 8 - 4)
    amp = 0.6 + 0.8 * torch.rand(n, len(ATTRIBUTES), 1, generator=g)
    u = (t - shift) / LENGTH  # (n, 64)

    def bump(c, w=0.06):
        return torch.exp(-((u - c) ** 2) / (2 * w**2))

    parts = torch.stack([torch.sin(2 * math.pi * u), torch.sin(8 * math.pi * u), bump(0.25), bump(0.75),
                         -bump(0.5), 2 * u - 1], 1)
    return amp * parts


@register_dataset("zsl1d", Zsl1dSpec)
def load_zsl1d(spec: Zsl1dSpec, seed: int) -> DataBundle:
    table = class_table(spec.num_classes)
    names = list(table)
    attrs = torch.tensor([table[n] for n in names])  # (K, 6)
    g = torch.Generator().manual_seed(spec.data_seed)
    y = torch.arange(len(names)).repeat_interleave(spec.per_class)
    x = (_parts(len(y), g) * attrs[y][:, :, None]).sum(1, keepdim=True)
    x = x + spec.noise * torch.randn(x.shape, generator=g)
    perm = torch.randperm(len(y), generator=g)
    n_test = int(round(len(y) * spec.test_fraction))
    te, tr = perm[:n_test], perm[n_test:]
    bundle = DataBundle(train=(x[tr], y[tr]), test=(x[te], y[te]), num_classes=len(names), class_names=names)
    bundle.attributes = {n: torch.tensor(v) for n, v in table.items()}
    return bundle
