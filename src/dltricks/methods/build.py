"""What a recipe builds before training: its data, a freshly initialised model and the task, shaped by the
learning set-ups that take part (:mod:`dltricks.methods.registry`); and a completed run's model rebuilt
the same way.

    bundle, model, task = build(Recipe.load("mnist1d-cnn"))
    recipe, bundle, model = model_from_run(ledger, "3f2a9c")
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dltricks.data import DataBundle, load_data
from dltricks.errors import DltricksError
from dltricks.loop.from_run import load_run_model
from dltricks.loop.tasks import Classification, Task
from dltricks.methods.registry import Setup, setups_for
from dltricks.nn import build_model
from dltricks.recipe import Recipe

__all__ = ["build", "make_task", "make_augment", "model_from_run"]


def make_task(recipe: Recipe, bundle: DataBundle, setups: list[Setup] | None = None) -> Task:
    """The loss and metrics that fit the data (segmentation, several targets, classes), unless a set-up
    trains on a task of its own (DAP's attributes, a metric loss's embedding)."""
    if bundle.task == "segmentation":
        from dltricks.loop.segmentation import make_segmentation_task

        return make_segmentation_task(recipe, bundle)
    if bundle.targets:
        from dltricks.loop.targets import make_targets_task

        return make_targets_task(recipe, bundle)
    for s in setups if setups is not None else setups_for(recipe, bundle):
        task = s.task()
        if task is not None:
            return task
    t = recipe.train
    if t.loss != "ce":
        raise DltricksError(f"train.loss = {t.loss!r} is for segmentation; classification uses 'ce'")
    return Classification(label_smoothing=t.label_smoothing, class_weights=t.class_weights,
                          ece_bins=recipe.eval.ece_bins)


def make_augment(recipe: Recipe, bundle: DataBundle, task: Task | None = None) -> Any:
    """The recipe's training augmentation, then mixup/CutMix (``data.mixup_alpha``, ``data.cutmix_alpha``);
    None when every op is off. ``task``: the run's, when already built."""
    from dltricks.data import augment
    from dltricks.loop.mixing import mixing_for, then

    d = recipe.data
    task = task if task is not None else make_task(recipe, bundle)
    mix = mixing_for(d.mixup_alpha, d.cutmix_alpha, task=bundle.task, num_classes=bundle.num_classes,
                     classifies=isinstance(task, Classification), in_shape=bundle.in_shape)
    return then(augment.from_spec(d.augment, dims=len(bundle.in_shape) - 1, task=bundle.task), mix)


def build_with(recipe: Recipe) -> tuple[DataBundle, nn.Module, Task, list[Setup]]:
    """:func:`build`, with the set-ups that take part (each checked before the model is built)."""
    bundle = load_data(recipe.data, recipe.seed)
    setups = setups_for(recipe, bundle)
    for s in setups:
        s.check()
    torch.manual_seed(recipe.seed)
    widths = [w for w in (s.head_width() for s in setups) if w is not None]
    try:
        model = build_model(recipe.model, bundle.in_shape, widths[0] if widths else bundle.num_classes)
    except (ValueError, TypeError) as e:
        raise DltricksError(f"model {recipe.model.name!r} cannot be built for input {bundle.in_shape}: {e}") from None
    return bundle, model, make_task(recipe, bundle, setups), setups


def build(recipe: Recipe) -> tuple[DataBundle, nn.Module, Task]:
    """Data, a freshly initialised model (its init fixed by ``recipe.seed``) and the task."""
    bundle, model, task, _ = build_with(recipe)
    return bundle, model, task


def model_from_run(ledger: Any, run_id: str, *, why: str = "its weights are used",
                   ) -> tuple[Recipe, DataBundle, nn.Module]:
    """A completed run's recipe, data and model (its weights loaded exactly; eval mode, CPU)."""
    return load_run_model(ledger, run_id, build, why=why)
