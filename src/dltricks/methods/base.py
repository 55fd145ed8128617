"""The factory that turns a recipe's keys into the method of its training step.

The step is one of the supervised step (:class:`dltricks.train.method.Method`), distillation
(``train.teacher``) or multi-task weighting (``train.task_weighting``, ``train.pcgrad``); transfer keys
(``model.init_from``, ``train.freeze``, ``train.layer_lr_decay``, ``train.unfreeze_every``) wrap any of
them, since where the weights start and which of them train is independent of what the step computes.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from dltricks.errors import DltricksError
from dltricks.train.method import Method, register_method_factory
from dltricks.train.tasks import Task


@register_method_factory
def build_method(recipe: Any, bundle: Any, model: nn.Module, task: Task, ledger: Any = None,
                 augmented: bool = False) -> Method:
    """The method for ``recipe``; may load weights into ``model`` (``model.init_from``)."""
    from dltricks.methods import distill, fewshot, meta, multitask, transfer

    t = recipe.train
    mtl = t.task_weighting != "fixed" or t.pcgrad
    if t.teacher and mtl:
        raise DltricksError("train.teacher cannot be combined with train.task_weighting/pcgrad yet; "
                            "use one learning set-up")
    if mtl and not bundle.targets:
        raise DltricksError("train.task_weighting/train.pcgrad need a dataset with several targets "
                            "(e.g. data.name = 'mnist1d_tasks')")
    if recipe.model.init_from:
        transfer.init_from(model, recipe.model.init_from, ledger, bundle)
    if t.meta != "none":
        if t.teacher or mtl or t.pk_samples:
            raise DltricksError(f"train.meta = {t.meta!r} owns its outer loop and cannot be combined with "
                                "train.teacher, train.task_weighting/pcgrad or train.pk_samples")
        return meta.MetaLearner(task, bundle, t, recipe.eval.adapt_steps)
    if t.teacher:
        step: Method = distill.Distill.from_recipe(recipe, bundle, model, task, ledger, augmented)
    elif mtl:
        step = multitask.MultiTask(task, model, recipe)
    elif t.pk_samples:
        step = fewshot.ClassBalanced(task, bundle.train[1], t.batch_size, t.pk_samples, bundle.class_names)
    else:
        step = Method(task)
    if t.freeze or t.layer_lr_decay < 1.0 or t.unfreeze_every:
        step = transfer.FineTune(step, model, t)
    return step
