"""The training step of a recipe, composed from its learning set-ups (:mod:`dltricks.methods.registry`).

Transfer (``model.init_from``) loads weights into the model first; then the set-up of highest
``step_rank`` computes the step: meta-learning (its own outer loop), semi-supervised learning or domain
adaptation (a ``[data.target]`` alone: source only, with the oracle curves), distillation or multi-task
weighting, P x K batches; the plain supervised step when none does. Transfer's keys (``train.freeze``,
``train.layer_lr_decay``, ``train.unfreeze_every``) wrap whichever step it is. Set-ups that cannot be
combined yet are refused here with one line.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from dltricks.errors import DltricksError
from dltricks.loop.method import Method
from dltricks.loop.tasks import Task
from dltricks.methods.registry import Setup, setups_for

__all__ = ["build_method", "check_combinations"]


def check_combinations(recipe: Any, bundle: Any) -> None:
    """Refuse set-ups that cannot be combined yet (one line each)."""
    t = recipe.train
    mtl = t.task_weighting != "fixed" or t.pcgrad
    if t.teacher and mtl:
        raise DltricksError("train.teacher cannot be combined with train.task_weighting/pcgrad yet; "
                            "use one learning set-up")
    if mtl and not bundle.targets:
        raise DltricksError("train.task_weighting/train.pcgrad need a dataset with several targets "
                            "(e.g. data.name = 'mnist1d_tasks')")
    if t.meta != "none":
        if t.teacher or mtl or t.pk_samples or t.semi_supervised != "none" or t.domain_adaptation != "none":
            raise DltricksError(f"train.meta = {t.meta!r} owns its outer loop and cannot be combined with "
                                "train.teacher, train.task_weighting/pcgrad, train.pk_samples, "
                                "train.semi_supervised or train.domain_adaptation")
        return
    ssl_on, da_on = t.semi_supervised != "none", t.domain_adaptation != "none"
    if ssl_on and da_on:
        raise DltricksError("train.semi_supervised and train.domain_adaptation cannot be combined yet; "
                            "use one learning set-up")
    if (ssl_on or da_on) and (t.teacher or mtl):
        raise DltricksError("train.semi_supervised/domain_adaptation cannot be combined with train.teacher or "
                            "train.task_weighting/pcgrad yet; use one learning set-up")


def build_method(recipe: Any, bundle: Any, model: nn.Module, task: Task, ledger: Any = None,
                 augmented: bool = False, quiet: bool = False, setups: list[Setup] | None = None) -> Method:
    """The step for ``recipe``; may load weights into ``model`` (``model.init_from``, said on stderr
    unless ``quiet``). ``augmented`` says whether training batches are augmented."""
    setups = setups if setups is not None else setups_for(recipe, bundle)
    check_combinations(recipe, bundle)
    for s in setups:
        s.prepare_model(model, ledger, quiet)
    top = max((s for s in setups if s.takes_step()), key=lambda s: s.step_rank, default=None)
    step = top.step(model, task, ledger, augmented) if top is not None else Method(task)
    for s in setups:
        step = s.wrap(step, model)
    return step
