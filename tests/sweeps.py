"""The small MNIST-1D CNN that the sweep tests (ablate, tune, nas) train: a few seconds per cell."""

from __future__ import annotations

import sys

from dltricks.recipe import Recipe

CLI = [sys.executable, "-m", "dltricks.cli"]


def overrides(epochs: int = 1) -> list[str]:
    return ["data.num_samples=1200", f"train.epochs={epochs}", "model.channels=[8, 16]", "train.schedule=constant"]


def as_cli(keys: list[str]) -> list[str]:
    """``-o KEY=VALUE`` arguments for each override."""
    return [a for o in keys for a in ("-o", o)]


def small_recipe(*more: str, epochs: int = 1) -> Recipe:
    return Recipe.load("mnist1d-cnn", [*overrides(epochs), *more])
