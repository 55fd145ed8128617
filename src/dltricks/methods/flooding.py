"""Flooding (Ishida et al. 2020): keep the training loss floating around a small level ``b`` instead of
driving it to zero. The step minimises ``|loss - b| + b``: the usual descent while the loss is above ``b``,
ascent once it dips below, so the weights wander at a loss level rather than overfitting to zero loss.

This file is the whole set-up: the step that changes the loss, and the registration that says which recipes
select it. Its catalogue entry is in :mod:`dltricks.tricks.training`.
"""

from __future__ import annotations

import torch
from torch import nn

from dltricks.errors import DltricksError
from dltricks.loop.method import Batch, Method, Wrapped
from dltricks.methods.registry import Setup, register_method

__all__ = ["Flooded", "Flooding"]


class Flooded(Wrapped):
    """Any step, its loss flooded at ``level``."""

    def __init__(self, inner: Method, level: float) -> None:
        super().__init__(inner)
        self.level = level

    def loss(self, model: nn.Module, batch: Batch, progress: float) -> tuple[torch.Tensor, torch.Tensor]:
        loss, out = self.inner.loss(model, batch, progress)
        return (loss - self.level).abs() + self.level, out


@register_method("flooding")
class Flooding(Setup):
    """``train.flood_level > 0`` floods whichever step trains the model."""

    @classmethod
    def selects(cls, recipe, bundle) -> bool:
        return recipe.train.flood_level > 0

    def check(self) -> None:
        if self.recipe.train.meta != "none":  # its outer loop never asks a step for a loss
            raise DltricksError("train.flood_level floods the loss of the loop's step; train.meta owns its outer "
                                "loop: set one of them (train.flood_level = 0 or train.meta = 'none')")

    def wrap(self, step: Method, model: nn.Module) -> Method:
        return Flooded(step, self.recipe.train.flood_level)
