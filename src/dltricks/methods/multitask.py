"""Multi-task learning: weighting the losses of several targets on one shared backbone.

The targets, their heads and fixed weights are the task's (:class:`dltricks.loop.targets.Targets`:
``train.task_weights``, ``train.normalize_targets``); this method adds

- ``train.task_weighting = "uncertainty"``: Kendall et al. 2018, learnt log-variances ``s_i`` with the
  loss ``sum_i exp(-s_i) w_i L_i + s_i`` (the form of Liebel & Koerner 2018 for classification and
  regression alike); the learnt weights ``exp(-s_i)`` are curves ``weight_<task>``;
- ``train.pcgrad = true``: PCGrad (Yu et al. 2020): each task's gradient loses its component along any
  other task's gradient it conflicts with (negative dot product), tasks in random order. The projection
  is over all model parameters: a task's head rows get no gradient from the other tasks, so projecting
  there changes nothing that matters, and it needs no list of which parameters are shared.
"""

from __future__ import annotations

import torch
from torch import nn

from dltricks.errors import DltricksError
from dltricks.loop.method import Batch, Method
from dltricks.loop.targets import Targets
from dltricks.methods.registry import Setup, register_method


class LogVariances(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.s = nn.Parameter(torch.zeros(n))


class MultiTask(Method):
    name = "multitask"

    def __init__(self, task: Targets, model: nn.Module, recipe) -> None:
        if not isinstance(task, Targets):
            raise DltricksError("multi-task weighting needs a dataset with several targets")
        super().__init__(task)
        t = recipe.train
        self.uncertainty = t.task_weighting == "uncertainty"
        self.pcgrad = t.pcgrad
        self.log_vars = LogVariances(len(task.targets)) if self.uncertainty else None

    def modules(self) -> dict[str, nn.Module]:
        return {"log_vars": self.log_vars} if self.log_vars is not None else {}

    def loss(self, model: nn.Module, batch: Batch, progress: float):
        task: Targets = self.task  # type: ignore[assignment]
        out = model(batch.x)
        losses = [w * loss for w, loss in zip(task.w, task.task_losses(out, batch.y))]
        if self.log_vars is not None:
            s = self.log_vars.s
            terms = [torch.exp(-s[i]) * loss + s[i] for i, loss in enumerate(losses)]
        else:
            terms = losses
        total = torch.stack(terms).sum()
        if not self.pcgrad or not torch.is_grad_enabled():
            return total, out
        step = _pcgrad_surrogate(model, terms, total)
        if self.log_vars is not None:  # the log-variances keep their ordinary gradient, the model PCGrad's
            s = self.log_vars.s
            own = torch.stack([torch.exp(-s[i]) * loss.detach() + s[i] for i, loss in enumerate(losses)]).sum()
            step = step + (own - own.detach())
        return step, out

    def end_epoch(self) -> dict[str, float]:
        if self.log_vars is None:
            return {}
        w = torch.exp(-self.log_vars.s.detach()).cpu()
        return {f"weight_{n}": float(v) for n, v in zip(self.task.names, w)}  # type: ignore[attr-defined]


def _pcgrad_surrogate(model: nn.Module, terms: list[torch.Tensor], total: torch.Tensor) -> torch.Tensor:
    """A loss with ``total``'s value whose gradient on the model is PCGrad's projected sum of the
    gradients of ``terms``."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = []
    for term in terms:
        g = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
        grads.append(torch.cat([(gi if gi is not None else torch.zeros_like(p)).reshape(-1)
                                for gi, p in zip(g, params)]))
    projected = []
    for i, gi in enumerate(grads):
        g = gi.clone()
        for j in torch.randperm(len(grads)).tolist():  # torch's RNG: checkpointed, so resume is exact
            if j == i:
                continue
            dot = torch.dot(g, grads[j])
            if dot < 0:
                g = g - dot / grads[j].pow(2).sum().clamp_min(1e-20) * grads[j]
        projected.append(g)
    g = torch.stack(projected).sum(0)
    sur, offset = torch.zeros((), device=total.device), 0
    for p in params:
        n = p.numel()
        sur = sur + (p * g[offset:offset + n].view_as(p)).sum()
        offset += n
    return total.detach() + (sur - sur.detach())


@register_method("multitask")
class MultiTaskWeighting(Setup):
    """Several targets weighted by learnt uncertainty or balanced by PCGrad (``train.task_weighting``,
    ``train.pcgrad``)."""

    step_rank = 2

    @classmethod
    def selects(cls, recipe, bundle) -> bool:
        return recipe.train.task_weighting != "fixed" or recipe.train.pcgrad

    def step(self, model: nn.Module, task, ledger, augmented: bool) -> Method:
        return MultiTask(task, model, self.recipe)
