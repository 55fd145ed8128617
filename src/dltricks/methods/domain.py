"""Domain adaptation: a model trained on labelled source data and the unlabelled inputs of a shifted
target domain (``[data.target]``: ``bundle.target_unlabelled``; no target label reaches training).

- ``dann`` (Ganin et al. 2016): a domain discriminator on the features (the input of the model's head)
  learns to tell source from target, and a gradient reversal layer makes the features learn to fool it;
  the reversal's strength follows ``lambda_p = 2 / (1 + exp(-10 p)) - 1`` over training progress ``p``;
- ``self_training``: the model's confident predictions on target inputs become their labels
  (``confidence_threshold``, ramped-up ``unlabelled_weight``);
- ``coral`` (Sun & Saenko 2016, Deep CORAL): match the covariance of source and target features,
  ``||C_s - C_t||_F^2 / (4 d^2)``.

Every step with a target domain, ``source only`` included, records two curves per epoch that use the
target's labels and are named ``oracle_*`` because no real adaptation could see them:
``oracle_val_target_accuracy`` and ``oracle_test_target_accuracy``, the target test accuracy at the epoch
that target validation would have picked. Model selection and early stopping use source validation
only; the run's ``test_target_*`` metrics are those of the model that source validation ends on.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dltricks.errors import DltricksError
from dltricks.loop.method import Batch, Method
from dltricks.loop.tasks import Task
from dltricks.methods.registry import Setup, Trained, register_method
from dltricks.methods.ssl import StreamStep, pseudo_label_loss

__all__ = ["TargetDomain", "dann_lambda", "GradReverse", "coral_loss", "DomainStep", "SourceOnly", "DANN",
           "SelfTraining", "CORAL", "from_recipe", "domain_step", "records_oracle"]


def dann_lambda(progress: float) -> float:
    """Ganin et al.'s schedule: 0 at the start, close to 1 by the end."""
    return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0


class GradReverse(torch.autograd.Function):
    """Identity forward; the gradient multiplied by ``-coeff`` backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, coeff: float) -> torch.Tensor:
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.coeff * grad, None


def coral_loss(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    """``||cov(fs) - cov(ft)||_F^2 / (4 d^2)`` for features (N_s, d) and (N_t, d)."""
    d = fs.shape[1]
    cs, ct = torch.cov(fs.float().T), torch.cov(ft.float().T)
    return (cs - ct).pow(2).sum() / (4 * d * d)


class _Features:
    """The input of the model's head on the last forward, pooled to (N, d)."""

    def __init__(self, model: nn.Module) -> None:
        from dltricks.methods.transfer import head_name

        self.value: torch.Tensor | None = None
        model.get_submodule(head_name(model)).register_forward_pre_hook(self._keep)

    def _keep(self, module: nn.Module, args: tuple) -> None:
        f = args[0]
        self.value = f.flatten(2).mean(-1) if f.dim() > 2 else f


class DomainStep(StreamStep):
    """A step with a target stream, and the oracle curves on the target's labelled splits."""

    stream_key = "target_stream"

    def __init__(self, task: Task, model: nn.Module, bundle: Any, batch_size: int, seed: int, eval_batch: int,
                 **kw: Any) -> None:
        super().__init__(task, bundle.target_unlabelled, batch_size, seed, **kw)
        self.model, self.eval_batch = model, eval_batch
        self.target_val, self.target_test = bundle.target_val, bundle.target_test
        self.best = [-1.0, float("nan")]  # best oracle target-val accuracy so far, target test accuracy then
        self.device = torch.device("cpu")

    def to(self, device: torch.device) -> None:
        super().to(device)
        self.device = device

    def end_epoch(self) -> dict[str, float]:
        from dltricks.loop.training import evaluate

        out = super().end_epoch()
        if self.target_val is None:
            return out
        kw = dict(batch_size=self.eval_batch, device=self.device)
        val = evaluate(self.model, self.target_val, self.task, **kw)["accuracy"]
        if val > self.best[0]:
            self.best = [val, evaluate(self.model, self.target_test, self.task, **kw)["accuracy"]]
        out.update(oracle_val_target_accuracy=val, oracle_test_target_accuracy=self.best[1])
        return out

    def extra_state(self) -> dict[str, Any]:
        return {**super().extra_state(), "best": list(self.best)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.best = [float(v) for v in state["best"]]


class SourceOnly(DomainStep):
    """The supervised step on source data; it only records the oracle curves."""

    name = "source_only"

    def loss(self, model: nn.Module, batch: Batch, progress: float):
        out = model(batch.x)
        return self.task.loss(out, batch.y), out


class DANN(DomainStep):
    name = "dann"

    def __init__(self, task: Task, model: nn.Module, bundle: Any, batch_size: int, seed: int, eval_batch: int,
                 hidden: int = 64, **kw: Any) -> None:
        super().__init__(task, model, bundle, batch_size, seed, eval_batch, **kw)
        self.features = _Features(model)
        was = model.training
        with torch.no_grad():  # size the discriminator from two training inputs, in eval mode: no state moves
            model.eval()
            model(bundle.train[0][:2])
            model.train(was)
        d = self.features.value.shape[1]
        self.discriminator = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def modules(self) -> dict[str, nn.Module]:
        return {"discriminator": self.discriminator}

    def loss(self, model: nn.Module, batch: Batch, progress: float):
        xt = self.stream.next(batch.x.device)
        out = model(torch.cat([batch.x, xt]))
        f = GradReverse.apply(self.features.value, dann_lambda(progress))
        logit = self.discriminator(f.float()).squeeze(1)
        domain = torch.cat([torch.zeros(len(batch.x)), torch.ones(len(xt))]).to(logit.device)
        ld = F.binary_cross_entropy_with_logits(logit, domain)
        self.count(((logit > 0).float() == domain).float())
        out = out[: len(batch.x)]
        return self.task.loss(out, batch.y) + self.weight * ld, out

    def end_epoch(self) -> dict[str, float]:
        out = super().end_epoch()
        if "confident_fraction" in out:  # for DANN the counter holds the discriminator's hits
            out["domain_accuracy"] = out.pop("confident_fraction")
        return out


class SelfTraining(DomainStep):
    name = "self_training"

    def loss(self, model: nn.Module, batch: Batch, progress: float):
        xt = self.stream.next(batch.x.device)
        out = model(torch.cat([batch.x, xt]))
        out, ot = out[: len(batch.x)], out[len(batch.x):]
        lt, mask = pseudo_label_loss(ot, self.threshold)
        self.count(mask)
        return self.task.loss(out, batch.y) + self.ramp(progress) * lt, out


class CORAL(DomainStep):
    name = "coral"

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.features = _Features(self.model)

    def loss(self, model: nn.Module, batch: Batch, progress: float):
        xt = self.stream.next(batch.x.device)
        out = model(torch.cat([batch.x, xt]))
        f = self.features.value
        n = len(batch.x)
        out = out[:n]
        return self.task.loss(out, batch.y) + self.weight * coral_loss(f[:n], f[n:]), out


def from_recipe(recipe: Any, bundle: Any, model: nn.Module, task: Task) -> Method:
    """The domain adaptation step ``train.domain_adaptation`` names (source only when none)."""
    from dltricks.loop.training import eval_batch_size

    t = recipe.train
    kind = t.domain_adaptation
    if bundle.target_unlabelled is None:
        raise DltricksError(f"train.domain_adaptation = {kind!r} needs a target domain: add a [data.target] "
                            "section (e.g. data.target.shear_scale = 1.5 on MNIST-1D)")
    if bundle.task != "classification" or bundle.train[1].dim() != 1:
        raise DltricksError(f"train.domain_adaptation needs a classification dataset; this one is {bundle.task}")
    kw = dict(batch_size=t.mu * t.batch_size, seed=recipe.seed, eval_batch=eval_batch_size(t.batch_size))
    if kind == "none":
        return SourceOnly(task, model, bundle, **kw)
    if kind == "self_training":
        return SelfTraining(task, model, bundle, weight=t.unlabelled_weight, rampup=t.rampup,
                            threshold=t.confidence_threshold, **kw)
    cls = {"dann": DANN, "coral": CORAL}[kind]
    return cls(task, model, bundle, weight=t.domain_weight, **kw)


def domain_step(recipe: Any, bundle: Any) -> bool:
    """Whether the run's step is a :class:`DomainStep`: ``train.domain_adaptation``, or a target domain
    with no other set-up (a teacher, multi-task weighting, semi-supervised, meta) taking the step."""
    t = recipe.train
    other = bool(t.teacher) or t.task_weighting != "fixed" or t.pcgrad or t.semi_supervised != "none" \
        or t.meta != "none"
    return t.domain_adaptation != "none" or (bundle.target_unlabelled is not None and not other)


def records_oracle(recipe: Any, bundle: Any) -> bool:
    """Whether the step records the oracle curves: a :class:`DomainStep` with a labelled target validation split."""
    return domain_step(recipe, bundle) and bundle.target_val is not None


@register_method("domain_adaptation")
class TargetDomain(Setup):
    """A ``[data.target]`` domain: its labelled test split scores the trained model (``test_target_*``,
    its labels serve only here), and the step's oracle curves give ``oracle_*`` (see :class:`DomainStep`)."""

    step_rank = 3

    @classmethod
    def selects(cls, recipe, bundle) -> bool:
        return bundle.target_test is not None or recipe.train.domain_adaptation != "none"

    def takes_step(self) -> bool:
        return domain_step(self.recipe, self.bundle)

    def step(self, model: nn.Module, task: Task, ledger: Any, augmented: bool) -> Method:
        return from_recipe(self.recipe, self.bundle, model, task)

    def metric_names(self, model: nn.Module, task: Task) -> list[str]:
        from dltricks.loop.training import evaluate

        if self.bundle.target_test is None:
            return []
        x, y = self.bundle.target_test
        names = [f"test_target_{k}" for k in evaluate(model, (x[:4], y[:4]), task, batch_size=4, device="cpu")]
        if records_oracle(self.recipe, self.bundle):
            names += ["oracle_val_target_accuracy", "oracle_test_target_accuracy"]
        return names

    def metrics(self, run: Trained) -> dict[str, float]:
        from dltricks.loop.training import evaluate

        if self.bundle.target_test is None:
            return {}
        out = {f"test_target_{k}": v for k, v in evaluate(run.model, self.bundle.target_test, run.task,
                                                          **run.eval_kw()).items()}
        out.update({k: v[-1] for k, v in run.history.curves.items() if k.startswith("oracle_")})
        return out
