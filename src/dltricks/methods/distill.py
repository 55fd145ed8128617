"""Knowledge distillation: a student learns from a trained teacher's softened outputs (Hinton et al.
2015) and, optionally, from its intermediate features (FitNets, Romero et al. 2015).

    loss = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * task loss
           + hint_weight * MSE(projector(student feature), teacher feature)

The T^2 factor keeps the soft term's gradients on the scale of the hard term's as T changes. The KL is
over the class dimension (dim 1), so segmentation logits (N, K, *spatial) are distilled per pixel.
Where training data are not augmented and come as tensors, the teacher's logits are computed once for
the whole training set and looked up by sample index (``Batch.index``); otherwise the teacher runs on
every batch. The teacher is frozen and in eval mode; it is not checkpointed (it is the teacher run's).

Hints: ``train.hint_layers`` names ``STUDENT=TEACHER`` modules (one name for both), or ``backbone``,
the input of each model's head; a learned 1x1 conv (or linear map) projects the student's feature to
the teacher's width. The projector trains with the student and is in the checkpoint.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dltricks.errors import DltricksError
from dltricks.loop.method import Batch, Method
from dltricks.loop.tasks import Task
from dltricks.methods.build import model_from_run
from dltricks.methods.registry import Setup, register_method

__all__ = ["Distill", "Distillation", "kd_loss"]


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(p_teacher || p_student) at temperature T, summed over dim 1, averaged over the rest."""
    log_p_s = F.log_softmax(student.float() / temperature, dim=1)
    log_p_t = F.log_softmax(teacher.float() / temperature, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(1).mean()
    return kl * temperature ** 2


class _Tap:
    """Keeps the output of a module (or, for ``pre=True``, its input) from the last forward."""

    def __init__(self, module: nn.Module, pre: bool) -> None:
        self.value: torch.Tensor | None = None
        if pre:
            module.register_forward_pre_hook(lambda m, args: setattr(self, "value", args[0]))
        else:
            module.register_forward_hook(lambda m, args, out: setattr(self, "value", out))


def _tap(model: nn.Module, name: str, role: str) -> _Tap:
    from dltricks.methods.transfer import head_name

    modules = dict(model.named_modules())
    if name == "backbone":
        return _Tap(modules[head_name(model)], pre=True)
    if name not in modules:
        from dltricks.errors import did_you_mean

        raise DltricksError(f"train.hint_layers: the {role} has no module {name!r}"
                            f"{did_you_mean(name, [n for n in modules if n])}; use 'backbone' or a module name")
    return _Tap(modules[name], pre=False)


def _projector(s: torch.Tensor, t: torch.Tensor, where: str) -> nn.Module:
    """A 1x1 conv (or linear map, for vectors) from the student's channels to the teacher's."""
    if s.shape[2:] != t.shape[2:]:
        raise DltricksError(f"train.hint_layers {where}: student feature {tuple(s.shape[1:])} and teacher "
                            f"feature {tuple(t.shape[1:])} differ in spatial size; pick layers of equal size")
    if s.dim() == 2:
        return nn.Linear(s.shape[1], t.shape[1])
    conv = {3: nn.Conv1d, 4: nn.Conv2d, 5: nn.Conv3d}[s.dim()]
    return conv(s.shape[1], t.shape[1], kernel_size=1)


class Distill(Method):
    name = "distill"

    def __init__(self, task: Task, teacher: nn.Module, temperature: float, alpha: float,
                 student: nn.Module | None = None, hint_weight: float = 0.0, hint_layers: list[str] | None = None,
                 sample: torch.Tensor | None = None, cache_from: torch.Tensor | None = None) -> None:
        """``sample``: a few training inputs to size the hint projectors; ``cache_from``: the whole
        training input (N, ...) whose teacher logits are computed once (None: the teacher runs per batch)."""
        super().__init__(task)
        self.teacher = teacher.eval().requires_grad_(False)
        self.temperature, self.alpha, self.hint_weight = temperature, alpha, hint_weight
        self.cache_from, self.cache = cache_from, None
        self.taps: list[tuple[_Tap, _Tap]] = []
        self.projectors = nn.ModuleList()
        if hint_weight > 0:
            if student is None or sample is None:
                raise ValueError("hints need the student and a sample batch")
            for spec in hint_layers or ["backbone"]:
                s_name, _, t_name = spec.partition("=")
                self.taps.append((_tap(student, s_name, "student"), _tap(teacher, t_name or s_name, "teacher")))
            was = student.training
            student.eval()
            with torch.no_grad():
                student(sample)
                teacher(sample)
            student.train(was)
            for spec, (ts, tt) in zip(hint_layers or ["backbone"], self.taps):
                self.projectors.append(_projector(ts.value, tt.value, repr(spec)))
            self.cache_from = None  # hints need the teacher's features of the very batch

    @classmethod
    def from_recipe(cls, recipe: Any, bundle: Any, model: nn.Module, task: Task, ledger: Any,
                    augmented: bool) -> Distill:
        from dltricks.ledger import Ledger

        t = recipe.train
        ledger = ledger or Ledger()
        t_recipe, t_bundle, teacher = model_from_run(ledger, t.teacher,
                                                     why="a teacher is distilled")
        if bundle.task != t_bundle.task or bundle.num_classes != t_bundle.num_classes or \
                (bundle.class_names or []) != (t_bundle.class_names or []):
            raise DltricksError(f"train.teacher = {t.teacher!r} was trained on {t_bundle.task} of classes "
                                f"{t_bundle.class_names} but this recipe has {bundle.task} of classes "
                                f"{bundle.class_names}; distil from a teacher of the same classes")
        if tuple(t_bundle.in_shape) != tuple(bundle.in_shape):
            raise DltricksError(f"train.teacher = {t.teacher!r} takes inputs of shape {t_bundle.in_shape} but this "
                                f"recipe's are {bundle.in_shape}")
        x = bundle.train[0]
        cache = x if not augmented and bundle.train_source is None else None
        return cls(task, teacher, t.distill_temperature, t.distill_alpha, model, t.hint_weight, t.hint_layers,
                   sample=x[:2], cache_from=cache)

    def modules(self) -> dict[str, nn.Module]:
        return {"projectors": self.projectors} if len(self.projectors) else {}

    def to(self, device: torch.device) -> None:
        super().to(device)
        self.teacher.to(device)
        self.device = device

    @torch.no_grad()
    def _teacher_logits(self, batch: Batch) -> torch.Tensor:
        if self.cache_from is not None and batch.index is not None:
            if self.cache is None:  # once, in eval mode: the same values on every run and after a resume
                dev = getattr(self, "device", batch.x.device)
                outs = [self.teacher(self.cache_from[i:i + 512].to(dev)) for i in range(0, len(self.cache_from), 512)]
                self.cache = torch.cat(outs).float()
            return self.cache[batch.index.to(self.cache.device)]
        return self.teacher(batch.x).float()

    def loss(self, model: nn.Module, batch: Batch, progress: float):
        out = model(batch.x)
        t_logits = self._teacher_logits(batch)
        loss = self.alpha * kd_loss(out, t_logits, self.temperature) + \
            (1 - self.alpha) * self.task.loss(out, batch.y)
        if self.taps:
            for proj, (ts, tt) in zip(self.projectors, self.taps):
                loss = loss + self.hint_weight * F.mse_loss(proj(ts.value.float()), tt.value.float())
        return loss, out


@register_method("distill")
class Distillation(Setup):
    """Knowledge distillation from a completed run (``train.teacher``)."""

    step_rank = 2

    @classmethod
    def selects(cls, recipe, bundle) -> bool:
        return bool(recipe.train.teacher)

    def step(self, model: nn.Module, task: Task, ledger: Any, augmented: bool) -> Method:
        return Distill.from_recipe(self.recipe, self.bundle, model, task, ledger, augmented)
