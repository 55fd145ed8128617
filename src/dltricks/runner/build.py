"""Everything a run needs before its first step, built and checked before the ledger hears of it: a
recipe whose data will not load, whose shapes do not fit or that a method refuses makes no run.

    ready = prepare(recipe, ledger, train)   # data, model, task, set-ups, augmentation, the step
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dltricks.data import DataBundle
from dltricks.errors import DltricksError
from dltricks.ledger import Ledger
from dltricks.loop.tasks import Task
from dltricks.methods.base import build_method
from dltricks.methods.build import build_with, make_augment
from dltricks.methods.registry import Setup
from dltricks.recipe import Recipe, UserModelSpec
from dltricks.runner.references import Trainer, resolve_references

__all__ = ["Prepared", "prepare", "check_forward", "use_threads"]


@dataclass
class Prepared:
    """A run's parts. ``recipe`` has its ``recipe:NAME`` references resolved to run ids (the ledger
    records the recipe as written)."""

    recipe: Recipe
    bundle: DataBundle
    model: nn.Module
    task: Task
    setups: list[Setup]
    augment: Any
    method: Any


def prepare(recipe: Recipe, ledger: Ledger, train: Trainer, *, progress: bool = True) -> Prepared:
    """Resolve references (training a ``recipe:NAME`` run if needed), load the data, build the model, the
    task and the step, and let every set-up check them. Raises :class:`~dltricks.errors.DltricksError`."""
    resolved = resolve_references(recipe, ledger, train, progress=progress)
    bundle, model, task, setups = build_with(resolved)
    augment = make_augment(resolved, bundle, task)
    method = build_method(resolved, bundle, model, task, ledger, augmented=augment is not None, quiet=not progress,
                          setups=setups)
    for s in setups:
        s.check_model(model, task)
    check_forward(resolved, bundle, model, setups)
    return Prepared(resolved, bundle, model, task, setups, augment, method)


def check_forward(recipe: Recipe, bundle: DataBundle, model: nn.Module, setups: list[Setup] | None = None) -> None:
    """One test sample through the model (eval mode, no gradient, torch's RNG untouched), so that a model
    that cannot take this input fails before the run starts, not at its first step. A user's model
    (``model.name = "module:attr"``) must also give the shape the task wants."""
    x = bundle.test[0][:1]
    was = model.training
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            model.eval()
            out = model(x)
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DltricksError(f"model {recipe.model.name!r} cannot run on input {tuple(bundle.in_shape)}: "
                            f"{first}") from None
    finally:
        model.train(was)
    if isinstance(recipe.model, UserModelSpec):
        _check_output(recipe, bundle, out, setups or [])


def _check_output(recipe: Recipe, bundle: DataBundle, out: object, setups: list[Setup]) -> None:
    """A user's model gives (N, width) scores, or (N, width, *spatial) for segmentation, where width is
    the classes (or the embedding, or a set-up's head). Several targets have their own checks."""
    if bundle.targets or bundle.task not in ("classification", "segmentation"):
        return
    widths = [w for w in (s.head_width() for s in setups) if w is not None]
    width = recipe.model.embedding_dim or (widths[0] if widths else bundle.num_classes)
    spatial = tuple(bundle.in_shape[1:]) if bundle.task == "segmentation" else ()
    want = (1, width, *spatial)
    got = tuple(out.shape) if isinstance(out, torch.Tensor) else None
    if got != want:
        what = f"output shape {got}" if got is not None else f"a {type(out).__name__}, not a tensor"
        raise DltricksError(f"model {recipe.model.name!r} gives {what} for one sample of shape "
                            f"{tuple(bundle.in_shape)}; this {bundle.task} task needs {want} "
                            f"(batch, {'classes, *spatial' if spatial else 'classes'})")


def use_threads(recipe: Recipe, model: torch.nn.Module, bundle: DataBundle, device: torch.device, *,
                cap: int | None = None, cache: Path | None = None) -> int:
    """Set torch's CPU threads for this run (``train.threads``; "auto": timed on one batch of this data,
    see :mod:`dltricks.loop.threads`) and return the count."""
    from dltricks.loop import threads as th
    from dltricks.loop.batches import Batches

    n = recipe.train.threads
    if n == "auto":
        cache = cache or th.cache_path()
        with torch.random.fork_rng(devices=[]):  # a Dataset may draw its patches from torch's RNG
            source = Batches(bundle.train_source or bundle.train, recipe.train.batch_size, recipe.seed, device)
            x, _ = next(source.epoch(0, torch.arange(source.n)))
        key = {"model": recipe.model.model_dump(), "in_shape": list(x.shape), "precision": recipe.train.precision}
        n = th.resolve("auto", model=model, batch=x, device=device, cap=cap, cache=cache, key=key)
    torch.set_num_threads(n)
    return n
