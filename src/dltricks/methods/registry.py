"""Learning set-ups register here, as models do with ``@register_model``: each is a :class:`Setup`
subclass, selected by the recipe keys (and data) it reads, that owns its evaluation: the task it trains
on, the width of the model's head, its checks before training, the names of the metrics it adds (known
before training), those metrics after training, and its figures. The runner asks :func:`setups_for` and
has no per-method branches. A set-up may also compute the training step (a
:class:`~dltricks.loop.method.Method`: the selected set-up of highest ``step_rank`` does), prepare the model
(load weights) or wrap the step (frozen layers); :func:`dltricks.methods.base.build_method` composes them.

    @register_method("my_setup")
    class MySetup(Setup):
        @classmethod
        def selects(cls, recipe, bundle): return recipe.train.my_key != "none"
        def metric_names(self, model, task): return ["test_my_score"]
        def metrics(self, run): return {"test_my_score": ...}
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from dltricks.loop.method import Method
from dltricks.loop.tasks import Task

__all__ = ["Setup", "Trained", "register_method", "setups_for", "registered_methods"]


@dataclass
class Trained:
    """What a set-up's evaluation sees once training is over."""

    recipe: Any
    bundle: Any
    model: nn.Module
    task: Task
    history: Any
    device: torch.device
    run_dir: Path | None = None
    ledger: Any = None
    progress: bool = False

    def eval_kw(self) -> dict[str, Any]:
        from dltricks.loop.training import eval_batch_size

        r = self.recipe.train
        return dict(batch_size=eval_batch_size(r.batch_size), device=self.device, precision=r.precision)


class Setup:
    """A learning set-up as the runner sees it. Every hook has a do-nothing default."""

    name: ClassVar[str] = ""
    order: ClassVar[int] = 50  # metrics merge in this order: a later set-up's value of a name wins
    replaces_test_metrics: ClassVar[bool] = False  # an episodic head has no plain test_*/val_* metrics...
    on_test_split: ClassVar[bool] = False  # ...so the set-ups that score the plain head step aside
    step_rank: ClassVar[int] = 0  # of the set-ups that take the step, the highest rank computes it

    def __init__(self, recipe: Any, bundle: Any) -> None:
        self.recipe, self.bundle = recipe, bundle

    @classmethod
    def selects(cls, recipe: Any, bundle: Any) -> bool:
        """Whether this set-up takes part in a run of ``recipe`` on ``bundle``."""
        return False

    def check(self) -> None:
        """Refuse (:class:`~dltricks.errors.DltricksError`) a recipe this set-up cannot run, before the
        model is built."""

    def head_width(self) -> int | None:
        """The model's number of outputs when it is not the number of classes."""
        return None

    def task(self) -> Task | None:
        """The task (loss, meter, predict) this set-up trains on, when it is not the data's own."""
        return None

    def prepare_model(self, model: nn.Module, ledger: Any, quiet: bool) -> None:
        """Change the freshly built model before training (load a run's weights into it)."""

    def takes_step(self) -> bool:
        """Whether this set-up computes the training step (see ``step_rank``)."""
        return self.step_rank > 0

    def step(self, model: nn.Module, task: Task, ledger: Any, augmented: bool) -> Method:
        """The training step; ``augmented`` says whether training batches are augmented."""
        raise NotImplementedError

    def wrap(self, step: Method, model: nn.Module) -> Method:
        """The step, wrapped (frozen layers, layer-wise rates); by default as it is."""
        return step

    def check_model(self, model: nn.Module, task: Task) -> None:
        """Refuse, before training, a model this set-up cannot evaluate."""

    def metric_names(self, model: nn.Module, task: Task) -> list[str]:
        """The names :meth:`metrics` will record, before training."""
        return []

    def metrics(self, run: Trained) -> dict[str, float]:
        """Final metrics of the trained model."""
        return {}

    def figures(self, run: Trained, metrics: dict[str, float]) -> None:
        """Figures written into ``run.run_dir``."""


_SETUPS: dict[str, type[Setup]] = {}


def register_method(name: str):
    """Class decorator: register a :class:`Setup` under ``name``."""
    def deco(cls: type[Setup]) -> type[Setup]:
        cls.name = name
        _SETUPS[name] = cls
        return cls
    return deco


_LOADED: list[bool] = []


def _load_all() -> None:
    # every module of this package may hold set-ups: a new one is one file, found here by name
    if _LOADED:
        return
    for m in pkgutil.iter_modules([str(Path(__file__).parent)]):
        importlib.import_module(f"{__package__}.{m.name}")
    _LOADED.append(True)


def registered_methods() -> dict[str, type[Setup]]:
    """Every registered set-up, by name."""
    _load_all()
    return dict(_SETUPS)


def setups_for(recipe: Any, bundle: Any) -> list[Setup]:
    """The set-ups a run of ``recipe`` on ``bundle`` takes part in, in merge order."""
    chosen = [cls(recipe, bundle) for cls in registered_methods().values() if cls.selects(recipe, bundle)]
    if any(s.replaces_test_metrics for s in chosen):
        chosen = [s for s in chosen if not s.on_test_split]
    return sorted(chosen, key=lambda s: (s.order, s.name))
