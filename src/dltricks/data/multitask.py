"""A bundled multi-task dataset whose targets live on very different scales: MNIST-1D signals with

- ``digit``: the class (10 classes);
- ``peak``: where the signal is highest, in samples (0..L-1; spread ~10);
- ``energy``: the signal's mean square times ``energy_scale`` (1000 by default; spread ~hundreds).

Both regression targets are exact functions of the input, so a model can learn them all; with raw
targets the energy's loss is orders of magnitude larger than the others and drowns them, which is what
``train.normalize_targets`` (seed 004's tip) is for.
"""

from __future__ import annotations

import torch
from pydantic import Field

from dltricks.data.bundle import DataBundle, Target
from dltricks.data.mnist1d import Mnist1dSpec, load_mnist1d
from dltricks.data.registry import register_dataset


class Mnist1dTasksSpec(Mnist1dSpec):
    name: str = "mnist1d_tasks"
    energy_scale: float = Field(1000.0, gt=0.0, description="the energy target's unit")


def _targets(x: torch.Tensor, y: torch.Tensor, energy_scale: float) -> torch.Tensor:
    sig = x[:, 0]
    peak = sig.argmax(1).float()
    energy = sig.pow(2).mean(1) * energy_scale
    return torch.stack([y.float(), peak, energy], 1)


@register_dataset("mnist1d_tasks", Mnist1dTasksSpec)
def load_mnist1d_tasks(spec: Mnist1dTasksSpec, seed: int) -> DataBundle:
    base = load_mnist1d(spec, seed)
    (x, y), (xt, yt) = base.train, base.test
    targets = [Target("digit", "classification", 10), Target("peak", "regression"),
               Target("energy", "regression")]
    return DataBundle(train=(x, _targets(x, y, spec.energy_scale)), test=(xt, _targets(xt, yt, spec.energy_scale)),
                      task="multitask", num_classes=sum(t.outputs for t in targets), targets=targets)
