"""The factory that turns a recipe's keys into the method of its training step.

The step is one of the supervised step (:class:`dltricks.loop.method.Method`), distillation
(``train.teacher``) or multi-task weighting (``train.task_weighting``, ``train.pcgrad``); transfer keys
(``model.init_from``, ``train.freeze``, ``train.layer_lr_decay``, ``train.unfreeze_every``) wrap any of
them, since where the weights start and which of them train is independent of what the step computes.
``train.semi_supervised`` and ``train.domain_adaptation`` (or a ``[data.target]`` alone: source only, with
the oracle curves) replace the plain supervised step.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from dltricks.errors import DltricksError
from dltricks.loop.method import Method
from dltricks.loop.tasks import Task


def build_method(recipe: Any, bundle: Any, model: nn.Module, task: Task, ledger: Any = None,
                 augmented: bool = False, quiet: bool = False) -> Method:
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
        transfer.init_from(model, recipe.model.init_from, ledger, bundle, quiet=quiet)
    if t.meta != "none":
        if t.teacher or mtl or t.pk_samples or t.semi_supervised != "none" or t.domain_adaptation != "none":
            raise DltricksError(f"train.meta = {t.meta!r} owns its outer loop and cannot be combined with "
                                "train.teacher, train.task_weighting/pcgrad, train.pk_samples, "
                                "train.semi_supervised or train.domain_adaptation")
        return meta.MetaLearner(task, bundle, t, recipe.eval.adapt_steps, recipe.eval, recipe.seed)
    if t.teacher:
        step: Method = distill.Distill.from_recipe(recipe, bundle, model, task, ledger, augmented)
    elif mtl:
        step = multitask.MultiTask(task, model, recipe)
    elif t.pk_samples:
        step = fewshot.ClassBalanced(task, bundle.train[1], t.batch_size, t.pk_samples, bundle.class_names)
    else:
        step = Method(task)
    step = _with_unlabelled(step, recipe, bundle, model, task, other=bool(t.teacher or mtl))
    if t.freeze or t.layer_lr_decay < 1.0 or t.unfreeze_every:
        step = transfer.FineTune(step, model, t)
    return step


def _with_unlabelled(step: Method, recipe: Any, bundle: Any, model: nn.Module, task: Task, other: bool) -> Method:
    """The semi-supervised or domain adaptation step the recipe asks for (a target domain alone gives
    the source-only step with its oracle curves); ``step`` when it asks for neither."""
    from dltricks.methods import domain, ssl

    t = recipe.train
    ssl_on, da_on = t.semi_supervised != "none", t.domain_adaptation != "none"
    if ssl_on and da_on:
        raise DltricksError("train.semi_supervised and train.domain_adaptation cannot be combined yet; "
                            "use one learning set-up")
    if (ssl_on or da_on) and other:
        raise DltricksError("train.semi_supervised/domain_adaptation cannot be combined with train.teacher or "
                            "train.task_weighting/pcgrad yet; use one learning set-up")
    if ssl_on:
        return ssl.from_recipe(recipe, bundle, model, task)
    if da_on or (bundle.target_unlabelled is not None and not other):
        return domain.from_recipe(recipe, bundle, model, task)
    return step
