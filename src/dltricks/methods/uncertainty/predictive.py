"""Predictive distributions of a trained network: what a model says, and how sure it is.

A :class:`Predictive` maps a batch of inputs ``x`` (N, C, *spatial) or (N, F) to

- classification: probabilities (N, K);
- regression: a Gaussian over the model's output units (standardised targets when the task normalises
  them), ``mean`` and ``var`` (N,), where ``var`` is the model's own (epistemic) variance; the
  observation noise is ``noise_var`` when the predictive knows it (a GP's likelihood) and is otherwise
  estimated from the training residuals (:mod:`.evaluate`).

The plain network (one deterministic pass), MC dropout (Gal & Ghahramani 2016: dropout kept on at test
time, S passes averaged) and a deep ensemble (Lakshminarayanan et al. 2017: members averaged) live
here; temperature scaling, last-layer Laplace and the GP head in their own modules.
"""

from __future__ import annotations

import torch
from torch import nn

from dltricks.errors import DltricksError

__all__ = ["Predictive", "Plain", "MCDropout", "Ensemble", "dropout_modules", "model_outputs"]

_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def model_outputs(model: nn.Module, x: torch.Tensor, regression: bool) -> torch.Tensor:
    """Logits (N, K), or the regression output (N,) (the first column of a one-target model)."""
    out = model(x).float()
    return out[:, 0] if regression else out


class Predictive:
    """Base: ``regression`` says which of the two outputs :meth:`__call__` gives."""

    regression: bool = False
    noise_var: float | None = None  # regression only: the observation noise, when the predictive has one
    name = "plain"

    def __call__(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def to(self, device: torch.device) -> Predictive:
        return self


class Plain(Predictive):
    """One deterministic pass in eval mode: softmax probabilities, or the output with zero own variance."""

    def __init__(self, model: nn.Module, regression: bool) -> None:
        self.model, self.regression = model.eval(), regression

    @torch.no_grad()
    def __call__(self, x):
        out = model_outputs(self.model, x, self.regression)
        return (out, torch.zeros_like(out)) if self.regression else out.softmax(1)


def dropout_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, _DROPOUTS) and m.p > 0]


class MCDropout(Predictive):
    """``samples`` passes with the dropout layers in training mode (every other layer, norms included,
    in eval mode); probabilities averaged, or the mean and variance of the regression outputs. The
    masks come from a generator seeded by ``seed``, so the same run gives the same metrics."""

    name = "mc_dropout"

    def __init__(self, model: nn.Module, samples: int, regression: bool, seed: int = 0) -> None:
        if samples < 2:
            raise DltricksError(f"eval.mc_samples = {samples}: MC dropout needs at least 2 samples (0 = off)")
        self.drops = dropout_modules(model)
        if not self.drops:
            raise DltricksError(f"eval.mc_samples = {samples} needs a model with dropout, but this one has no "
                                "dropout layer; set model.dropout > 0 (e.g. model.dropout = 0.2)")
        self.model, self.samples, self.regression, self.seed = model.eval(), samples, regression, seed

    @torch.no_grad()
    def __call__(self, x):
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # the caller's random state is left as it was
            torch.manual_seed(self.seed)
            for m in self.drops:
                m.train()
            try:
                outs = torch.stack([model_outputs(self.model, x, self.regression) for _ in range(self.samples)])
            finally:
                for m in self.drops:
                    m.eval()
        if self.regression:
            return outs.mean(0), outs.var(0, unbiased=False)
        return outs.softmax(-1).mean(0)


class Ensemble(Predictive):
    """The members' mean probabilities, or the mean and spread (variance) of their regression outputs."""

    name = "ensemble"

    def __init__(self, models: list[nn.Module], regression: bool) -> None:
        if len(models) < 2:
            raise DltricksError("an ensemble needs at least 2 members")
        self.models, self.regression = [m.eval() for m in models], regression

    def to(self, device: torch.device) -> Ensemble:
        for m in self.models:
            m.to(device)
        return self

    @torch.no_grad()
    def __call__(self, x):
        outs = torch.stack([model_outputs(m, x, self.regression) for m in self.models])
        if self.regression:
            return outs.mean(0), outs.var(0, unbiased=False)
        return outs.softmax(-1).mean(0)

