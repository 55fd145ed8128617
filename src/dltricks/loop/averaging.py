"""Weight averaging on :mod:`torch.optim.swa_utils`: an exponential moving average of the weights
(``train.ema``, per step) or stochastic weight averaging (``train.swa_start``, one sample per epoch end from
that epoch on, the learning rate annealed to ``train.swa_lr`` by ``SWALR``).

The averaged model is the one validated each epoch (once it exists), and the one the run ends on: its
batch-norm statistics are recomputed on the training inputs (``update_bn``) and its weights copied into the
trained model, so that what is tested and saved is the average. Its weights, its count and SWALR's state are
checkpointed with the loop, so a resumed run averages exactly what an uninterrupted one would.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import SWALR, AveragedModel, get_ema_multi_avg_fn, update_bn

from dltricks.recipe import TrainSpec

__all__ = ["WeightAverage", "weight_average"]

PREFIX = "average."  # its tensors' names in the checkpoint's state


def weight_average(model: nn.Module, cfg: TrainSpec, opt: torch.optim.Optimizer, steps: int
                   ) -> WeightAverage | None:
    """The recipe's weight average (None with ``train.ema = 0`` and ``train.swa_start = 0``)."""
    if not cfg.ema and not cfg.swa_start:
        return None
    return WeightAverage(model, cfg, opt, steps)


class WeightAverage:
    """One average of ``model``'s weights (and buffers: the running batch-norm statistics are averaged along,
    then recomputed at the end). ``steps`` is the number of optimiser steps in an epoch: SWALR's anneal."""

    def __init__(self, model: nn.Module, cfg: TrainSpec, opt: torch.optim.Optimizer, steps: int) -> None:
        self.model, self.opt, self.steps = model, opt, steps
        self.kind = "ema" if cfg.ema else "swa"
        self.decay, self.start = cfg.ema, cfg.swa_epoch
        self.swa_lr = cfg.swa_lr or float(cfg.lr) / 2  # a moderate rate: the SWA paper's 0.05 after 0.1
        self.avg: AveragedModel | None = None
        self.swalr: SWALR | None = None
        if self.kind == "ema":
            self._begin()

    def _begin(self) -> None:
        fn = get_ema_multi_avg_fn(self.decay) if self.kind == "ema" else None
        self.avg = AveragedModel(self.model, multi_avg_fn=fn, use_buffers=True)
        if self.kind == "swa":
            self.swalr = SWALR(self.opt, swa_lr=self.swa_lr, anneal_epochs=self.steps, anneal_strategy="cos")

    # ---- the loop's hooks ------------------------------------------------------------------------------
    def start_epoch(self, epoch: int) -> None:
        """SWA begins at the start of epoch ``swa_start``: from there SWALR sets the learning rate."""
        if self.kind == "swa" and self.avg is None and epoch >= self.start:
            self._begin()

    @property
    def schedules(self) -> bool:
        """SWALR has taken over the learning rate from the recipe's schedule."""
        return self.swalr is not None

    def after_step(self) -> None:
        """After an optimiser step: EMA takes the new weights in; SWA's learning rate moves on."""
        if self.kind == "ema":
            self.avg.update_parameters(self.model)
        elif self.swalr is not None:
            self.swalr.step()

    def end_epoch(self) -> None:
        """SWA samples the weights at each epoch's end."""
        if self.kind == "swa" and self.avg is not None:
            self.avg.update_parameters(self.model)

    @property
    def evaluated(self) -> nn.Module:
        """The model to validate: the average once it holds something, else the trained model."""
        if self.avg is not None and int(self.avg.n_averaged) > 0:
            return self.avg.module
        return self.model

    def finish(self, inputs: Iterable[torch.Tensor]) -> None:
        """Batch-norm statistics recomputed for the average over ``inputs`` (the training batches), then
        its weights into the trained model: the run ends on (tests and saves) the average."""
        if self.avg is None or int(self.avg.n_averaged) == 0:
            return
        with torch.random.fork_rng(devices=[]):  # dropout in the pass must not move the run's RNG
            update_bn(inputs, self.avg.module)
        self.model.load_state_dict(self.avg.module.state_dict())

    # ---- checkpoint ------------------------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        """The average's weights, buffers and count, named for the checkpoint."""
        if self.avg is None:
            return {}
        return {PREFIX + k: v for k, v in self.avg.state_dict().items()}

    def extra_state(self) -> dict[str, Any]:
        """SWALR's state as JSON (its anneal function is rebuilt, not stored)."""
        if self.swalr is None:
            return {}
        return {k: v for k, v in self.swalr.state_dict().items() if k != "anneal_func"}

    def load(self, tensors: dict[str, torch.Tensor], extra: dict[str, Any]) -> None:
        """Continue from a checkpoint's ``tensors`` and ``extra`` (after the optimiser is restored)."""
        mine = {k[len(PREFIX):]: v for k, v in tensors.items() if k.startswith(PREFIX)}
        if not mine:
            return
        lrs = [g["lr"] for g in self.opt.param_groups]
        if self.avg is None:
            self._begin()  # SWALR's first step moves the learning rate: the checkpoint's comes back below
        self.avg.load_state_dict(mine)
        if self.swalr is not None and extra:
            self.swalr.load_state_dict(copy.deepcopy(extra))
        for g, lr in zip(self.opt.param_groups, lrs):
            g["lr"] = lr
