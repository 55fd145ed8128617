"""The hook through which a run's final metrics gain its uncertainty and calibration metrics.

:mod:`dltricks.methods.uncertainty` turns the recipe's ``eval`` keys (MC dropout, an ensemble,
temperature scaling, last-layer Laplace, a GP head) into a predictive distribution and scores it; it
registers that function here when it imports, and :func:`uncertainty_metrics` imports it by name (as
:func:`dltricks.loop.method.method_for` does), so the runner reaches it without an upward import.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["register_uncertainty", "uncertainty_metrics", "check_uncertainty", "uncertainty_names"]

_EVALUATOR: list[Callable[..., Any]] = []  # [evaluate, check]


def register_uncertainty(fn: Callable[..., dict[str, float]], check: Callable[..., None],
                         names: Callable[..., list[str]]) -> None:
    """``fn`` scores a trained model; ``check(recipe, bundle, model, task)`` refuses, before training, a
    recipe whose uncertainty keys cannot work (no dropout for MC dropout, no validation split for
    temperature scaling, ...); ``names(recipe, bundle, task)`` lists the metrics ``fn`` will record."""
    _EVALUATOR[:] = [fn, check, names]


def _load() -> None:
    if not _EVALUATOR:
        importlib.import_module("dltricks.methods.uncertainty")  # registers; a name, not an upward import


def check_uncertainty(recipe: Any, bundle: Any, model: torch.nn.Module, task: Any) -> None:
    """Raise :class:`~dltricks.errors.DltricksError` now, not after training, for unusable keys."""
    _load()
    _EVALUATOR[1](recipe, bundle, model, task)


def uncertainty_metrics(recipe: Any, bundle: Any, model: torch.nn.Module, task: Any, device: torch.device,
                        run_dir: Path | None = None, ledger: Any = None, progress: bool = False) -> dict[str, float]:
    """Metrics of the recipe's predictive distribution (``test_nll``, ``test_ece``, ...); they replace the
    plain model's where both exist, so ``test_ece`` is that of the temperature-scaled model, say."""
    _load()
    return _EVALUATOR[0](recipe, bundle, model, task, device, run_dir=run_dir, ledger=ledger, progress=progress)


def uncertainty_names(recipe: Any, bundle: Any, task: Any) -> list[str]:
    """The metric names :func:`uncertainty_metrics` records for this recipe (for sweeps to check against)."""
    _load()
    return _EVALUATOR[2](recipe, bundle, task)
